"""Fitting a VAE by stochastic variational inference, and the run directory it leaves behind."""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled as pyro_validation_enabled
from torch import nn
from tqdm.auto import tqdm

from . import io, loggers, plots
from .config import TrainConfig
from .data import Dataset, fixed_representation, load_dataset
from .errors import UserError
from .likelihoods import binarize
from .model import VAE
from .priors import has_closed_form_kl

# TraceMeanField_ELBO uses the analytic KL(q || p) where Pyro knows it, a lower-variance estimate of
# the same bound; Trace_ELBO estimates log p(x, z) - log q(z | x) at a draw of z.
ELBO_ESTIMATORS = {"trace": Trace_ELBO, "meanfield": TraceMeanField_ELBO}


class Diverged(UserError):
    """The ELBO became NaN or infinite; the run directory keeps the last good checkpoint."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; ``cuda`` without CUDA is a :class:`UserError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available on this machine")
    return torch.device(name)


def check_estimator(config: TrainConfig) -> None:
    """``--elbo meanfield`` needs ``KL(q(z|x) || p(z))`` in closed form; refuse priors without one."""
    if config.elbo != "meanfield":
        return
    vae = VAE(config.model)
    posterior = vae.guide.posterior(torch.zeros(1, config.model.x_dim))
    if not has_closed_form_kl(vae.model.prior(), posterior):
        raise UserError(
            f"--elbo meanfield needs KL(q(z|x) || p(z)) in closed form, and the {config.model.prior} prior "
            "has none; use --elbo trace"
        )


def elbo_loss(vae: VAE, estimator: str = "trace") -> nn.Module:
    """``x -> -ELBO(x)``, summed over the rows of ``x``, as a differentiable ``nn.Module``.

    This is Pyro's own ``ELBO(...)(model, guide)`` (see Pyro's ``examples/svi_torch.py``): the same
    estimator and gradients as ``pyro.infer.SVI``, its parameters those of the model and guide, so a
    plain torch optimizer steps them.
    """
    return ELBO_ESTIMATORS[estimator]()(vae.model, vae.guide)


def train_epoch(
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    batch_size: int,
    progress: Callable[[int], object] | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] = binarize,
) -> torch.Tensor:
    """One pass over ``x`` (uint8 grey levels, (N, D)) in a random order; returns the mean ELBO.

    Each batch is an index slice of ``x``, drawn afresh in the likelihood's representation by
    ``prepare`` (binarized, by default). The ELBO is accumulated on the device,
    so no step waits for the host. Pyro's validation (when on) checks the first step of the epoch;
    the others repeat the same checks on the same shapes and are spared them: a NaN that appears
    later still makes the epoch's ELBO NaN.
    """
    validate = pyro_validation_enabled()
    total = torch.zeros((), device=x.device)
    for step, idx in enumerate(torch.randperm(len(x), device=x.device).split(batch_size)):
        with pyro.validation_enabled(validate and step == 0):
            loss = loss_fn(prepare(x[idx]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
        if progress is not None:
            progress(len(idx))
    return -total / len(x)


def adam(params, lr: float) -> torch.optim.Adam:
    """Adam, fused into one kernel where torch has it for the parameters' device (the same update)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr)


@torch.no_grad()
def evaluate_elbo(loss_fn: nn.Module, x: torch.Tensor, batch_size: int) -> float:
    """The mean ELBO, in nats per image, of binary images ``x`` (N, D)."""
    total = sum(loss_fn(batch) for batch in x.split(batch_size))
    return -float(total) / len(x)


def default_run_dir(dataset: str) -> Path:
    return Path("runs") / f"{dataset}-{datetime.now():%Y%m%d-%H%M%S}"


def _create_run_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"output folder {path} already exists and is not empty; choose another --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output folder {path}: {e.strerror or e}") from None


def fit(config: TrainConfig, data: Dataset | None = None, log: Callable[[str], None] = print) -> Path:
    """Train a VAE as ``config`` says and write its run directory; returns the directory.

    Everything that can be checked (device, data, output folder) is checked before the directory is
    made, so bad input leaves nothing behind.
    """
    device = resolve_device(config.device)
    loggers.check_available(config)
    check_estimator(config)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, image_shape=data.image_shape)
    )
    run_dir = Path(config.out) if config.out is not None else default_run_dir(config.dataset)
    config = dataclasses.replace(config, out=str(run_dir))
    _create_run_dir(run_dir)
    try:
        _train(config, data.to(device), run_dir, log)
    except BaseException:
        if not (run_dir / io.CHECKPOINT).exists():  # stopped before its first epoch ended: leave nothing
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


# What may differ when a run is resumed: where it runs and reads, and how long it goes on.
RESUMABLE_CHANGES = ("epochs", "device", "data_dir", "tensorboard")


def resume(
    run_dir: str | Path,
    changes: dict[str, Any] | None = None,
    data: Dataset | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint, as if it had never stopped.

    ``changes`` are options given again (``TrainConfig`` fields, and ``model`` fields by name); those
    of :data:`RESUMABLE_CHANGES` may differ from the run's config, any other that differs is refused.
    """
    run_dir = Path(run_dir)
    if not (run_dir / io.CHECKPOINT).exists() and (run_dir / io.CONFIG).exists():
        raise UserError(f"{run_dir} has no checkpoint: it stopped before its first epoch ended; fit it anew")
    config, payload = io.load_checkpoint(run_dir / io.CHECKPOINT)
    config = _apply_changes(config, changes or {}, payload["epoch"], run_dir)
    device = resolve_device(config.device)
    loggers.check_available(config)
    if data is None:
        data = load_dataset(config.dataset, config.data_dir)
    _train(config, data.to(device), run_dir, log, payload)
    return run_dir


def _apply_changes(config: TrainConfig, changes: dict[str, Any], done: int, run_dir: Path) -> TrainConfig:
    model_fields = {f.name for f in dataclasses.fields(config.model)}
    contradictions = []
    for name, value in changes.items():
        current = getattr(config.model if name in model_fields else config, name)
        if name == "out":
            value, current = Path(value).resolve(), run_dir.resolve()
        if name in RESUMABLE_CHANGES or value == current:
            continue
        contradictions.append(f"--{name.replace('_', '-')} {value} (the run has {current})")
    if contradictions:
        raise UserError(
            f"{run_dir} cannot be resumed with {', '.join(contradictions)}; only "
            f"{', '.join('--' + c.replace('_', '-') for c in RESUMABLE_CHANGES)} may change"
        )
    resumable = {k: v for k, v in changes.items() if k in RESUMABLE_CHANGES}
    if resumable.get("epochs", config.epochs) < done:
        raise UserError(
            f"{run_dir} has already trained {done} epochs; --epochs {resumable['epochs']} is fewer"
        )
    return dataclasses.replace(config, **resumable)


def _train(
    config: TrainConfig,
    data: Dataset,
    run_dir: Path,
    log: Callable[[str], None],
    checkpoint: dict[str, Any] | None = None,
) -> None:
    device = data.x_train.device
    io.write_config(run_dir, config)
    pyro.set_rng_seed(config.seed)
    vae = VAE(config.model).to(device)
    loss_fn = elbo_loss(vae, config.elbo)
    optimizer = adam(loss_fn.parameters(), config.lr)
    x_test = fixed_representation(data.x_test, vae.model.p_x.data)
    metrics: list[dict[str, float]] = []
    if checkpoint is not None:
        vae.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        metrics = checkpoint["metrics"]
        _set_rng_state(checkpoint["rng"], device)
        io.write_metrics(run_dir, metrics)  # the checkpoint's rows, should the run have died between the two
    first = len(metrics) + 1
    log(
        f"{'resuming' if checkpoint else 'fitting'} {config.dataset} ({len(data.x_train)} train, "
        f"{len(data.x_test)} test images) on {device}, "
        + (f"from epoch {first}, " if checkpoint else "")
        + f"into {run_dir}"
    )

    board = loggers.TensorBoard(run_dir) if config.tensorboard else None
    for epoch in range(first, config.epochs + 1):
        start = time.perf_counter()
        with tqdm(
            total=len(data.x_train),
            desc=f"epoch {epoch}",
            unit="img",
            leave=False,
            file=sys.stderr,
            disable=None,
        ) as bar:
            train_elbo = _unless_diverged(
                vae,
                lambda: train_epoch(
                    loss_fn, optimizer, data.x_train, config.batch_size, bar.update, vae.model.p_x.data
                ),
            )
        seconds = time.perf_counter() - start
        test_elbo = _unless_diverged(vae, lambda: evaluate_elbo(loss_fn, x_test, config.eval_batch_size))
        if not (math.isfinite(train_elbo) and math.isfinite(test_elbo)):
            if epoch == 1:
                kept = "no epoch finished, so nothing is kept"
            else:
                kept = f"the checkpoint of epoch {epoch - 1} is kept in {run_dir}"
            raise Diverged(f"training diverged in epoch {epoch}: the ELBO is not finite; {kept}")
        row = {"epoch": epoch, "train_elbo": train_elbo, "test_elbo": test_elbo, "seconds": seconds}
        metrics.append(row)
        io.save_checkpoint(
            run_dir / io.CHECKPOINT,
            config,
            {
                "epoch": epoch,
                "model": vae.state_dict(),
                "optimizer": optimizer.state_dict(),
                "metrics": metrics,
                "rng": _rng_state(device),
            },
        )
        io.write_metrics(run_dir, metrics)
        if board is not None:
            board.epoch(row)
        log(
            f"epoch {epoch:3d}/{config.epochs}  train ELBO {train_elbo:9.3f}  "
            f"test ELBO {test_elbo:9.3f}  ({seconds:.1f} s)"
        )
    plots.draw_run(vae, x_test, metrics, run_dir)
    if board is not None:
        board.images(vae, x_test, len(metrics))
        board.close()


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The random state that training draws from (torch's; Python's and NumPy's are never used)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _unless_diverged(vae: VAE, step: Callable[[], torch.Tensor | float]) -> float:
    """``float(step())``, or NaN where Pyro's validation rejects a distribution made of NaN weights."""
    try:
        return float(step())
    except ValueError:
        if all(p.isfinite().all() for p in vae.parameters()):
            raise
        return math.nan


def load_run(run_dir: str | Path, device: str = "cpu") -> tuple[VAE, TrainConfig, dict]:
    """The VAE of a run directory, rebuilt from its checkpoint alone, in eval mode on ``device``."""
    config, payload = io.load_checkpoint(Path(run_dir) / io.CHECKPOINT, map_location=device)
    vae = VAE(config.model)
    try:
        vae.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{run_dir}: the checkpoint's weights do not fit its config ({e})") from None
    return vae.to(device).eval(), config, payload
