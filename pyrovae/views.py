"""Pictures of a finished (or interrupted) run, from its directory alone; each returns what it wrote."""

from __future__ import annotations

from pathlib import Path

import pyro

from . import plots
from .data import Dataset, fixed_representation, load_dataset
from .model import VAE
from .runs import load_run
from .train import resolve_device


def _open(
    run_dir: str | Path,
    device: str,
    data_dir: str | None = None,
    need_data: bool = True,
    checkpoint: str = "best",
):
    vae, config, _ = load_run(run_dir, resolve_device(device), checkpoint)
    data: Dataset | None = None
    if need_data:
        data = load_dataset(config.dataset, data_dir if data_dir is not None else config.data_dir)
    return vae, config, data


def _target(run_dir: str | Path, out: str | Path | None, name: str) -> Path:
    return Path(out) if out is not None else Path(run_dir) / name


def _x_test(vae: VAE, data: Dataset):
    return fixed_representation(data.x_test, vae.model.p_x.data).to(next(vae.parameters()).device)


def sample(
    run_dir: str | Path,
    num_samples: int = 64,
    out: str | Path | None = None,
    seed: int = 0,
    device: str = "cpu",
    checkpoint: str = "best",
) -> list[Path]:
    """``samples.png``: prior draws decoded, the likelihood's mean beside a draw from it."""
    vae, _, _ = _open(run_dir, device, need_data=False, checkpoint=checkpoint)
    pyro.set_rng_seed(seed)
    path = _target(run_dir, out, "samples.png")
    plots.save_samples(vae, path, num_samples)
    return [path]


def reconstruct(
    run_dir: str | Path,
    num_images: int = 36,
    out: str | Path | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    checkpoint: str = "best",
) -> list[Path]:
    """``reconstructions.png``: test images over their reconstructions."""
    vae, _, data = _open(run_dir, device, data_dir, checkpoint=checkpoint)
    path = _target(run_dir, out, "reconstructions.png")
    cols = 12
    plots.save_reconstructions(vae, _x_test(vae, data), path, rows=-(-num_images // cols), cols=cols)
    return [path]


def latent(
    run_dir: str | Path,
    out: str | Path | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    checkpoint: str = "best",
) -> list[Path]:
    """``latent.png`` (posterior means by class), and for a 2-D latent ``manifold.png``."""
    vae, config, data = _open(run_dir, device, data_dir, checkpoint=checkpoint)
    path = _target(run_dir, out, "latent.png")
    plots.save_latent(vae, _x_test(vae, data), data.y_test, config.dataset, path)
    written = [path]
    if vae.config.z_dim == 2:
        manifold_path = path.with_name("manifold.png")
        plots.save_manifold(vae, manifold_path)
        written.append(manifold_path)
    return written


def interpolate(
    run_dir: str | Path,
    pairs: int = 6,
    steps: int = 10,
    out: str | Path | None = None,
    device: str = "cpu",
    data_dir: str | None = None,
    checkpoint: str = "best",
) -> list[Path]:
    """``interpolations.png``: decodings along lines between the latents of pairs of test images."""
    vae, _, data = _open(run_dir, device, data_dir, checkpoint=checkpoint)
    x = _x_test(vae, data)
    if len(x) < 2 * pairs:
        raise ValueError(f"{pairs} pairs need {2 * pairs} test images; the test set has {len(x)}")
    path = _target(run_dir, out, "interpolations.png")
    plots.save_interpolations(vae, x, path, pairs, steps)
    return [path]
