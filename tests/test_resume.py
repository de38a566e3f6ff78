"""Crash-safe runs: SIGKILL in the middle of an epoch, then ``fit --resume``, ends as an unbroken run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyrovae.io import read_metrics
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
FIT = [sys.executable, "cli.py", "fit", "--dataset", "synthetic", "--epochs", "6", "--batch-size", "8",
       "--z-dim", "2", "--hidden-dims", "32"]  # fmt: skip


def _rows(run: Path) -> int:
    try:
        return len(read_metrics(run))
    except (FileNotFoundError, ValueError):
        return 0


@pytest.mark.parametrize(
    "protocol",
    [[], ["--num-particles", "3", "--elbo", "iwae", "--warmup", "3", "--validation", "200"]],
    ids=["default", "particles-warmup-validation"],
)
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, protocol):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    fit = [*FIT, *protocol]
    subprocess.run([*fit, "--out", str(whole)], cwd=ROOT, check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen([*fit, "--out", str(broken)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while _rows(broken) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.15)  # into epoch 3: an epoch takes about half a second here
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = _rows(broken)
    assert 2 <= done < 6, f"the kill should land mid-run, after {done} epochs"

    subprocess.run(
        [*FIT[:3], "--resume", str(broken)], cwd=ROOT, check=True, capture_output=True, timeout=300
    )

    expected, got = read_metrics(whole), read_metrics(broken)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5, 6]
    for key in ("train_elbo", "valid_elbo", "test_elbo"):
        assert [r[key] for r in got] == [r[key] for r in expected]
    for checkpoint in ("checkpoint.pt", "checkpoint-best.pt"):
        if not (whole / checkpoint).exists():
            assert not (broken / checkpoint).exists()
            continue
        a = torch.load(whole / checkpoint, weights_only=True)
        b = torch.load(broken / checkpoint, weights_only=True)
        assert a["epoch"] == b["epoch"]
        for name, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][name]), name


def test_resume_with_contradicting_options_is_refused(synthetic_run):
    before = (synthetic_run / "checkpoint.pt").read_bytes()
    result = invoke("fit", "--resume", str(synthetic_run), "--z-dim", "5", "--lr", "0.01")
    assert_one_line_error(result, "cannot be resumed", "--z-dim 5", "--lr 0.01")
    result = invoke("fit", "--resume", str(synthetic_run), "--epochs", "3")
    assert_one_line_error(result, "already trained 10 epochs")
    assert (synthetic_run / "checkpoint.pt").read_bytes() == before


def test_resume_refuses_a_config_file_it_would_ignore(synthetic_run, tmp_path):
    (tmp_path / "more.toml").write_text("epochs = 12\n")  # was ignored: the run stayed at its 10 epochs
    before = (synthetic_run / "checkpoint.pt").read_bytes()
    result = invoke("fit", "--resume", str(synthetic_run), "--config", str(tmp_path / "more.toml"))
    assert_one_line_error(result, "--config cannot be given with --resume", "--epochs")
    assert (synthetic_run / "checkpoint.pt").read_bytes() == before


def test_truncated_checkpoint_is_a_one_line_error(synthetic_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    data = (synthetic_run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    (run / "config.json").write_bytes((synthetic_run / "config.json").read_bytes())
    for args in (["fit", "--resume", str(run)], ["evaluate", str(run)], ["sample", str(run)]):
        assert_one_line_error(invoke(*args), "not a readable pyrovae checkpoint")


def test_foreign_checkpoint_is_a_one_line_error(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "checkpoint.pt")
    assert_one_line_error(invoke("fit", "--resume", str(tmp_path)), "is not a pyrovae checkpoint")


def test_empty_run_directory_is_a_one_line_error(tmp_path):
    assert_one_line_error(invoke("fit", "--resume", str(tmp_path)), "no checkpoint at")


def test_run_killed_in_its_first_epoch_is_not_silently_restarted(synthetic_run, tmp_path):
    (tmp_path / "config.json").write_bytes((synthetic_run / "config.json").read_bytes())
    assert_one_line_error(invoke("fit", "--resume", str(tmp_path)), "stopped before its first epoch ended")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
