"""Pictures of a run, drawn with matplotlib's object API (no pyplot state, no display needed)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from matplotlib.figure import Figure

from .io import atomic_write
from .model import VAE


def image_grid(images: torch.Tensor, image_shape: tuple[int, ...], ncols: int) -> torch.Tensor:
    """Tile (N, D) images in [0, 1] into one (rows * H, ncols * W) picture, one pixel apart."""
    h, w = image_shape
    n = len(images)
    nrows = math.ceil(n / ncols)
    grid = torch.ones(nrows * (h + 1) - 1, ncols * (w + 1) - 1)
    for i, img in enumerate(images.detach().float().cpu().reshape(n, h, w)):
        r, c = divmod(i, ncols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return grid


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def _show_grid(fig: Figure, grid: torch.Tensor, title: str) -> None:
    ax = fig.add_subplot()
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def save_samples(vae: VAE, path: Path, num_samples: int = 64) -> None:
    """The pixel means ``E[x | z]`` at ``z ~ p(z)``."""
    images = vae.sample(num_samples)
    fig = Figure(figsize=(6, 6))
    _show_grid(fig, image_grid(images, vae.config.image_shape, 8), "E[x | z],  z ~ p(z)")
    _save(fig, path)


def save_reconstructions(vae: VAE, x: torch.Tensor, path: Path, rows: int = 3, cols: int = 12) -> None:
    """Rows of test images, each followed by a row of their pixel means at the posterior mean."""
    x = x[: rows * cols]
    rows = math.ceil(len(x) / cols)
    padded = torch.ones(rows * cols, x.shape[-1], device=x.device)
    images = torch.stack(
        [padded.index_copy(0, torch.arange(len(x), device=x.device), t) for t in (x, vae.reconstruct(x))]
    )  # (2, rows * cols, D)
    images = images.reshape(2, rows, cols, -1).transpose(0, 1).flatten(0, 2)  # input row, its recons
    fig = Figure(figsize=(cols * 0.6, rows * 1.25))
    grid = image_grid(images, vae.config.image_shape, cols)
    _show_grid(fig, grid, "test images (odd rows) and E[x | z = E_q[z | x]] (even rows)")
    _save(fig, path)


def save_elbo_curves(metrics: list[dict[str, float]], path: Path) -> None:
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = [m["epoch"] for m in metrics]
    ax.plot(epochs, [m["train_elbo"] for m in metrics], "o-", label="train")
    ax.plot(epochs, [m["test_elbo"] for m in metrics], "s-", label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO (nats per image)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def draw_run(vae: VAE, x_test: torch.Tensor, metrics: list[dict[str, float]], run_dir: Path) -> None:
    """``samples.png``, ``reconstructions.png`` and ``elbo.png`` of a finished run."""
    save_samples(vae, run_dir / "samples.png")
    save_reconstructions(vae, x_test, run_dir / "reconstructions.png")
    save_elbo_curves(metrics, run_dir / "elbo.png")
