"""Datasets as single uint8 tensors, and the binarization that makes Bernoulli a true likelihood.

Grey levels stay uint8 (one byte a pixel) wherever they live. Each likelihood says which representation
it is a true likelihood of (``Likelihood.data``): a training batch is drawn afresh in it every time it is
used (dynamic binarization, fresh dequantization noise), the test set once, with a fixed seed, so that
every model is scored on the same images (the protocol of Salakhutdinov and Murray, 2008, and of IWAE).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .likelihoods import binarize

# Draws the fixed evaluation set of every run, whatever the training seed, so figures are comparable.
EVALUATION_SEED = 0
# Chooses the validation images of every run, whatever the training seed: one split for all runs.
VALIDATION_SEED = 1

_TORCHVISION = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataError(UserError):
    """A dataset that cannot be found or read; the message is one line meant for the user."""


@dataclass(frozen=True)
class Dataset:
    """Grey-level images, flattened: ``x`` is (N, D) uint8 in [0, 255]; ``y`` is (N,) int64."""

    name: str
    image_shape: tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device | str) -> Dataset:
        fields = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return Dataset(self.name, self.image_shape, **fields)


def default_data_dir() -> Path:
    """``$PYROVAE_DATA``, else the per-user cache (``$XDG_CACHE_HOME/pyrovae``, ``~/.cache/pyrovae``)."""
    if os.environ.get("PYROVAE_DATA"):
        return Path(os.environ["PYROVAE_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pyrovae"


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load ``mnist``, ``fashionmnist`` (torchvision's layout under ``data_dir``) or ``synthetic``.

    Downloads through torchvision when the files are missing; offline, raises :class:`DataError`
    naming the folder and the files it expected.
    """
    if name == "synthetic":
        return synthetic_dataset()
    if name not in _TORCHVISION:
        raise DataError(f"unknown dataset {name!r}; choose mnist, fashionmnist or synthetic")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    train, test = _torchvision_splits(name, root)
    x_train, x_test = (s.data.reshape(len(s.data), -1).contiguous() for s in (train, test))
    return Dataset(name, tuple(train.data.shape[1:]), x_train, train.targets, x_test, test.targets)


def _torchvision_splits(name: str, root: Path):
    import torchvision  # deferred: importing it costs seconds that the synthetic data does not need

    cls = getattr(torchvision.datasets, _TORCHVISION[name])
    try:
        return cls(root, train=True, download=False), cls(root, train=False, download=False)
    except RuntimeError:
        pass
    folder = root / _TORCHVISION[name] / "raw"
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(root, train=True, download=True), cls(root, train=False, download=True)
    except Exception as e:  # offline, read-only, or a corrupt download: all end the same way
        for p in made:  # leave no empty folders behind
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(e).__name__
        raise DataError(
            f"{name} not found in {folder} (expected {', '.join(_FILES)}, or their .gz) "
            f"and could not be downloaded ({reason}); point --data-dir or PYROVAE_DATA at a folder "
            f"that holds {_TORCHVISION[name]}/raw/"
        ) from None


def synthetic_dataset(
    num_train: int = 1000, num_test: int = 200, image_size: int = 28, seed: int = 0
) -> Dataset:
    """Ten classes of blurred random blobs, jittered per image; made on the fly for tests and smoke runs."""
    g = torch.Generator().manual_seed(seed)
    num_classes = 10
    grid = torch.linspace(-1, 1, image_size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    centres = torch.rand(num_classes, 3, 2, generator=g) * 1.2 - 0.6  # three blobs a class

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        shift = torch.randn(n, 1, 2, generator=g) * 0.08
        c = centres[y] + shift  # (n, 3, 2)
        d2 = (xx - c[..., 0, None, None]) ** 2 + (yy - c[..., 1, None, None]) ** 2  # (n, 3, H, W)
        intensity = (2 * torch.exp(-d2 / 0.04)).sum(1).clamp(max=1)  # near-solid discs
        x = (intensity * 255).round().to(torch.uint8).reshape(n, -1)
        return x, y

    x_train, y_train = images(num_train)
    x_test, y_test = images(num_test)
    return Dataset("synthetic", (image_size, image_size), x_train, y_train, x_test, y_test)


def hold_out(data: Dataset, num_valid: int) -> tuple[Dataset, torch.Tensor]:
    """``num_valid`` training images, chosen with a fixed seed, held out as a validation split: the
    data set less those images, and the images (uint8, (num_valid, D))."""
    if num_valid >= len(data.x_train):
        raise DataError(
            f"--validation {num_valid} leaves no training images: {data.name} has {len(data.x_train)}"
        )
    if num_valid == 0:
        return data, data.x_train[:0]
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(VALIDATION_SEED))
    valid, train = order[:num_valid].to(data.x_train.device), order[num_valid:].to(data.x_train.device)
    rest = Dataset(
        data.name, data.image_shape, data.x_train[train], data.y_train[train], data.x_test, data.y_test
    )
    return rest, data.x_train[valid]


def fixed_representation(x: torch.Tensor, prepare: Callable) -> torch.Tensor:
    """The fixed representation of an evaluation set (``prepare`` is a likelihood's ``data``): drawn on
    the CPU with a fixed seed, so every device and every run scores the same images."""
    g = torch.Generator().manual_seed(EVALUATION_SEED)
    return prepare(x.cpu(), generator=g).to(x.device)


def binarize_fixed(x: torch.Tensor) -> torch.Tensor:
    """The fixed binarization of an evaluation set."""
    return fixed_representation(x, binarize)
