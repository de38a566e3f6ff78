"""Optional TensorBoard logging; nothing else in pyrovae needs the package."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import TrainConfig
from .errors import UserError
from .model import VAE
from .plots import image_grid


def check_available(config: TrainConfig) -> None:
    if config.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise UserError(
                "--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
            ) from None


class TensorBoard:
    """ELBO curves per epoch, and sample and reconstruction grids at the end, in ``run_dir/tensorboard``."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def epoch(self, row: dict[str, float]) -> None:
        step = int(row["epoch"])
        self.writer.add_scalars("elbo", {"train": row["train_elbo"], "test": row["test_elbo"]}, step)
        self.writer.add_scalar("seconds_per_epoch", row["seconds"], step)

    def images(self, vae: VAE, x_test: torch.Tensor, step: int) -> None:
        shape = vae.config.image_shape
        layout = "HW" if len(shape) == 2 else "HWC"
        self.writer.add_image("samples", image_grid(vae.sample(64), shape, 8), step, dataformats=layout)
        pairs = torch.cat([x_test[:16], vae.reconstruct(x_test[:16])])
        self.writer.add_image("reconstructions", image_grid(pairs, shape, 16), step, dataformats=layout)

    def close(self) -> None:
        self.writer.close()
