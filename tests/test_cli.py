"""``cli.py`` on tiny synthetic data: what a run writes, and one-line errors for bad input."""

import csv
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

import pyrovae.evaluate
import pyrovae.train
from cli import cli
from pyrovae.data import binarize_fixed, synthetic_dataset
from pyrovae.io import METRIC_COLUMNS, read_metrics
from pyrovae.model import VAE
from pyrovae.runs import load_run
from tests.conftest import invoke

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = {
    "config.json",
    "checkpoint.pt",
    "metrics.csv",
    "samples.png",
    "reconstructions.png",
    "elbo.png",
}


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    error_lines = [line for line in lines if line.startswith("Error:")]
    assert len(error_lines) == 1, result.output
    # the message is the last thing printed: nothing of it spills onto further lines
    assert not any(line.strip() for line in lines[lines.index(error_lines[0]) + 1 :]), result.output
    for fragment in fragments:
        assert fragment in error_lines[0], result.output


def test_fit_writes_every_file_of_a_run(synthetic_run):
    run_dir = synthetic_run
    assert RUN_FILES <= {p.name for p in run_dir.iterdir()}
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary files left
    with open(run_dir / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        rows = list(reader)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 11))
    for r in rows:
        for key in ("train_elbo", "test_elbo"):
            assert math.isfinite(float(r[key])) and float(r[key]) < 0
        assert float(r["seconds"]) > 0
    # The ELBO of the trained model is far above that of an untrained one (about -D log 2 = -543).
    assert float(rows[-1]["test_elbo"]) > -400
    for name in ("samples.png", "reconstructions.png", "elbo.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_json_holds_every_option(synthetic_run):
    run_dir = synthetic_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "synthetic" and config["epochs"] == 10
    assert config["model"] == {
        "image_shape": [28, 28],
        "z_dim": 2,
        "hidden_dims": [64, 32],
        "arch": "mlp",
        "likelihood": "bernoulli",
        "prior": "normal",
        "num_components": 50,
        "guide": "gaussian",
        "num_flows": 2,
        "family": "vae",
        "scale": "softplus",
    }
    options = {p.name for p in cli.commands["fit"].params}
    assert options - set(config["model"]) - {"resume", "config_file"} <= set(config)


def test_checkpoint_loads_with_weights_only_and_rebuilds_the_model(synthetic_run):
    run_dir = synthetic_run
    payload = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 10
    vae, config, _ = load_run(run_dir)
    assert config.model.z_dim == 2
    state = {k: v for k, v in payload["model"].items()}
    for name, tensor in vae.state_dict().items():
        torch.testing.assert_close(tensor, state[name])
    x = binarize_fixed(synthetic_dataset().x_test)

    # A trained model's reconstruction is closer to its own input than to the other test images, on
    # average, far more often than an untrained one's (about 0.44 here; the trained about 0.8).
    def closer_to_own(model):
        err = torch.cdist(model.reconstruct(x), x) ** 2  # (N, N): reconstruction i against input j
        return (err.diagonal() < (err.sum(1) - err.diagonal()) / (len(x) - 1)).float().mean()

    untrained = VAE(config.model)
    assert closer_to_own(vae) > 0.7
    assert closer_to_own(vae) > closer_to_own(untrained) + 0.2


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--dataset", "svhn"], "'--dataset'"),
        (["--epochs", "0"], "'--epochs'"),
        (["--epochs", "-3"], "'--epochs'"),
        (["--batch-size", "0"], "'--batch-size'"),
        (["--z-dim", "0"], "'--z-dim'"),
        (["--hidden-dims", "0"], "'--hidden-dims'"),
        (["--hidden-dims", "400,-1"], "'--hidden-dims'"),
        (["--hidden-dims", "big"], "'--hidden-dims'"),
        (["--lr", "0"], "'--lr'"),
        (["--lr", "-0.1"], "'--lr'"),
        (["--lr", "fast"], "'--lr'"),
        (["--lr", "nan"], "'--lr'"),
        (["--lr", "inf"], "'--lr'"),
        (["--device", "tpu"], "'--device'"),
    ],
)
def test_bad_option_is_a_usage_error(tmp_path, args, fragment):
    out = tmp_path / "run"
    result = invoke("fit", "--dataset", "synthetic", "--out", str(out), *args)
    assert result.exit_code == 2
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", "--out", str(blocker / "run"))
    assert_one_line_error(result, "cannot write to output folder", str(blocker / "run"))


def test_output_folder_that_is_not_empty_is_refused(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", "--out", str(tmp_path))
    assert_one_line_error(result, "not empty")
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_an_output_folder_that_is_a_file_is_refused_as_one(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "file").write_text("precious")
    for name in ("pipe", "file"):
        result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", "--out", str(tmp_path / name))
        assert_one_line_error(result, f"output folder {tmp_path / name} already exists and is not a folder")
    assert (tmp_path / "file").read_text() == "precious" and stat.S_ISFIFO((tmp_path / "pipe").stat().st_mode)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda(tmp_path):
    result = invoke("fit", "--dataset", "synthetic", "--device", "cuda", "--out", str(tmp_path / "r"))
    assert_one_line_error(result, "CUDA is not available")
    assert not (tmp_path / "r").exists()


def test_missing_data_offline_names_the_folder_and_files(tmp_path, monkeypatch):
    import torchvision

    def offline(self):
        raise URLError("no network (test)")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    data_dir = tmp_path / "data"
    result = invoke("fit", "--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(tmp_path / "r"))
    assert_one_line_error(
        result,
        str(data_dir / "MNIST" / "raw"),
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "no network (test)",
    )
    assert not (tmp_path / "r").exists()
    assert not data_dir.exists()


def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_epoch = pyrovae.train.train_epoch
    calls = []

    def poisoned_epoch(loss_fn, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                next(loss_fn.parameters()).fill_(math.nan)
        return real_epoch(loss_fn, *args, **kwargs)

    monkeypatch.setattr(pyrovae.train, "train_epoch", poisoned_epoch)
    out = tmp_path / "run"
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "3", "--out", str(out))
    assert_one_line_error(result, "diverged in epoch 2", "epoch 1 is kept")
    payload = torch.load(out / "checkpoint.pt", weights_only=True)
    assert payload["epoch"] == 1
    assert all(t.isfinite().all() for t in payload["model"].values())
    assert len(read_metrics(out)) == 1


def test_nan_in_the_first_epoch_leaves_nothing(tmp_path, monkeypatch):
    real_epoch = pyrovae.train.train_epoch

    def poisoned_epoch(loss_fn, *args, **kwargs):
        with torch.no_grad():
            next(loss_fn.parameters()).fill_(math.nan)
        return real_epoch(loss_fn, *args, **kwargs)

    monkeypatch.setattr(pyrovae.train, "train_epoch", poisoned_epoch)
    out = tmp_path / "run"
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "3", "--out", str(out))
    assert_one_line_error(result, "diverged in epoch 1", "nothing is kept")
    assert not out.exists()


def test_help_lists_every_option():
    result = subprocess.run(
        [sys.executable, "cli.py", "fit", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for option in (
        "--dataset",
        "--data-dir",
        "--epochs",
        "--batch-size",
        "--lr",
        "--z-dim",
        "--hidden-dims",
        "--elbo",
        "--seed",
        "--device",
        "--out",
    ):
        assert option in result.stdout


def test_fit_one_epoch_of_fashion_mnist_in_a_subprocess(data_dir, tmp_path):
    out = tmp_path / "R"
    subprocess.run(
        [
            sys.executable,
            "cli.py",
            "fit",
            "--dataset",
            "fashionmnist",
            "--data-dir",
            str(data_dir),
            "--epochs",
            "1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert RUN_FILES <= {p.name for p in out.iterdir()}
    (row,) = read_metrics(out)
    # One epoch of the default model lifts the ELBO far above an untrained model's (about -543).
    assert -300 < float(row["test_elbo"]) < 0


def test_evaluate_writes_its_json(synthetic_run):
    result = invoke("evaluate", str(synthetic_run), "--num-samples", "50", "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((synthetic_run / "evaluation.json").read_text())
    assert printed == written
    assert {"elbo", "log_px", "log_px_stderr", "num_samples", "num_points"} <= set(written)
    assert written["num_samples"] == 50 and written["num_points"] == 200
    assert written["log_px"] >= written["elbo"]
    assert written["bits_per_dim"] == pytest.approx(-written["log_px"] / (784 * math.log(2)))


def test_evaluate_prints_a_summary(synthetic_run):
    result = invoke("evaluate", str(synthetic_run), "--num-samples", "20")
    assert result.exit_code == 0, result.output
    assert "log p(x), IS estimate" in result.output and "bits per dimension" in result.output


@pytest.mark.parametrize(
    "options, compiled",
    [
        (["--num-samples", "5"], True),
        (["--num-samples", "4"], False),
        (["--num-samples", "5", "--no-compile"], False),
        (["--num-samples", "4", "--compile"], True),
    ],
)
def test_evaluate_compiles_by_default_only_jobs_that_repay_it(synthetic_run, monkeypatch, options, compiled):
    # 200 test images: 5 samples each reach the (lowered) threshold of 1,000 image-samples, 4 do not.
    monkeypatch.setattr(pyrovae.evaluate, "COMPILE_FROM", 1000)
    calls = []
    real = pyrovae.evaluate.importance_estimate

    def spy(*args, **kwargs):
        calls.append(args[-1])
        return real(*args[:-1], False, **kwargs)

    monkeypatch.setattr(pyrovae.evaluate, "importance_estimate", spy)
    result = invoke("evaluate", str(synthetic_run), *options)
    assert result.exit_code == 0, result.output
    assert calls == [compiled]


def test_evaluate_an_empty_folder_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("evaluate", str(tmp_path)), "no checkpoint at")


@pytest.mark.parametrize("kind", ["folder", "pipe"])
def test_a_checkpoint_that_is_no_file_is_named_for_what_it_is(tmp_path, kind):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.mkdir() if kind == "folder" else os.mkfifo(checkpoint)
    said = "it is a folder" if kind == "folder" else "not a regular file"
    for command in (["evaluate", str(tmp_path)], ["fit", "--resume", str(tmp_path)]):
        assert_one_line_error(invoke(*command), f"no checkpoint at {checkpoint}: {said}")


def test_evaluate_a_foreign_checkpoint_is_a_one_line_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    assert_one_line_error(invoke("evaluate", str(tmp_path)), "not a readable pyrovae checkpoint")


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_a_one_line_error(synthetic_run, tmp_path):
    payload = torch.load(synthetic_run / "checkpoint.pt", weights_only=True)
    payload["config"]["model"]["z_dim"] += 1
    torch.save(payload, tmp_path / "checkpoint.pt")
    assert_one_line_error(
        invoke("reconstruct", str(tmp_path)), "do not fit its config", "guide.encoder", "in the checkpoint"
    )
