"""Fitting a VAE by stochastic variational inference: the epoch loop.

The run directory it writes (checkpoints, resume, loading) is :mod:`pyrovae.runs`; the objectives are
:mod:`pyrovae.objectives`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer.util import is_validation_enabled as pyro_validation_enabled
from torch import nn
from tqdm.auto import tqdm

from . import distributed, io, loggers, memory, plots, runs
from .config import TrainConfig
from .data import Dataset, fixed_representation, hold_out, load_dataset
from .distributed import SINGLE, Group
from .errors import UserError
from .likelihoods import binarize
from .model import VAE
from .objectives import OBJECTIVES, KLWeight
from .optim import SCHEDULES, Adam, Optimizer, set_lr
from .runs import load_run


class Diverged(UserError):
    """The ELBO became NaN or infinite; the run directory keeps the last good checkpoint."""


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; ``cuda`` without CUDA is a :class:`UserError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but CUDA is not available on this machine")
    return torch.device(name)


def elbo_loss(vae: VAE, estimator: str = "trace", num_particles: int = 1) -> nn.Module:
    """``x -> -bound(x)``, summed over the rows of ``x``, as a differentiable ``nn.Module``.

    This is Pyro's own ``ELBO(...)(model, guide)`` (see Pyro's ``examples/svi_torch.py``): the same
    estimator and gradients as ``pyro.infer.SVI``, its parameters those of the model and guide, so a
    plain torch optimizer steps them. ``estimator`` names one of :data:`pyrovae.objectives.OBJECTIVES`.
    """
    elbo = OBJECTIVES[estimator](
        num_particles=num_particles,
        max_plate_nesting=vae.model.max_plate_nesting,
        vectorize_particles=True,
    )
    return elbo(vae.model, vae.guide)


def kl_weights(config: TrainConfig, epoch: int, steps_per_epoch: int) -> list[float]:
    """The weight of ``log p(z) - log q(z|x)`` at each step of ``epoch`` (1-based): ``beta`` times the
    fraction of the warm-up's steps done before it, ``min(1, t / (warmup * steps_per_epoch))``."""
    if config.warmup == 0:
        return [config.beta] * steps_per_epoch
    total = config.warmup * steps_per_epoch
    first = (epoch - 1) * steps_per_epoch
    return [config.beta * min(1.0, (first + s) / total) for s in range(steps_per_epoch)]


def train_epoch(
    loss_fn: nn.Module,
    optimizer: Optimizer,
    x: torch.Tensor,
    batch_size: int,
    progress: Callable[[int], object] | None = None,
    prepare: Callable[[torch.Tensor], torch.Tensor] = binarize,
    weights: Sequence[float] | None = None,
    group: Group = SINGLE,
) -> torch.Tensor:
    """One pass over ``x`` (uint8 grey levels, (N, D)) in a random order; returns the mean bound.

    Each batch is an index slice of ``x``, drawn afresh in the likelihood's representation by
    ``prepare`` (binarized, by default). ``weights[step]`` weights the latent terms' gradient
    (:class:`~pyrovae.objectives.KLWeight`); the value summed is always the unweighted bound. The sum
    is accumulated on the device, so no step waits for the host. Pyro's validation (when on) checks
    the first step of the epoch; the others repeat the same checks on the same shapes and are spared
    them: a NaN that appears later still makes the epoch's bound NaN.

    Under torchrun (``group``, ``loss_fn`` wrapped in ``DistributedDataParallel``) every rank walks
    rank 0's order, takes its share of each global batch and multiplies its loss by the number of
    ranks (see :mod:`pyrovae.distributed`); a last batch with fewer images than ranks is left out.
    """
    validate = pyro_validation_enabled()
    kl_weight = KLWeight()
    total = torch.zeros((), device=x.device)
    # Rank 0 draws the order (from the single process's stream) and the others receive it.
    order = (
        torch.randperm(len(x), device=x.device)
        if group.is_main
        else torch.empty_like(x[:, 0], dtype=torch.long)
    )
    order = distributed.broadcast(group, order)
    seen = 0
    # Validation, where on, checks the first step alone: the rest run with it off, set once here.
    with pyro.validation_enabled(False):
        for step, idx in enumerate(order.split(batch_size)):
            if len(idx) < group.world_size:  # a rank would have no image (only ever the last batch)
                break
            idx = group.share(idx)
            kl_weight.weight = 1.0 if weights is None else weights[step]
            weighted = kl_weight if kl_weight.weight != 1 else contextlib.nullcontext()
            checked = pyro.validation_enabled(validate) if step == 0 else contextlib.nullcontext()
            with checked, weighted:
                loss = loss_fn(prepare(x.index_select(0, idx)))  # faster than x[idx]: levers.py (0)
            optimizer.zero_grad(set_to_none=True)
            (loss * group.world_size if group.active else loss).backward()
            optimizer.step()
            total += loss.detach()
            seen += len(idx)
            if progress is not None:
                progress(len(idx) * group.world_size)
    if group.active:
        total, seen = distributed.all_sum(
            group, torch.stack([total, torch.tensor(float(seen), device=x.device)])
        )
    return -total / seen


def adam(params, lr: float, eps: float = 1e-8) -> Optimizer:
    """Adam by torch's fused kernel (:class:`pyrovae.optim.Adam`) where this torch has one for the
    parameters' device and dtype; else ``torch.optim.Adam``, fused or not (the same update)."""
    params = list(params)
    for build in (Adam, functools.partial(torch.optim.Adam, fused=True)):
        try:
            return build(params, lr=lr, eps=eps)
        except (RuntimeError, TypeError, AttributeError, NotImplementedError):
            pass
    return torch.optim.Adam(params, lr=lr, eps=eps)


@torch.no_grad()
def evaluate_elbo(loss_fn: nn.Module, x: torch.Tensor, batch_size: int, group: Group = SINGLE) -> float:
    """The mean ELBO, in nats per image, of images ``x`` (N, D) in the likelihood's representation;
    under torchrun each rank scores its share of ``x`` and the sums are added."""
    total = sum(
        (loss_fn(batch) for batch in group.share(x).split(batch_size)), torch.zeros((), device=x.device)
    )
    return -float(distributed.all_sum(group, total)) / len(x)


def check_objective(config: TrainConfig, vae: VAE) -> None:
    """Refuse, with one line, an objective that cannot train this model (e.g. meanfield without a
    closed-form KL)."""
    x = next(vae.parameters()).new_zeros(1, config.model.x_dim)  # on the model's device, in its dtype
    try:  # the check's draws, on the CPU's generator or the GPU's, leave training's stream alone
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            OBJECTIVES[config.elbo].check(vae.model, vae.guide, x)
    except ValueError as e:
        raise UserError(str(e)) from None


def _module_local_params(function: Callable) -> Callable:
    """Run ``function`` with Pyro's module-local parameters: the networks' weights stay theirs, never
    copied into Pyro's global param store on every step (nor left there afterwards)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with pyro.settings.context(module_local_params=True):
            return function(*args, **kwargs)

    return wrapper


@_module_local_params
def fit(config: TrainConfig, data: Dataset | None = None, log: Callable[[str], None] = print) -> Path:
    """Train a VAE as ``config`` says and write its run directory; returns the directory.

    Everything that can be checked or built (device, data, model, objective, output folder) is, before
    the directory is made, so bad input leaves nothing behind. Under torchrun every rank checks and
    builds, a failure on any ends them all, and rank 0 alone writes (see :mod:`pyrovae.distributed`).
    """
    with _training_process(config) as (device, group):
        with distributed.together(group):
            loggers.check_available(config)
            if data is None:
                data = load_dataset(config.dataset, config.data_dir, config.test_fraction)
            # Rank 0's alone is made and written (the others' default names may differ by a second).
            run_dir = Path(config.out) if config.out is not None else runs.default_run_dir(config.dataset)
            try:  # the model for these images: the likelihood named, and the architecture checked, for them
                model = dataclasses.replace(config.model, image_shape=data.image_shape)
                model = dataclasses.replace(model, likelihood=model.likelihood_name)
            except ValueError as e:
                raise UserError(f"{data.name}: {e}") from None
            config = dataclasses.replace(config, model=model, out=str(run_dir))
            memory.check_fits(
                memory.training_bytes(config, len(data.x_train)), device, "this model's training"
            )
            runs.check_run_dir(run_dir)
            trainer = Trainer(config, data, device, group=group)
        if group.is_main:
            runs.create_run_dir(run_dir)
        try:
            trainer.run(run_dir, log)
        except BaseException:
            if group.is_main and not (run_dir / io.CHECKPOINT).exists():  # died before its first epoch ended
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
    return run_dir


@_module_local_params
def resume(
    run_dir: str | Path,
    changes: dict[str, Any] | None = None,
    data: Dataset | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Continue the run in ``run_dir`` from its last checkpoint, as if it had never stopped.

    ``changes`` are options given again (``TrainConfig`` fields, and ``model`` fields by name); those
    of :data:`pyrovae.runs.RESUMABLE_CHANGES` may differ from the run's config, any other is refused.
    """
    run_dir = Path(run_dir)
    if not (run_dir / io.CHECKPOINT).exists() and (run_dir / io.CONFIG).exists():
        raise UserError(f"{run_dir} has no checkpoint: it stopped before its first epoch ended; fit it anew")
    config, payload = io.load_checkpoint(run_dir / io.CHECKPOINT)
    config = runs.apply_changes(config, changes or {}, payload["epoch"], run_dir)
    with _training_process(config) as (device, group):
        with distributed.together(group):
            loggers.check_available(config)
            if data is None:
                data = load_dataset(config.dataset, config.data_dir, config.test_fraction)
            memory.check_fits(
                memory.training_bytes(config, len(data.x_train)), device, "this model's training"
            )
            trainer = Trainer(config, data, device, payload, group)
        trainer.run(run_dir, log)
    return run_dir


@contextlib.contextmanager
def _training_process(config: TrainConfig) -> Iterator[tuple[torch.device, Group]]:
    """What ``fit`` and ``resume`` train within: subnormals as ``config`` says (first, before any data
    is loaded: see :func:`subnormals_flushed`), its device and, under torchrun, the process group."""
    with subnormals_flushed(config.flush_denormal):
        device = distributed.device_for(resolve_device(config.device), distributed.current())
        with distributed.process_group(device) as group:
            yield device, group


class Trainer:
    """A model, its objective and optimizer, and the data split for them, built before anything is
    written; :meth:`run` trains epoch by epoch into a run directory."""

    def __init__(
        self,
        config: TrainConfig,
        data: Dataset,
        device: torch.device,
        checkpoint: dict | None = None,
        group: Group = SINGLE,
    ):
        self.config, self.group = config, group
        train, x_valid = hold_out(data, config.validation)
        self.data = train.to(device)
        pyro.set_rng_seed(config.seed)
        self.vae = VAE(config.model).to(device)
        check_objective(config, self.vae)
        self.loss_fn = elbo_loss(self.vae, config.elbo, config.num_particles)
        # Every figure is the same single-draw ELBO, whatever the objective trained: comparable.
        self.elbo_fn = elbo_loss(self.vae)
        self.optimizer = adam(self.loss_fn.parameters(), config.lr, config.adam_eps)
        represent = self.vae.model.p_x.data
        self.x_valid = fixed_representation(x_valid, represent).to(device)
        self.x_test = fixed_representation(self.data.x_test, represent)
        self.metrics: list[dict[str, Any]] = []
        if group.active:  # each rank its own noise (no collective here: the ranks have yet to agree)
            pyro.set_rng_seed(distributed.rank_seed(config.seed, group.rank))
        if checkpoint is not None:
            self.vae.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.metrics = checkpoint["metrics"]
            states = checkpoint.get("rng_ranks", [checkpoint["rng"]])
            if len(states) != group.world_size:
                raise UserError(
                    f"this run was trained on {len(states)} process(es); resume it on as many "
                    f"(it is resumed on {group.world_size})"
                )
            _set_rng_state(states[group.rank], device)

    def run(self, run_dir: Path, log: Callable[[str], None]) -> None:
        config, data, vae, main = self.config, self.data, self.vae, self.group.is_main
        device = data.x_train.device
        self.train_fn = self.loss_fn
        if self.group.active:  # DDP checks that every rank holds the same weights
            cuda = [device] if device.type == "cuda" else None
            self.train_fn = nn.parallel.DistributedDataParallel(self.loss_fn, device_ids=cuda)
        if not main:  # rank 0 alone writes and speaks
            config, log = dataclasses.replace(config, loggers=()), _silent
        else:
            io.write_config(run_dir, config)
        if self.metrics and main:
            io.write_metrics(run_dir, self.metrics)  # the checkpoint's rows, should the run have died between
        first = len(self.metrics) + 1
        if first > config.epochs:
            log(
                f"{run_dir} has trained all its {config.epochs} epochs (fit --resume {run_dir} --epochs N "
                "goes on to epoch N); drawing its pictures again"
            )
        else:
            log(
                f"{'resuming' if first > 1 else 'fitting'} {config.dataset} ({len(data.x_train)} train, "
                f"{len(self.x_valid)} validation, {len(data.x_test)} test images) on {device} with "
                f"{config.elbo} (K = {config.num_particles}), "
                + (f"from epoch {first}, " if first > 1 else "")
                + f"into {run_dir}"
            )
        board = loggers.Loggers(run_dir, config)
        try:
            steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
            for epoch in range(first, config.epochs + 1):
                if runs.stopped_early(config, self.metrics):
                    log(f"stopped early: no better validation ELBO in {config.early_stopping} epochs")
                    break
                set_lr(self.optimizer, config.lr * SCHEDULES[config.lr_schedule].factor(epoch))
                row = self._epoch(epoch, kl_weights(config, epoch, steps_per_epoch))
                self.metrics.append(row)
                states = distributed.gather(self.group, _rng_state(device))
                if not main:
                    continue
                runs.save_epoch(
                    run_dir,
                    config,
                    {
                        "epoch": epoch,
                        "model": vae.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "metrics": self.metrics,
                        "rng": states[0],
                        **({"rng_ranks": states} if self.group.active else {}),
                    },
                )
                io.write_metrics(run_dir, self.metrics)
                board.epoch(row)
                valid = f"valid ELBO {row['valid_elbo']:9.3f}  " if row["valid_elbo"] is not None else ""
                log(
                    f"epoch {epoch:3d}/{config.epochs}  train bound {row['train_elbo']:9.3f}  {valid}"
                    f"test ELBO {row['test_elbo']:9.3f}  ({row['seconds']:.1f} s)"
                )
            if main:
                best, _, _ = load_run(run_dir, device)  # the pictures show the model evaluate scores
                plots.draw_run(best, self.x_test, self.metrics, run_dir)
                board.images(best, self.x_test, len(self.metrics))
        finally:
            board.close()
        distributed.barrier(self.group)  # the others wait for rank 0's pictures
        self.train_fn = self.loss_fn  # DDP's reducer released before the process group is destroyed

    def _epoch(self, epoch: int, weights: list[float]) -> dict[str, Any]:
        config, vae = self.config, self.vae
        start = time.perf_counter()
        with tqdm(
            total=len(self.data.x_train),
            desc=f"epoch {epoch}",
            unit="img",
            leave=False,
            file=sys.stderr,
            disable=None if self.group.is_main else True,
        ) as bar:
            train_elbo = _unless_diverged(
                vae,
                lambda: train_epoch(
                    self.train_fn,
                    self.optimizer,
                    self.data.x_train,
                    config.batch_size,
                    bar.update,
                    vae.model.p_x.data,
                    weights,
                    self.group,
                ),
            )
        seconds = time.perf_counter() - start
        valid_elbo = None
        if len(self.x_valid):
            valid_elbo = self._elbo(self.x_valid)
        test_elbo = self._elbo(self.x_test)
        if not all(math.isfinite(v) for v in (train_elbo, test_elbo, valid_elbo or 0.0)):
            kept = (
                "no epoch finished, so nothing is kept"
                if epoch == 1
                else f"the checkpoint of epoch {epoch - 1} is kept"
            )
            raise Diverged(f"training diverged in epoch {epoch}: the ELBO is not finite; {kept}")
        return {
            "epoch": epoch,
            "train_elbo": train_elbo,
            "valid_elbo": valid_elbo,
            "test_elbo": test_elbo,
            "seconds": seconds,
        }

    def _elbo(self, x: torch.Tensor) -> float:
        return _unless_diverged(
            self.vae, lambda: evaluate_elbo(self.elbo_fn, x, self.config.eval_batch_size, self.group)
        )


@contextlib.contextmanager
def subnormals_flushed(flush: bool) -> Iterator[None]:
    """Within the block, the CPU's arithmetic flushes subnormal floats to zero where ``flush`` (else keeps
    them, torch's default); after it, this thread's setting is what it was.

    The setting is each thread's own (x86's MXCSR), and torch's worker threads take it from the thread
    that starts them, at the process's first parallel operation: so the block is entered before any data
    is loaded, and in a process whose workers ran before it (a notebook's second ``fit``) they keep theirs.
    """
    before = sys.float_info.min / 2 == 0  # this thread flushes now
    torch.set_flush_denormal(flush)
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def _silent(message: str) -> None:
    pass


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
