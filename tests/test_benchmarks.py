"""The benchmarks still run: each script at its smallest setting, in a process of its own, on the synthetic
data or a small fitted run, its table read back. No figure is checked (timings belong to the benchmarks'
own runs, side by side, never to tests): these catch a script that no longer runs against the library
whose figures the README and docs/performance.md quote from it."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import commands

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
NUMBER = r"-?\d[\d,]*\.?\d*(?:e[+-]?\d+)?"


def benchmark(script: str, *args: str, launcher: tuple[str, ...] = ()) -> str:
    command = [sys.executable, *launcher, str(ROOT / "benchmarks" / script), *args]
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def table_rows(output: str, first_cell: str) -> list[list[str]]:
    """The cells of each Markdown row whose first cell starts with ``first_cell``."""
    lines = [line for line in output.splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [row for row in rows if row[0].startswith(first_cell)]


def test_speed_times_both_loops_each_part_and_the_log_likelihood_rate():
    out = benchmark(
        "speed.py", "--dataset", "synthetic", "--repeats", "1", "--settings", "trace:1,iwae:2", "--parts",
        "--is-points", "4", "--is-samples", "8",
    )  # fmt: skip
    for setting in ("trace, K = 1", "iwae, K = 2"):
        (row,) = table_rows(out, setting)
        assert all(re.fullmatch(r"\**" + NUMBER + r"\**", cell.split(" ")[0]) for cell in row[1:4]), row
    for part in ("data: index, binarize", "backward", "optimizer (fused Adam)", "whole forward, static path"):
        assert re.search(re.escape(part) + r"\s+" + NUMBER + " ms", out), part
    assert re.search(r"log p\(x\): 4 images x K = 8 in " + NUMBER + " s", out)


def test_roofline_counts_an_epoch_and_a_recipe():
    out = benchmark("roofline.py", "--dataset", "synthetic", "--repeats", "1")
    assert re.search(r"pyrovae's epoch: " + NUMBER + r" s \(best of 1\), " + NUMBER + " GFLOP/s", out), out
    out = benchmark("roofline.py", "--recipe", str(ROOT / "recipes" / "mnist-hvae.toml"), "--repeats", "1")
    assert re.search(r"mnist-hvae.toml: " + NUMBER + " MFLOP an image", out), out


def test_log_likelihood_and_gradient_variance_read_a_fitted_run(synthetic_run):
    out = benchmark(
        "log_likelihood.py", "--run-dir", str(synthetic_run), "--num-points", "4", "--num-samples", "8",
        "--chunk-size", "4", "--repeats", "1", "--no-compile",
    )  # fmt: skip
    assert re.search(r"ratio log_likelihood / bare passes: " + NUMBER, out), out
    out = benchmark(
        "gradient_variance.py", "--run-dir", str(synthetic_run), "--num-points", "2", "--draws", "3",
        "--ks", "2,3",
    )  # fmt: skip
    assert [row[0] for row in table_rows(out, "")][2:] == ["2", "3"], out


def test_levers_times_its_single_operations():
    out = benchmark("levers.py", "--parts", "0", "2")
    assert re.search(r"binarize 128 x 784: bernoulli " + NUMBER, out), out
    assert "Bernoulli log-density, K = 5, pyrovae's node: forward" in out
    out = benchmark("levers.py", "--parts", "5", "--repeats", "1")
    assert re.search(r"HVAE training step .*: Pyro's traces " + NUMBER + ", static path " + NUMBER, out), out


def test_levers_times_the_iwae_with_subnormals_kept_and_flushed(data_dir):
    out = benchmark("levers.py", "--parts", "6", "--data-dir", str(data_dir), "--blocks", "1")
    for name in ("kept", "flushed to zero"):
        assert re.search(f"subnormals {name}.*: ms a step, by blocks of 100 steps: {NUMBER}$", out, re.M), out
    gap = re.search(r"largest difference between the two runs' losses \(nats an image\): (\S+)", out)
    assert float(gap.group(1)) < 5e-4, out  # below the last digit fit prints (here: 0, bit for bit)
    assert "part 6 skipped" in benchmark("levers.py", "--parts", "6")


def test_memory_estimate_child_measures_a_pass():
    """One of the benchmark's children (the whole table takes minutes: a fresh process per figure)."""
    out = benchmark("memory_estimate.py", "--child", '[{"arch": "gated", "family": "hvae"}, 4, true]')
    assert int(out) >= 0


def test_allreduce_under_torchrun():
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    out = benchmark("allreduce.py", "--steps", "3", "--data-size", "1000", launcher=launcher)
    header = r"2 processes \(gloo, 1 thread\(s\) each\): all-reduce of [\d,]+ float32 gradients: median "
    assert re.search(header + NUMBER + " ms per step", out), out


@pytest.mark.parametrize("name", commands.STARTUP)
def test_commands_startup_statements_run(name):
    """What ``commands.py --only startup`` times, each in a fresh process there, run here once."""
    setup, statement = commands.STARTUP[name]
    namespace: dict = {}
    exec(f"{setup}\n{statement}", namespace)


@pytest.mark.slow
def test_the_hand_written_loop_trains_an_epoch_on_real_data(data_dir):
    out = benchmark("hand_vae.py", "--data-dir", str(data_dir), "--dataset", "mnist", "--epochs", "1")
    assert re.fullmatch(r"epoch 1 " + NUMBER + " train ELBO " + NUMBER + r"\n", out), out
