"""The run directory: made only once everything that can fail has been built, a checkpoint after every
epoch (the last, and the best on the validation split), the options a resumed run may change, and the
VAE rebuilt from a checkpoint alone."""

from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from . import io
from .config import CHECKPOINTS, TrainConfig
from .errors import UserError
from .model import VAE


def default_run_dir(dataset: str) -> Path:
    """``runs/<name>-<timestamp>``, the name a data set's own or its folder's or file's."""
    return Path("runs") / f"{Path(dataset).stem or 'data'}-{datetime.now():%Y%m%d-%H%M%S}"


def check_run_dir(path: Path) -> None:
    """Refuse an output folder that holds anything already."""
    if path.exists() and not path.is_dir():
        raise UserError(f"output folder {path} already exists and is not a folder; choose another --out")
    if path.exists() and any(path.iterdir()):
        raise UserError(f"output folder {path} already exists and is not empty; choose another --out")


def create_run_dir(path: Path) -> None:
    check_run_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {path}: {e.strerror or e}") from None


def best_epoch(metrics: list[dict[str, float]]) -> int | None:
    """The epoch of the highest validation ELBO (the first, among equals); None without a split."""
    scored = [m for m in metrics if m.get("valid_elbo") is not None and math.isfinite(m["valid_elbo"])]
    if not scored:
        return None
    return int(max(scored, key=lambda m: (m["valid_elbo"], -m["epoch"]))["epoch"])


def epochs_without_improvement(config: TrainConfig, metrics: list[dict[str, float]]) -> int | None:
    """The epochs past the best validation ELBO (and past the warm-up) that early stopping counts;
    None without a split. Negative during the warm-up."""
    best = best_epoch(metrics)
    return None if best is None else len(metrics) - max(best, config.warmup)


def stopped_early(config: TrainConfig, metrics: list[dict[str, float]]) -> bool:
    """Whether ``early_stopping`` epochs past the warm-up have gone by without a better validation ELBO."""
    waited = epochs_without_improvement(config, metrics)
    return config.early_stopping is not None and waited is not None and waited >= config.early_stopping


def save_epoch(run_dir: Path, config: TrainConfig, state: dict[str, Any]) -> None:
    """The checkpoint of the epoch just ended, and a copy as the best one when it is: without the
    optimizer's state (a resume starts from the last checkpoint), a third of the size for Adam."""
    io.save_checkpoint(run_dir / io.CHECKPOINT, config, state)
    if best_epoch(state["metrics"]) == state["epoch"]:
        best = {key: value for key, value in state.items() if key != "optimizer"}
        io.save_checkpoint(run_dir / io.BEST_CHECKPOINT, config, best)


# Config fields whose command-line option has another name.
OPTION_NAMES = {"family": "model", "loggers": "logger"}

# What may differ when a run is resumed: where it runs and reads, and how long it goes on.
RESUMABLE_CHANGES = ("epochs", "device", "data_dir", "loggers")


def apply_changes(config: TrainConfig, changes: dict[str, Any], done: int, run_dir: Path) -> TrainConfig:
    """``config`` with the options given again on resume; any that contradicts the run is refused."""
    model_fields = {f.name for f in dataclasses.fields(config.model)}
    contradictions = []
    for name, value in changes.items():
        current = getattr(config.model if name in model_fields else config, name)
        if name == "out":
            value, current = Path(value).resolve(), run_dir.resolve()
        if name in RESUMABLE_CHANGES or value == current:
            continue
        option = OPTION_NAMES.get(name, name.replace("_", "-"))
        contradictions.append(f"--{option} {value} (the run has {current})")
    if contradictions:
        may = ", ".join("--" + OPTION_NAMES.get(c, c.replace("_", "-")) for c in RESUMABLE_CHANGES)
        raise UserError(
            f"{run_dir} cannot be resumed with {', '.join(contradictions)}; only {may} may change"
        )
    resumable = {k: v for k, v in changes.items() if k in RESUMABLE_CHANGES}
    if resumable.get("epochs", config.epochs) < done:
        raise UserError(
            f"{run_dir} has already trained {done} epochs; --epochs {resumable['epochs']} is fewer"
        )
    return dataclasses.replace(config, **resumable)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", checkpoint: str = "best"
) -> tuple[VAE, TrainConfig, dict]:
    """The VAE of a run directory, rebuilt from a checkpoint alone, in eval mode on ``device``.

    ``checkpoint="best"`` is the epoch of the best validation ELBO where the run held out a validation
    split, else the last epoch; ``"last"`` is always the last.
    """
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
    run_dir = Path(run_dir)
    path = run_dir / io.CHECKPOINT
    if checkpoint == "best" and (run_dir / io.BEST_CHECKPOINT).exists():
        path = run_dir / io.BEST_CHECKPOINT
    config, payload = io.load_checkpoint(path, map_location=device)
    vae = VAE(config.model)
    weights = payload.get("model")
    misfit = _misfit(vae.state_dict(), weights) if isinstance(weights, dict) else "it holds no weights"
    if misfit:
        raise UserError(f"{run_dir}: the checkpoint's weights do not fit its config ({misfit})")
    try:
        vae.load_state_dict(weights)
    except RuntimeError as e:  # names and shapes fit: a value torch cannot copy
        first = str(e).strip().splitlines()[-1].strip()
        raise UserError(f"{run_dir}: the checkpoint's weights do not fit its config ({first})") from None
    return vae.to(device).eval(), config, payload


def _misfit(expected: dict[str, torch.Tensor], found: dict[str, Any]) -> str:
    """The first way ``found`` differs from ``expected`` in names and shapes, in one line ("" if none)."""
    problems = [f"{name} is missing" for name in expected if name not in found]
    problems += [f"{name} is not in the model" for name in found if name not in expected]
    problems += [
        f"{name} is {_shape(found[name])} in the checkpoint, {_shape(tensor)} in the model"
        for name, tensor in expected.items()
        if name in found and (not isinstance(found[name], torch.Tensor) or found[name].shape != tensor.shape)
    ]
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    return problems[0] + more if problems else ""


def _shape(value: Any) -> str:
    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}, not a tensor"
    return " x ".join(map(str, value.shape)) or "a scalar"
