"""torchrun on the CPU (gloo, 2 processes): one DDP step equals one process's step with the same noise;
a 2-process fit and evaluate agree with 1 process; SIGKILL and resume continue like an unbroken run; a
bad input on one rank ends the job in one line. Each test launches real processes (a few seconds each)."""

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyro
import pytest
import torch

from pyrovae import distributed
from pyrovae.likelihoods import binarize
from tests import ddp_step
from tests.conftest import invoke
from tests.test_cli import RUN_FILES

ROOT = Path(__file__).resolve().parent.parent
CLI = str(ROOT / "cli.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def torchrun(*args: str, nproc: int = 2, **kwargs) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return subprocess.run([*command, *args], env=ENV, capture_output=True, text=True, timeout=300, **kwargs)


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_one_ddp_step_equals_one_process_with_the_same_noise(tmp_path):
    result = torchrun(str(ROOT / "tests" / "ddp_step.py"), str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-6000:]
    for objective, k, arch, guide, batch in ddp_step.SETTINGS:
        with pyro.settings.context(module_local_params=True):
            vae, loss_fn, optimizer = ddp_step.build(objective, k, arch, guide)
            x = ddp_step.X[:batch]
            # The global batch by hand: rank 0's order and noise, then rank 1's noise on its share.
            shares = torch.randperm(batch).tensor_split(2)
            loss_0 = loss_fn(binarize(x[shares[0]]))
            pyro.set_rng_seed(distributed.rank_seed(ddp_step.SEED, 1))
            loss_1 = loss_fn(binarize(x[shares[1]]))
            optimizer.zero_grad()
            (loss_0 + loss_1).backward()
            optimizer.step()
        ddp = torch.load(tmp_path / f"{objective}-{k}-{arch}-{guide}.pt", weights_only=True)
        grads = {name: p.grad for name, p in vae.named_parameters()}
        assert ddp["params"].keys() == vae.state_dict().keys() and ddp["grads"].keys() == grads.keys()
        for name, value in grads.items():  # the whole global batch's gradient: the loss scaled rightly
            torch.testing.assert_close(ddp["grads"][name], value, rtol=1e-4, atol=1e-4, msg=f"{arch}: {name}")
        # Adam's first step is lr * g / (|g| + eps), about lr * sign(g): where |g| is within the gradient
        # check's tolerance of 0 its rounding may move the step by up to 2 lr (lr is 1e-2 here); elsewhere the
        # step is the same to rounding.
        for name, value in vae.state_dict().items():
            grad = grads.get(name)
            clear = torch.ones_like(value, dtype=torch.bool) if grad is None else grad.abs() > 1e-3
            torch.testing.assert_close(
                ddp["params"][name][clear], value[clear], rtol=1e-5, atol=1e-6, msg=f"{arch}: {name}"
            )
            assert (ddp["params"][name] - value).abs().max() <= 2e-2 + 1e-6, f"{arch}: {name}"


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = torchrun(
        CLI, "fit", "--dataset", "synthetic", "--epochs", "2", "--device", "cpu", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch   2/2") == 1  # rank 0 alone speaks
    return out


def test_two_processes_fit_like_one_within_the_seed_to_seed_spread(two_process_run, tmp_path):
    assert RUN_FILES <= {p.name for p in two_process_run.iterdir()}
    two = float(metrics(two_process_run)[-1]["test_elbo"])
    ones = []
    for seed in range(4):
        out = tmp_path / f"one-{seed}"
        assert (
            invoke(
                "fit", "--dataset", "synthetic", "--epochs", "2", "--seed", str(seed), "--out", str(out)
            ).exit_code
            == 0
        )
        ones.append(float(metrics(out)[-1]["test_elbo"]))
    ones = torch.tensor(ones, dtype=torch.float64)
    # The 2-process run is one more draw of the same distribution: within 4 s.d. of a new draw's
    # deviation from the mean of 4 (the s.d. from the 4 seeds).
    spread = ones.std() * (1 + 1 / len(ones)) ** 0.5
    assert abs(two - ones.mean()) <= 4 * spread, (two, ones)


def test_evaluate_on_two_processes_agrees_with_one_within_its_monte_carlo_error(two_process_run):
    args = ("evaluate", str(two_process_run), "--num-samples", "100", "--no-compile", "--json")
    result = torchrun(CLI, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    two = json.loads(result.stdout)
    with open(two_process_run / "evaluation-images.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["index"]) for r in rows] == list(range(200))  # every image, gathered in order
    one = json.loads(invoke(*args).output)
    assert one["num_points"] == two["num_points"] == 200
    se = (one["log_px_stderr"] ** 2 + two["log_px_stderr"] ** 2) ** 0.5
    assert abs(one["log_px"] - two["log_px"]) <= 4 * se, (one["log_px"], two["log_px"], se)


def test_resume_on_another_number_of_processes_is_refused_in_one_line(two_process_run):
    from tests.test_cli import assert_one_line_error

    result = invoke("fit", "--resume", str(two_process_run), "--epochs", "3")
    assert_one_line_error(result, "trained on 2 process(es)", "resumed on 1")


def test_sigkill_of_the_job_then_resume_under_torchrun_continues_like_an_unbroken_run(tmp_path):
    args = ["fit", "--dataset", "synthetic", "--epochs", "12", "--batch-size", "16", "--validation", "100"]
    unbroken = tmp_path / "unbroken"
    assert torchrun(CLI, *args, "--out", str(unbroken)).returncode == 0
    broken = tmp_path / "broken"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", CLI]
    job = subprocess.Popen([*command, *args, "--out", str(broken)], env=ENV, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (broken / "metrics.csv").exists() or len(metrics(broken)) < 3:
        time.sleep(0.05)
    # The agent and both ranks, wherever they were (torchrun starts each rank in a session of its own).
    ranks = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == job.pid]
    os.killpg(job.pid, signal.SIGKILL)
    for pid in ranks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    job.wait()
    _wait_gone(ranks)
    done = len(metrics(broken))
    assert 3 <= done < 12
    result = torchrun(CLI, "fit", "--resume", str(broken))
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = metrics(unbroken), metrics(broken)
    assert len(a) == len(b) == 12
    for row_a, row_b in zip(a, b, strict=True):
        assert {k: v for k, v in row_a.items() if k != "seconds"} == {
            k: v for k, v in row_b.items() if k != "seconds"
        }


def _wait_gone(pids: list[int], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() and _state(pid) != "Z" for pid in pids):
            return True
        time.sleep(0.05)
    return False


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ranks' parent-death signal is Linux's")
def test_ranks_end_when_their_torchrun_agent_is_killed(tmp_path):
    """torchrun starts each rank in a session of its own: killing the agent alone must not leave them
    running (orphans would go on writing the run directory)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", CLI]
    job = subprocess.Popen([*command, "fit", "--dataset", "synthetic", "--epochs", "500", "--out", str(out)],
                           env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / "metrics.csv").exists():
        time.sleep(0.05)
    ranks = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _parent(p) == job.pid]
    assert len(ranks) == 2
    job.kill()  # SIGKILL: the agent has no chance to stop its ranks
    job.wait()
    try:
        assert _wait_gone(ranks), "ranks outlived their agent"
    finally:
        for pid in ranks:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert len(metrics(out)) < 500


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_bad_input_on_one_rank_ends_the_job_in_one_line_on_rank_0(tmp_path):
    """Two ranks started by hand (as torchrun would) with different options: rank 1's data is missing."""
    port, out = _free_port(), tmp_path / "run"
    processes = []
    for rank, data_dir in ((0, None), (1, tmp_path / "nothing-here")):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip
        data = (
            ["--dataset", "synthetic"]
            if data_dir is None
            else ["--dataset", "mnist", "--data-dir", str(data_dir)]
        )
        command = [sys.executable, CLI, "fit", *data, "--out", str(out)]
        processes.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = [p.communicate(timeout=120) for p in processes]
    (_, err_0), (out_1, err_1) = outputs
    # rank 1 once died of SIGABRT (-6) here, in one run of many: its stderr says why, should it again
    assert [p.returncode for p in processes] == [1, 1], (err_0[-3000:], err_1[-3000:])
    errors = [line for line in err_0.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "rank 1: mnist not found" in errors[0], err_0
    assert "Traceback" not in err_0 and not out_1 and "Error" not in err_1
    assert not out.exists()
