"""Datasets as single uint8 tensors, and the binarization that makes Bernoulli a true likelihood.

Pixel levels stay uint8 (one byte a value) wherever they live, each image one row of ``C*H*W`` values in
``(C, H, W)`` order (``image_shape``: ``(H, W)`` for grey images, ``(C, H, W)`` for colour ones).
Each likelihood says which representation it is a true likelihood of (``Likelihood.data``): a training
batch is drawn afresh in it every time it is used (dynamic binarization, fresh dequantization noise),
the test set once, with a fixed seed, so that every model is scored on the same images (the protocol
of Salakhutdinov and Murray, 2008, and of IWAE).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import channels
from .errors import UserError
from .likelihoods import binarize

# Draws the fixed evaluation set of every run, whatever the training seed, so figures are comparable.
EVALUATION_SEED = 0
# Chooses the validation images of every run, whatever the training seed: one split for all runs.
VALIDATION_SEED = 1
# Chooses the test images of a data set of your own (--dataset PATH), whatever the training seed.
TEST_SPLIT_SEED = 2

_TORCHVISION = {"mnist": "MNIST", "fashionmnist": "FashionMNIST"}
_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# torchvision's ImageFolder extensions.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(UserError):
    """A dataset that cannot be found or read; the message is one line meant for the user."""


@dataclass(frozen=True)
class Dataset:
    """Images, one row each: ``x`` is (N, D) uint8 in [0, 255], ``D = prod(image_shape)`` in ``(C, H, W)``
    order; ``y`` is (N,) int64, an index into ``classes`` (empty: the labels are their own names)."""

    name: str
    image_shape: tuple[int, ...]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...] = ()

    def to(self, device: torch.device | str) -> Dataset:
        fields = {k: getattr(self, k).to(device) for k in ("x_train", "y_train", "x_test", "y_test")}
        return dataclasses.replace(self, **fields)

    @property
    def channels(self) -> int:
        return channels(self.image_shape)


def default_data_dir() -> Path:
    """``$PYROVAE_DATA``, else the per-user cache (``$XDG_CACHE_HOME/pyrovae``, ``~/.cache/pyrovae``)."""
    if os.environ.get("PYROVAE_DATA"):
        return Path(os.environ["PYROVAE_DATA"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "pyrovae"


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, test_fraction: float = 0.1) -> Dataset:
    """Load ``mnist``, ``fashionmnist``, ``cifar10`` (torchvision's layout under ``data_dir``),
    ``synthetic``, or images of your own: ``name`` a folder in ``ImageFolder``'s layout
    (``name/<class>/<image>``) or an ``.npz`` file, of which ``test_fraction`` (chosen with a fixed seed)
    is the test split.

    Downloads through torchvision when the files are missing; offline, raises :class:`DataError`
    naming the folder and the files it expected.
    """
    if name == "synthetic":
        return synthetic_dataset()
    if name in _TORCHVISION or name == "cifar10":
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if name == "cifar10":
            return _cifar10(root)
        x_train, y_train, x_test, y_test = _idx_splits(name, root)
        return Dataset(name, tuple(x_train.shape[1:]), x_train.flatten(1), y_train, x_test.flatten(1), y_test)
    path = Path(name)
    if path.is_dir():
        x, y, classes = _image_folder(path)
    elif path.is_file() and path.suffix == ".npz":
        x, y, classes = _npz(path)
    else:
        raise DataError(
            f"dataset {name!r} is none of mnist, fashionmnist, cifar10, synthetic, and not a folder of "
            "images (one subfolder per class) or an .npz file"
        )
    return _split(str(path), x, y, classes, test_fraction)


def _split(
    name: str, x: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...], test_fraction: float
) -> Dataset:
    """(N, *image_shape) images as a data set whose test split is ``test_fraction`` of them."""
    n = len(x)
    num_test = round(n * test_fraction)
    if not 0 < num_test < n:
        raise DataError(
            f"{name}: a test fraction of {test_fraction} of {n} images leaves "
            + ("no test images" if num_test == 0 else "no training images")
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(TEST_SPLIT_SEED))
    test, train = order[:num_test], order[num_test:]
    flat = x.reshape(n, -1)
    return Dataset(name, tuple(x.shape[1:]), flat[train], y[train], flat[test], y[test], classes)


def _images(array, where: str) -> torch.Tensor:
    """uint8 images (N, H, W) or (N, H, W, C) as (N, H, W) grey or (N, C, H, W) colour."""
    import numpy as np

    if array.dtype != np.uint8:
        raise DataError(f"{where} holds {array.dtype} pixels; pyrovae reads 8-bit images (uint8)")
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        x = torch.from_numpy(np.ascontiguousarray(array))
        return x[..., 0] if array.shape[-1] == 1 else x.permute(0, 3, 1, 2).contiguous()
    if array.ndim != 3:
        raise DataError(
            f"{where} has shape {tuple(array.shape)}; expected N x H x W (grey) or N x H x W x C, C = 1 or 3"
        )
    return torch.from_numpy(np.ascontiguousarray(array))


def _npz(path: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """``x`` (uint8, N x H x W or N x H x W x C) and, when present, ``y`` (N integer labels)."""
    import numpy as np

    if not zipfile.is_zipfile(path):
        raise DataError(f"{path} is not an .npz file (not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as f:  # a data file never runs code
            if "x" not in f.files:
                held = ", ".join(f.files) or "nothing"
                raise DataError(f"{path} holds no array 'x' of images (it holds {held})")
            x = _images(f["x"], f"{path}'s x")
            y = f["y"] if "y" in f.files else None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"cannot read {path} as an .npz file: {e}") from None
    if len(x) == 0:
        raise DataError(f"{path}'s x holds no images")
    if y is None:
        return x, torch.zeros(len(x), dtype=torch.int64), ()
    if y.shape != (len(x),) or y.dtype.kind not in "iu" or (len(y) and y.min() < 0):
        raise DataError(
            f"{path}'s y must be {len(x)} non-negative integer labels, one per image; it is {y.dtype} "
            f"of shape {tuple(y.shape)}"
        )
    return x, torch.from_numpy(y.astype(np.int64)), ()


def _image_folder(root: Path) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """Every image under ``root/<class>/`` (torchvision's ``ImageFolder`` layout), classes in sorted
    order; all must have one size and one mode, grey (``L``) or colour (``RGB``)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        (p, label)
        for label, c in enumerate(classes)
        for p in sorted((root / c).rglob("*"))
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    ]
    if not files:
        raise DataError(
            f"{root} holds no images in class subfolders ({root}/<class>/<image>, with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)})"
        )
    images, first = [], None
    for p, _ in files:
        try:
            with Image.open(p) as image:
                image.load()
                kind = (image.mode, image.size)
                if first is None:
                    if image.mode not in ("L", "RGB"):
                        raise DataError(f"{p} has mode {image.mode}; pyrovae reads grey (L) or RGB images")
                    first = (p, kind)
                elif kind != first[1]:
                    (p0, (mode0, (w0, h0))), (w, h) = first, image.size
                    raise DataError(
                        f"{p} is {image.mode} {w}x{h} but {p0} is {mode0} {w0}x{h0}: every image of a data "
                        "set needs one size and one mode"
                    )
                images.append(np.asarray(image))
        except (UnidentifiedImageError, OSError) as e:
            raise DataError(f"cannot read {p} as an image: {e}") from None
    x = _images(np.stack(images), str(root))
    return x, torch.tensor([label for _, label in files]), tuple(classes)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles CIFAR-10's batches, dictionaries of NumPy arrays and lists, and nothing that could
    run code: a data file is never a program."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes, as protocol 2 writes them from Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch file: ``data`` (n, 3072) uint8 in (C, H, W) order and ``labels`` (n ints)."""
    import numpy as np

    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="latin1").load()  # as torchvision reads them
        batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
        data = np.asarray(batch["data"])
        labels = torch.as_tensor(np.asarray(batch["labels"]), dtype=torch.int64)
    except Exception as e:  # a truncated or foreign file: all end the same way
        raise DataError(f"cannot read {path} as a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{path} is not a CIFAR-10 batch: data {data.dtype} {tuple(data.shape)}, {len(labels)} labels"
        )
    return torch.from_numpy(np.ascontiguousarray(data)), labels


def _cifar10(root: Path) -> Dataset:
    """CIFAR-10 from torchvision's files (the published ``cifar-10-batches-py`` pickles) under ``root``."""
    folder = root / _CIFAR_FOLDER
    if not all((folder / f).is_file() for f in _CIFAR_FILES):
        _download(
            "cifar10",
            root,
            folder,
            lambda: _torchvision().datasets.CIFAR10(root, download=True),
            f"{', '.join(_CIFAR_FILES)}",
            f"{_CIFAR_FOLDER}/",
        )
    train = [_cifar_batch(folder / f) for f in _CIFAR_FILES[:-1]]
    x_test, y_test = _cifar_batch(folder / _CIFAR_FILES[-1])
    x_train, y_train = torch.cat([x for x, _ in train]), torch.cat([y for _, y in train])
    return Dataset("cifar10", (3, 32, 32), x_train, y_train, x_test, y_test, CIFAR10_CLASSES)


def _torchvision():
    import torchvision  # deferred: importing it costs seconds that the other data sets do not need

    return torchvision


def _idx_splits(name: str, root: Path) -> list[torch.Tensor]:
    """MNIST's or Fashion-MNIST's four IDX files in torchvision's layout, ``root/<Name>/raw/``, each as
    published or gzipped; downloaded through torchvision where any is missing. Read here, without
    importing torchvision, which takes longer than reading the files (1.8 s against 0.1 s)."""
    folder = root / _TORCHVISION[name] / "raw"

    def found() -> list[Path] | None:
        paths = [next((p for p in (folder / f, folder / f"{f}.gz") if p.is_file()), None) for f in _FILES]
        return None if None in paths else paths

    paths = found()
    if paths is None:
        cls = getattr(_torchvision().datasets, _TORCHVISION[name])

        def download():
            cls(root, train=True, download=True)
            cls(root, train=False, download=True)

        _download(
            name, root, folder, download, f"{', '.join(_FILES)}, or their .gz", f"{_TORCHVISION[name]}/raw/"
        )
        paths = found()
        if paths is None:
            raise DataError(f"{name}: the download left {folder} without {', '.join(_FILES)}")
    x_train, y_train, x_test, y_test = (_read_idx(p) for p in paths)
    if (
        x_train.dim() != 3
        or x_train.shape[1:] != x_test.shape[1:]
        or len(x_train) != len(y_train)
        or len(x_test) != len(y_test)
    ):
        raise DataError(f"{folder}: the images and labels of the IDX files do not match")
    return [x_train, y_train.long(), x_test, y_test.long()]


def _read_idx(path: Path) -> torch.Tensor:
    """One IDX file (the format MNIST and Fashion-MNIST are published in): two zero bytes, the type
    (0x08, unsigned bytes), the number of dimensions, each as a big-endian int32, then the values."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            content = f.read()
        if content[:2] != b"\0\0" or content[2] != 0x08:
            raise ValueError("not an IDX file of unsigned bytes")
        ndim = content[3]
        dims = struct.unpack(f">{ndim}i", content[4 : 4 + 4 * ndim])
        values = content[4 + 4 * ndim :]
        if len(values) != math.prod(dims):
            raise ValueError(f"{len(values)} values where its header says {math.prod(dims)}")
    except (OSError, EOFError, ValueError, IndexError, struct.error) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e})") from None
    return torch.frombuffer(bytearray(values), dtype=torch.uint8).reshape(dims)


def _download(name: str, root: Path, folder: Path, download: Callable, expected: str, layout: str):
    """``download()``, or a :class:`DataError` naming what was expected where; no empty folders left."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        root.mkdir(parents=True, exist_ok=True)
        return download()
    except Exception as e:  # offline, read-only, or a corrupt download: all end the same way
        for p in made:  # leave no empty folders behind
            if p.is_dir() and not any(p.iterdir()):
                p.rmdir()
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(e).__name__
        raise DataError(
            f"{name} not found in {folder} (expected {expected}) and could not be downloaded ({reason}); "
            f"point --data-dir or PYROVAE_DATA at a folder that holds {layout}"
        ) from None


def synthetic_dataset(
    num_train: int = 1000, num_test: int = 200, image_size: int = 28, seed: int = 0, channels: int = 1
) -> Dataset:
    """Ten classes of blurred random blobs, jittered per image; made on the fly for tests and smoke runs.
    ``channels = 3``: colour images, each blob of a class in a colour of its own."""
    g = torch.Generator().manual_seed(seed)
    num_classes = 10
    grid = torch.linspace(-1, 1, image_size)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    centres = torch.rand(num_classes, 3, 2, generator=g) * 1.2 - 0.6  # three blobs a class
    colours = torch.rand(num_classes, 3, channels, generator=g) if channels > 1 else None

    def images(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=g)
        shift = torch.randn(n, 1, 2, generator=g) * 0.08
        c = centres[y] + shift  # (n, 3, 2)
        d2 = (xx - c[..., 0, None, None]) ** 2 + (yy - c[..., 1, None, None]) ** 2  # (n, 3, H, W)
        blobs = 2 * torch.exp(-d2 / 0.04)  # near-solid discs
        if colours is None:
            intensity = blobs.sum(1).clamp(max=1)  # (n, H, W)
        else:  # (n, C, H, W): each blob painted in its colour
            intensity = torch.einsum("nbhw,nbc->nchw", blobs, colours[y]).clamp(max=1)
        x = (intensity * 255).round().to(torch.uint8).reshape(n, -1)
        return x, y

    x_train, y_train = images(num_train)
    x_test, y_test = images(num_test)
    shape = (image_size, image_size) if channels == 1 else (channels, image_size, image_size)
    return Dataset("synthetic", shape, x_train, y_train, x_test, y_test)


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
