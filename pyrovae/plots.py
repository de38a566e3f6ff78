"""Pictures of a run, drawn with matplotlib's object API (no pyplot state, no display needed).

matplotlib is imported when the first picture is drawn, not with this module: the commands that draw
nothing (evaluate, compare) start 0.4 s sooner (``python -X importtime -c "import cli"``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .data import CIFAR10_CLASSES
from .io import atomic_write
from .model import VAE

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def image_grid(images: torch.Tensor, image_shape: tuple[int, ...], ncols: int) -> torch.Tensor:
    """Tile (N, D) images in [0, 1] into one picture, one white pixel apart: (rows * H, ncols * W) for
    grey images, (rows * H, ncols * W, C) for colour ones (``image_shape`` (C, H, W), RGB for C = 3)."""
    c, h, w = (1, *image_shape) if len(image_shape) == 2 else image_shape
    n = len(images)
    nrows = math.ceil(n / ncols)
    grid = torch.ones(nrows * (h + 1) - 1, ncols * (w + 1) - 1, c)
    tiles = images.detach().float().cpu().reshape(n, c, h, w).permute(0, 2, 3, 1)  # (N, H, W, C)
    for i, img in enumerate(tiles):
        r, col = divmod(i, ncols)
        grid[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = img
    return grid[..., 0] if len(image_shape) == 2 else grid


def _figure(figsize: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _save(fig: Figure, path: Path) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))


def _draw_grid(ax, grid: torch.Tensor, title: str) -> None:
    # Grey grids through the grey colour map; colour ones as they are (RGB, clipped to [0, 1]).
    ax.imshow(grid.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def _show_grid(fig: Figure, grid: torch.Tensor, title: str) -> None:
    _draw_grid(fig.add_subplot(), grid, title)


def save_samples(vae: VAE, path: Path, num_samples: int = 64) -> None:
    """For the same draws ``z ~ p(z)``: the pixel means ``E[x | z]``, and a draw ``x ~ p(x | z)``."""
    z = vae.model.prior().sample((num_samples,))
    with torch.no_grad():
        likelihood = vae.model.decode(z)
        mean, draw = likelihood.mean, likelihood.sample()
    ncols = math.ceil(math.sqrt(num_samples))
    fig = _figure((11, 5.8))
    for i, (images, title) in enumerate(((mean, "E[x | z],  z ~ p(z)"), (draw, "x ~ p(x | z), same z"))):
        ax = fig.add_subplot(1, 2, i + 1)
        _draw_grid(ax, image_grid(images, vae.config.image_shape, ncols), title)
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
    fig = _figure((cols * 0.6, rows * 1.25))
    grid = image_grid(images, vae.config.image_shape, cols)
    _show_grid(fig, grid, "test images (odd rows) and E[x | z = E_q[z | x]] (even rows)")
    _save(fig, path)


def save_elbo_curves(metrics: list[dict[str, float]], path: Path) -> None:
    fig = _figure((6, 4))
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


CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "cifar10": list(CIFAR10_CLASSES),
    "fashionmnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


@torch.no_grad()
def latent_coordinates(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, str]:
    """Posterior means ``E_q[z | x]`` in two dimensions: themselves for a 2-D latent, else their first
    two principal components (torch's SVD). Returns (N, 2) and a word for the axes."""
    z = torch.cat([vae.guide.location(rows) for rows in x.split(batch_size)])  # (N, z_dim)
    if z.shape[1] == 2:
        return z, "z"
    centred = z - z.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    return centred @ v[:2].T, "principal component"


def save_latent(
    vae: VAE,
    x: torch.Tensor,
    labels: torch.Tensor,
    dataset: str,
    path: Path,
    classes: tuple[str, ...] = (),
) -> None:
    """The test set's posterior means, coloured by class (named by ``classes``, else by the data set)."""
    coords, axis = latent_coordinates(vae, x)
    coords, labels = coords.cpu(), labels.cpu()
    names = list(classes) or CLASS_NAMES.get(dataset, [str(c) for c in range(int(labels.max()) + 1)])
    fig = _figure((7.5, 6))
    ax = fig.add_subplot()
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for c in labels.unique().tolist():
        points = coords[labels == c]
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color=cmap(c % 10), label=names[c])
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_title(f"E_q[z | x] of {len(x)} test images" + ("" if axis == "z" else " (PCA)"))
    ax.legend(markerscale=5, fontsize=8, loc="best")
    _save(fig, path)


@torch.no_grad()
def manifold(vae: VAE, steps: int = 20, num_prior_draws: int = 100_000) -> torch.Tensor:
    """Pixel means decoded on a ``steps`` x ``steps`` grid over the 2-D prior's quantiles, 5% to 95%,
    per dimension (taken from prior draws, so any prior will do): (steps * steps, D), row-major,
    the second latent dimension decreasing down the rows."""
    if vae.config.z_dim != 2:
        raise ValueError(f"the manifold needs a 2-D latent; this model has z_dim = {vae.config.z_dim}")
    draws = vae.model.prior().sample((num_prior_draws,))  # (M, 2)
    q = torch.linspace(0.05, 0.95, steps, device=draws.device)
    z1, z2 = torch.quantile(draws[:, 0], q), torch.quantile(draws[:, 1], q).flip(0)
    z = torch.stack(torch.meshgrid(z2, z1, indexing="ij")[::-1], dim=-1).reshape(-1, 2)
    return vae.model.decode(z).mean


def save_manifold(vae: VAE, path: Path, steps: int = 20) -> None:
    fig = _figure((8, 8))
    grid = image_grid(manifold(vae, steps), vae.config.image_shape, steps)
    _show_grid(fig, grid, "E[x | z] over the prior's 5%-95% quantiles of z")
    _save(fig, path)


@torch.no_grad()
def interpolation(vae: VAE, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Pixel means decoded along the line from ``E_q[z | x_a]`` to ``E_q[z | x_b]``: (steps, D)."""
    z_a, z_b = vae.guide.location(x_a[None])[0], vae.guide.location(x_b[None])[0]
    t = torch.linspace(0, 1, steps, device=z_a.device)[:, None]
    return vae.model.decode((1 - t) * z_a + t * z_b).mean


def save_interpolations(vae: VAE, x: torch.Tensor, path: Path, pairs: int = 6, steps: int = 10) -> None:
    """Rows of interpolations between consecutive test images, each row framed by its two inputs."""
    rows = []
    for i in range(pairs):
        x_a, x_b = x[2 * i], x[2 * i + 1]
        rows.append(torch.cat([x_a[None], interpolation(vae, x_a, x_b, steps), x_b[None]]))
    fig = _figure((steps * 0.7, pairs * 0.8))
    grid = image_grid(torch.cat(rows), vae.config.image_shape, steps + 2)
    _show_grid(fig, grid, "test image | E[x | z] along z_a -> z_b | test image")
    _save(fig, path)
