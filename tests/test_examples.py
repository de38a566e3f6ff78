"""Every example runs, on tiny synthetic data, as its docstring says."""

import importlib.util
from pathlib import Path

import pytest
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["swap_likelihood", "swap_prior"])
def test_example_trains_and_prints_log_px(name, tmp_path):
    example = load(name)
    args = ["--dataset", "synthetic", "--epochs", "2", "--num-samples", "20", "--num-points", "50",
            "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(example.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "log p(x), IS estimate" in result.output and "bits per dimension" in result.output
    assert (tmp_path / "run" / "evaluation-first50.json").exists()


def test_the_example_prior_is_learned(tmp_path):
    import torch

    from pyrovae.runs import load_run

    args = ["--dataset", "synthetic", "--epochs", "2", "--num-samples", "5", "--num-points", "10",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert CliRunner().invoke(load("swap_prior").main, args).exit_code == 0
    vae, config, _ = load_run(tmp_path / "r")
    assert config.model.prior == "learned-normal"
    assert not torch.equal(vae.model.p_z.loc, torch.zeros_like(vae.model.p_z.loc))


def test_a_model_and_guide_of_your_own_train_and_score(tmp_path):
    """``examples/custom_model.py``: plain Pyro functions, pyrovae's loop and estimator; training helps."""
    from pyrovae.data import synthetic_dataset

    example = load("custom_model")
    data = synthetic_dataset()
    untrained = example.fit_and_score(data, 0, "iwae", 3, num_samples=50, num_points=100)
    trained = example.fit_and_score(data, 3, "iwae", 3, num_samples=50, num_points=100)
    assert trained["log_px"] >= trained["elbo"]
    assert trained["log_px"] > untrained["log_px"] + 50  # far from the untrained ~ -D log 2 = -543
    args = ["--dataset", "synthetic", "--epochs", "1", "--num-samples", "10", "--num-points", "20"]
    result = CliRunner().invoke(example.main, args, catch_exceptions=False)
    assert result.exit_code == 0 and "IS log p(x)" in result.output, result.output
