"""CIFAR-10, folders of images and .npz files: read from files written here in their published layouts,
through the library and the CLI, and every bad input refused in one line with no run directory."""

import gzip
import json
import pickle
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae import data as data_module
from pyrovae.data import CIFAR10_CLASSES, DataError, load_dataset
from pyrovae.plots import image_grid
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error

RNG = np.random.default_rng(0)


def colour_images(n: int, size: int = 32) -> np.ndarray:
    """(n, size, size, 3) uint8, each image's colour channels distinct so that a mix-up shows."""
    x = RNG.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    x[..., 0] //= 2  # red below 128, blue at its own levels: channel order is checked by value
    return x


def write_cifar10(root: Path, per_batch: int = 40, bytes_keys_in_test: bool = True) -> dict:
    """The ``cifar-10-batches-py`` folder as published: five training batches and a test batch, each a
    pickled dict whose ``data`` is (n, 3072) uint8 with the red, green, blue planes one after another
    (row-major 32 x 32 each) and ``labels`` a list of ints. The published files were pickled by Python 2
    (str keys); the test batch is written with bytes keys, as ``pickle.load(encoding='bytes')`` shows them."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x = colour_images(6 * per_batch)
    y = RNG.integers(0, 10, 6 * per_batch)
    planes = x.transpose(0, 3, 1, 2).reshape(len(x), 3072)  # (C, H, W) order, as the published files
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        batch = {"batch_label": name, "labels": y[rows].tolist(), "data": planes[rows], "filenames": []}
        if name == "test_batch" and bytes_keys_in_test:
            batch = {k.encode(): v for k, v in batch.items()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f, protocol=2)
    return {"x": x, "y": y, "per_batch": per_batch}


def test_cifar10_is_read_from_its_published_pickles(tmp_path):
    written = write_cifar10(tmp_path)
    d = load_dataset("cifar10", tmp_path)
    n = 5 * written["per_batch"]
    assert d.image_shape == (3, 32, 32) and d.x_train.dtype == torch.uint8
    assert d.x_train.shape == (n, 3072) and d.x_test.shape == (written["per_batch"], 3072)
    chw = torch.from_numpy(written["x"]).permute(0, 3, 1, 2).reshape(-1, 3072)
    assert torch.equal(d.x_train, chw[:n]) and torch.equal(d.x_test, chw[n:])
    assert d.y_train.tolist() == written["y"][:n].tolist() and d.y_test.tolist() == written["y"][n:].tolist()
    assert d.classes == CIFAR10_CLASSES
    # The first plane is red: every value below 128, as written.
    assert d.x_train.reshape(-1, 3, 32, 32)[:, 0].max() < 128


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_cifar10_file_that_would_run_code_is_refused(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "ran"
    exploit = _Exploit()
    exploit.target = str(marker)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_3", "wb") as f:
        pickle.dump({"data": exploit, "labels": []}, f, protocol=2)
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


def test_missing_cifar10_offline_is_one_line_naming_folder_and_files(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network in this test")

    # torchvision's download, as it fails offline; the test never reaches the network.
    monkeypatch.setattr(
        data_module,
        "_torchvision",
        lambda: types.SimpleNamespace(datasets=types.SimpleNamespace(CIFAR10=offline)),
    )
    result = invoke(
        "fit", "--dataset", "cifar10", "--data-dir", str(tmp_path / "d"), "--out", str(tmp_path / "r")
    )
    assert_one_line_error(result, "cifar-10-batches-py", "data_batch_1", "test_batch", "no network")
    assert not (tmp_path / "r").exists() and not (tmp_path / "d").exists()


def write_idx(path: Path, values: np.ndarray, gz: bool) -> None:
    """``values`` (uint8) as an IDX file: two zero bytes, type 0x08, rank, big-endian sizes, values."""
    content = bytes([0, 0, 8, values.ndim]) + np.array(values.shape, ">i4").tobytes() + values.tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_is_read_from_its_published_idx_files_plain_or_gzipped(tmp_path, gz):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (12, 5))
    y_train, y_test = (rng.integers(0, 10, n, dtype=np.uint8) for n in (12, 5))
    for name, values in zip(data_module._FILES, (x_train, y_train, x_test, y_test), strict=True):
        write_idx(raw / name, values, gz)
    data = load_dataset("fashionmnist", tmp_path)
    assert data.image_shape == (28, 28) and data.x_train.dtype == torch.uint8
    assert torch.equal(data.x_train, torch.from_numpy(x_train).flatten(1))
    assert torch.equal(data.x_test, torch.from_numpy(x_test).flatten(1))
    assert data.y_train.tolist() == y_train.tolist() and data.y_test.dtype == torch.int64


def test_a_truncated_idx_file_is_one_line(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data_module._FILES:
        write_idx(raw / name, np.zeros((4, 28, 28) if "images" in name else 4, np.uint8), gz=False)
    (raw / "t10k-images-idx3-ubyte").write_bytes((raw / "t10k-images-idx3-ubyte").read_bytes()[:-7])
    result = invoke("fit", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "r"))
    assert_one_line_error(result, "t10k-images-idx3-ubyte", "3129 values where its header says 3136")
    assert not (tmp_path / "r").exists()


def test_cifar10_fits_with_conv_and_its_default_likelihood_then_evaluates_and_draws(tmp_path):
    write_cifar10(tmp_path / "data")
    run = tmp_path / "run"
    data = str(tmp_path / "data")
    result = invoke("fit", "--dataset", "cifar10", "--data-dir", data, "--arch", "conv", "--epochs", "1",
                    "--batch-size", "50", "--hidden-dims", "32", "--out", str(run))  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["likelihood"] == "discretized-logistic"
    assert config["model"]["image_shape"] == [3, 32, 32]
    result = invoke("evaluate", str(run), "--num-samples", "4", "--no-compile")
    assert result.exit_code == 0, result.output
    assert "bits per dimension" in result.output
    for command in ("reconstruct", "latent", "interpolate"):
        assert invoke(command, str(run)).exit_code == 0
    assert (run / "reconstructions.png").stat().st_size > 0


def test_colour_grids_are_rgb_with_each_image_in_its_place():
    images = torch.rand(5, 3 * 4 * 6)
    grid = image_grid(images, (3, 4, 6), ncols=3)
    assert grid.shape == (2 * 5 - 1, 3 * 7 - 1, 3)
    hwc = images.reshape(5, 3, 4, 6).permute(0, 2, 3, 1)
    assert torch.equal(grid[5:9, 7:13], hwc[4])  # row 1, column 1
    assert (grid[4] == 1).all()  # the white line between rows
    grey = image_grid(torch.rand(2, 12), (3, 4), ncols=2)
    assert grey.shape == (3, 9)


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, mode: str) -> None:
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / f"class-{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode=mode).save(root / f"class-{label}" / f"{i:03d}.png")


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_a_folder_of_images_is_read_with_a_seeded_test_split(tmp_path, colour):
    x = colour_images(40, 12) if colour else RNG.integers(0, 256, (40, 12, 16), dtype=np.uint8)
    y = np.arange(40) % 3
    write_folder(tmp_path / "images", x, y, "RGB" if colour else "L")
    d = load_dataset(str(tmp_path / "images"), test_fraction=0.25)
    assert d.image_shape == ((3, 12, 12) if colour else (12, 16))
    assert d.classes == ("class-0", "class-1", "class-2")
    assert len(d.x_test) == 10 and len(d.x_train) == 30
    again = load_dataset(str(tmp_path / "images"), test_fraction=0.25)
    assert torch.equal(d.x_test, again.x_test)  # the split is seeded, the same every time
    # Every written image is in exactly one split, with its label, in (C, H, W) order.
    chw = torch.from_numpy(x.transpose(0, 3, 1, 2) if colour else x).reshape(40, -1)
    both = torch.cat([d.x_train, d.x_test])
    labels = torch.cat([d.y_train, d.y_test])
    for image, label in zip(chw, y, strict=True):
        found = (both == image).all(1).nonzero().flatten()
        assert len(found) == 1 and labels[found[0]] == label


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NHW1"])
def test_an_npz_is_read_with_or_without_labels(tmp_path, layout):
    x = {"NHW": RNG.integers(0, 256, (30, 8, 8), dtype=np.uint8), "NHWC": colour_images(30, 8),
         "NHW1": RNG.integers(0, 256, (30, 8, 8, 1), dtype=np.uint8)}[layout]  # fmt: skip
    np.savez(tmp_path / "with.npz", x=x, y=np.arange(30) % 4)
    np.savez(tmp_path / "without.npz", x=x)
    d = load_dataset(str(tmp_path / "with.npz"), test_fraction=0.2)
    assert d.image_shape == ((3, 8, 8) if layout == "NHWC" else (8, 8))
    assert len(d.x_test) == 6 and sorted(torch.cat([d.y_train, d.y_test]).tolist()) == sorted(
        np.arange(30) % 4
    )
    assert (load_dataset(str(tmp_path / "without.npz")).y_train == 0).all()


@pytest.mark.parametrize("given", [["--test-fraction", "0.5"], ["--config", "r.toml"]])
def test_a_test_fraction_for_a_data_set_with_its_own_test_split_is_refused(tmp_path, given):
    """It was kept in config.json and never used: the run said 0.5 and tested on synthetic's own 200."""
    (tmp_path / "r.toml").write_text("test_fraction = 0.5\n")
    given = [str(tmp_path / a) if a.endswith(".toml") else a for a in given]
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", *given, "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "test_fraction is for images of your own; synthetic has its own test split")
    assert not (tmp_path / "run").exists()


def test_own_data_fits_and_later_commands_find_it_from_config_json(tmp_path, monkeypatch):
    np.savez(tmp_path / "digits.npz", x=RNG.integers(0, 256, (60, 8, 8), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", "--dataset", "digits.npz", "--epochs", "1", "--test-fraction", "0.5",
                    "--out", "run")  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == str(tmp_path / "digits.npz") and config["test_fraction"] == 0.5
    assert config["model"]["likelihood"] == "bernoulli"
    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the absolute path finds the data again
    result = invoke("evaluate", str(tmp_path / "run"), "--num-samples", "3", "--no-compile")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "evaluation.json").read_text())["num_points"] == 30


def test_a_relative_data_dir_is_kept_absolute_so_resume_finds_it_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", "--data-dir", "data", "--out", "run")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data_dir"] == str((tmp_path / "data").resolve())


def _bad_inputs(root: Path) -> dict:
    write_folder(root / "mixed-sizes", RNG.integers(0, 256, (2, 8, 8), dtype=np.uint8), np.array([0, 1]), "L")
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(root / "mixed-sizes" / "class-1" / "odd.png")
    write_folder(root / "mixed-modes", RNG.integers(0, 256, (2, 8, 8), dtype=np.uint8), np.array([0, 0]), "L")
    Image.fromarray(colour_images(1, 8)[0]).save(root / "mixed-modes" / "class-0" / "rgb.png")
    (root / "empty" / "class-0").mkdir(parents=True)
    np.savez(root / "no-x.npz", images=np.zeros((4, 8, 8), np.uint8))
    np.savez(root / "floats.npz", x=np.zeros((4, 8, 8)))
    np.savez(root / "sides.npz", x=np.zeros((20, 10, 10), np.uint8))
    (root / "not-a-zip.npz").write_text("hello")
    write_cifar10(root / "cifar")
    return {
        "mixed-sizes": (["--dataset", str(root / "mixed-sizes")], ["odd.png", "12x8", "one size"]),
        "mixed-modes": (["--dataset", str(root / "mixed-modes")], ["rgb.png", "RGB", "one mode"]),
        "empty": (["--dataset", str(root / "empty")], ["holds no images"]),
        "no-x": (["--dataset", str(root / "no-x.npz")], ["no array 'x'", "images"]),
        "floats": (["--dataset", str(root / "floats.npz")], ["float64", "uint8"]),
        "not-a-zip": (["--dataset", str(root / "not-a-zip.npz")], ["not an .npz"]),
        "conv-sides": (
            ["--dataset", str(root / "sides.npz"), "--arch", "conv"],
            ["divisible by 4", "(10, 10)"],
        ),
        "bernoulli-colour": (
            ["--dataset", "cifar10", "--data-dir", str(root / "cifar"), "--likelihood", "bernoulli"],
            ["Bernoulli", "colour"],
        ),
        "too-few-for-a-test-split": (
            ["--dataset", str(root / "sides.npz"), "--test-fraction", "0.01"],
            ["no test"],
        ),
    }


@pytest.mark.parametrize("case", ["mixed-sizes", "mixed-modes", "empty", "no-x", "floats", "not-a-zip",
                                  "conv-sides", "bernoulli-colour", "too-few-for-a-test-split"])  # fmt: skip
def test_bad_data_is_one_line_and_leaves_no_run_directory(tmp_path, case):
    args, fragments = _bad_inputs(tmp_path)[case]
    result = invoke("fit", *args, "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_the_generated_cifar_benchmark_writes_what_cifar10_loading_reads(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generated_cifar.py"
    spec = importlib.util.spec_from_file_location("generated_cifar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from click.testing import CliRunner

    assert CliRunner().invoke(module.main, [str(tmp_path), "--per-batch", "20"]).exit_code == 0
    d = load_dataset("cifar10", tmp_path)
    assert d.image_shape == (3, 32, 32) and len(d.x_train) == 100 and len(d.x_test) == 20
    assert len(d.x_train.unique()) > 100  # colour levels, not a constant
