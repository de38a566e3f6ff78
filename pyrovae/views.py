"""Pictures of a finished (or interrupted) run, from its directory alone; each returns what it wrote."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pyro

from . import io, plots
from .data import Dataset, fixed_representation, load_dataset
from .errors import UserError
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
        data = load_dataset(
            config.dataset, data_dir if data_dir is not None else config.data_dir, config.test_fraction
        )
    return vae, config, data


# The most images one picture holds (a 64 x 64 grid): more would not be seen, and could exhaust memory.
MAX_PICTURE_IMAGES = 4096


def _check_picture(images: int, what: str) -> None:
    if images > MAX_PICTURE_IMAGES:
        raise UserError(
            f"{what} would put {images:,} images in one picture; the most is {MAX_PICTURE_IMAGES:,}"
        )


def _target(run_dir: str | Path, out: str | Path | None, name: str) -> Path:
    """Where a picture goes: ``out``, else ``RUN_DIR/name``. Every picture is a PNG: a name that says
    otherwise (``.jpg``, ``.pdf``, none) is refused, not written in another format than it claims."""
    if out is None:
        return Path(run_dir) / name
    if Path(out).suffix.lower() != ".png":
        raise UserError(f"--out {out}: pictures are written as PNG; give a name that ends in .png")
    return Path(out)


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
    _check_picture(2 * num_samples, f"-n {num_samples}")
    path = _target(run_dir, out, "samples.png")
    vae, _, _ = _open(run_dir, device, need_data=False, checkpoint=checkpoint)
    pyro.set_rng_seed(seed)
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
    _check_picture(2 * num_images, f"-n {num_images}")
    path = _target(run_dir, out, "reconstructions.png")
    vae, _, data = _open(run_dir, device, data_dir, checkpoint=checkpoint)
    if num_images > len(data.x_test):
        raise UserError(f"-n {num_images} is more than the {len(data.x_test)} test images")
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
    """``latent.png`` (posterior means by class), and for a 2-D latent ``manifold.png`` (beside
    ``out``, when given, as ``OUT-manifold.png``: never over a file of another name)."""
    path = _target(run_dir, out, "latent.png")
    manifold_path = path.with_name("manifold.png" if out is None else f"{path.stem}-manifold.png")
    vae, config, data = _open(run_dir, device, data_dir, checkpoint=checkpoint)
    plots.save_latent(vae, _x_test(vae, data), data.y_test, config.dataset, path, data.classes)
    written = [path]
    if vae.config.z_dim == 2:
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
    _check_picture(pairs * (steps + 2), f"--pairs {pairs} --steps {steps}")
    path = _target(run_dir, out, "interpolations.png")
    vae, _, data = _open(run_dir, device, data_dir, checkpoint=checkpoint)
    if len(data.x_test) < 2 * pairs:
        raise UserError(f"--pairs {pairs} needs {2 * pairs} test images; the test set has {len(data.x_test)}")
    x = _x_test(vae, data)
    plots.save_interpolations(vae, x, path, pairs, steps)
    return [path]


def curves(
    run_dirs: str | Path | Sequence[str | Path], out: str | Path | None = None, column: str | None = None
) -> list[Path]:
    """``elbo.png``: the ELBO curves from ``metrics.csv`` alone (no checkpoint, no data), so a run still
    training can be looked at between its epochs. Of several runs, one column of each on one picture
    (``out``): ``column`` ``valid`` (where every run held out a validation split; else ``test``),
    ``test`` or ``train``."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if len(run_dirs) == 1 and column is not None:
        raise UserError("--column compares several runs; one run's picture draws all its curves")
    if len({Path(run_dir).resolve() for run_dir in run_dirs}) < len(run_dirs):
        raise UserError("a run is given twice")
    names = [Path(run_dir).resolve().name for run_dir in run_dirs]
    if len(set(names)) < len(names):  # a legend of folder names would not tell them apart: their paths
        names = [str(run_dir) for run_dir in run_dirs]
    runs = {name: _metrics(Path(run_dir)) for name, run_dir in zip(names, run_dirs, strict=True)}
    if len(runs) == 1:
        target = _target(run_dirs[0], out, "elbo.png")
        plots.save_elbo_curves(next(iter(runs.values())), target)
        return [target]
    if out is None:
        raise UserError("the curves of several runs go to one picture: give --out FILE")
    target = _target(run_dirs[0], out, "elbo.png")
    if len(runs) > len(plots.RUN_COLOURS):
        raise UserError(f"at most {len(plots.RUN_COLOURS)} runs are drawn on one picture, got {len(runs)}")
    unsplit = [name for name, rows in runs.items() if any(row.get("valid_elbo") is None for row in rows)]
    column = column or ("test" if unsplit else "valid")
    if column == "valid" and unsplit:
        raise UserError(f"{unsplit[0]} held out no validation split: compare --column test or train")
    plots.save_compared_curves(runs, f"{column}_elbo", target)
    return [target]


def _metrics(run_dir: Path) -> list[dict[str, float]]:
    """A run's ``metrics.csv``, each row as ``fit`` writes it, or one line that says what is wrong."""
    path = run_dir / io.METRICS
    try:
        metrics = io.read_metrics(run_dir)
    except FileNotFoundError:
        raise UserError(f"{run_dir} has no {io.METRICS}: no epoch has ended there") from None
    except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:  # TypeError: a row's cells miscounted
        raise UserError(f"cannot read {path}: {e}") from None
    if not metrics:
        raise UserError(f"{path} holds no epoch yet")
    for row in metrics:
        values = [row.get("epoch"), row.get("train_elbo"), row.get("test_elbo"), row.get("valid_elbo") or 0.0]
        numbers = all(isinstance(v, float) and abs(v) < 1e15 for v in values)  # finite, and far from overflow
        if not numbers or values[0] != int(values[0]):
            raise UserError(f"{path} has a row that fit does not write: {row}")
    return metrics
