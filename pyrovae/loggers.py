"""Experiment loggers (``fit --logger NAME``, repeatable): each writes inside the run directory and needs
an optional package; nothing else in pyrovae does.

A new one is one class here, registered by name once::

    @register("mine")
    class Mine(Logger):
        package, extra = "mine", "mine"
        def __init__(self, run_dir, config): ...
        def epoch(self, row): ...                    # one row of metrics.csv
        def images(self, name, grid, step): ...     # (H, W) grey or (H, W, C) colour, in [0, 1]
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .errors import UserError
from .model import VAE
from .plots import image_grid
from .registry import registrar

LOGGERS: dict[str, type[Logger]] = {}
register = registrar(LOGGERS)


class Logger:
    """Metrics per epoch, and sample and reconstruction grids at the end, logged as ``name`` does."""

    # The package imported (checked before training starts) and the extra that installs it.
    package: str
    extra: str

    def __init__(self, run_dir: Path, config: TrainConfig):
        raise NotImplementedError

    def epoch(self, row: dict[str, Any]) -> None:
        raise NotImplementedError

    def images(self, name: str, grid: torch.Tensor, step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def check_available(config: TrainConfig) -> None:
    """A one-line :class:`UserError` for a logger whose package is not installed, before anything runs."""
    for name in config.loggers:
        cls = LOGGERS[name]
        try:
            importlib.import_module(cls.package)
        except ImportError:
            raise UserError(
                f"--logger {name} needs the {cls.extra} package: pip install -e '.[{cls.extra}]'"
            ) from None


def _scalars(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k != "epoch" and v is not None}


@register("tensorboard")
class TensorBoard(Logger):
    """``run_dir/tensorboard``: the metrics as scalars, the grids as images."""

    package, extra = "torch.utils.tensorboard", "tensorboard"

    def __init__(self, run_dir, config):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def epoch(self, row):
        step = int(row["epoch"])
        elbos = {"train": row["train_elbo"], "test": row["test_elbo"]}
        if row.get("valid_elbo") is not None:
            elbos["valid"] = row["valid_elbo"]
        self.writer.add_scalars("elbo", elbos, step)
        self.writer.add_scalar("seconds_per_epoch", row["seconds"], step)

    def images(self, name, grid, step):
        self.writer.add_image(name, grid, step, dataformats="HW" if grid.dim() == 2 else "HWC")

    def close(self):
        self.writer.close()


@register("swanlab")
class SwanLab(Logger):
    """SwanLab without an account, nothing sent: ``run_dir/swanlog``, uploaded later, if wished, with
    ``swanlab sync``. Its offline mode, since SwanLab 0.10's ``local`` mode needs its retired dashboard
    package (swanboard) and fails without it."""

    package = extra = "swanlab"

    def __init__(self, run_dir, config):
        import swanlab

        self.swanlab = swanlab
        self.run = swanlab.init(
            project="pyrovae",
            experiment_name=Path(run_dir).name,
            config=config.to_dict(),
            logdir=str(Path(run_dir) / "swanlog"),
            mode="offline",
        )

    def epoch(self, row):
        self.run.log(_scalars(row), step=int(row["epoch"]))

    def images(self, name, grid, step):
        self.run.log({name: self.swanlab.Image(grid.numpy())}, step=step)

    def close(self):
        self.run.finish()


@register("wandb")
class WandB(Logger):
    """Weights & Biases in offline mode (no account, nothing sent): ``run_dir/wandb``, uploaded later, if
    wished, with ``wandb sync``."""

    package = extra = "wandb"

    def __init__(self, run_dir, config):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project="pyrovae",
            name=Path(run_dir).name,
            config=config.to_dict(),
            dir=str(run_dir),
            mode="offline",
            settings=wandb.Settings(silent=True, console="off"),
        )

    def epoch(self, row):
        self.run.log(_scalars(row), step=int(row["epoch"]))

    def images(self, name, grid, step):
        self.run.log({name: self.wandb.Image(grid.numpy())}, step=step)

    def close(self):
        self.run.finish()


class Loggers:
    """The loggers a run asked for, called together."""

    def __init__(self, run_dir: Path, config: TrainConfig):
        self.loggers = [LOGGERS[name](run_dir, config) for name in config.loggers]

    def epoch(self, row: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.epoch(row)

    def images(self, vae: VAE, x_test: torch.Tensor, step: int) -> None:
        if not self.loggers:
            return
        shape = vae.config.image_shape
        pairs = torch.cat([x_test[:16], vae.reconstruct(x_test[:16])])
        grids = {
            "samples": image_grid(vae.sample(64), shape, 8),
            "reconstructions": image_grid(pairs, shape, 16),
        }
        for logger in self.loggers:
            for name, grid in grids.items():
                logger.images(name, grid.clamp(0, 1), step)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
