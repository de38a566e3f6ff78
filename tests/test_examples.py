"""Every example runs, on tiny synthetic data, as its docstring says."""

import importlib.util
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def registries_as_they_were():
    """An example registers its part at import; other tests must not see it (a name they use as
    unknown, say), so every registry is put back after each test here."""
    from pyrovae.guides import GUIDES
    from pyrovae.likelihoods import LIKELIHOODS
    from pyrovae.loggers import LOGGERS
    from pyrovae.model import MODELS
    from pyrovae.networks import NETWORKS, SCALES
    from pyrovae.objectives import OBJECTIVES
    from pyrovae.priors import PRIORS

    tables = (GUIDES, LIKELIHOODS, LOGGERS, MODELS, NETWORKS, OBJECTIVES, PRIORS, SCALES)
    saved = [dict(table) for table in tables]
    yield
    for table, before in zip(tables, saved, strict=True):
        table.clear()
        table.update(before)


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name", ["swap_likelihood", "swap_prior", "swap_network", "swap_guide", "swap_objective", "swap_scale"]
)
def test_example_trains_and_prints_log_px(name, tmp_path):
    example = load(name)
    args = ["--dataset", "synthetic", "--epochs", "2", "--num-samples", "20", "--num-points", "50",
            "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(example.main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "log p(x), IS estimate" in result.output and "bits per dimension" in result.output
    assert (tmp_path / "run" / "evaluation-first50.json").exists()


SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py"))


@pytest.mark.parametrize(
    "name, args, fragment",
    [(name, ["--dataset", "nonexistent"], "dataset 'nonexistent' is none of") for name in SCRIPTS]
    + [(name, ["--dataset", "synthetic", "--epochs", "0"], "epochs must be a positive integer")
       for name in SCRIPTS if name.startswith("swap_")],
)  # fmt: skip
def test_an_example_given_bad_input_says_so_in_one_line(name, args, fragment):
    result = CliRunner().invoke(load(name).main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ") and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1


def trained(name: str, run_dir: Path):
    """The model and config of example ``name``, trained 2 epochs on synthetic data into ``run_dir``."""
    from pyrovae.runs import load_run

    args = ["--dataset", "synthetic", "--epochs", "2", "--num-samples", "5", "--num-points", "10",
            "--out", str(run_dir)]  # fmt: skip
    assert CliRunner().invoke(load(name).main, args).exit_code == 0
    vae, config, _ = load_run(run_dir)
    return vae, config


def test_the_example_prior_is_learned(tmp_path):
    import torch

    vae, config = trained("swap_prior", tmp_path / "r")
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


def test_the_example_scale_is_the_log_variance_head_of_every_gaussian_the_networks_give(tmp_path):
    import torch

    vae, config = trained("swap_scale", tmp_path / "r")
    assert config.model.scale == "log-variance"
    x = torch.rand(3, 784).round()
    encoder = vae.guide.encoder
    raw = encoder.net(x).chunk(2, dim=-1)[1]  # (3, z_dim): the head's second half, log sigma^2
    _, sigma = encoder(x)
    assert torch.equal(sigma, torch.exp(0.5 * raw))
    assert torch.equal(vae.guide.posterior(x).base_dist.scale, sigma)
    assert not torch.allclose(sigma, torch.nn.functional.softplus(raw) + 1e-4)


def test_the_example_guide_learns_correlations_and_is_a_normalised_density(tmp_path):
    import pyro.distributions as dist
    import torch

    vae, config = trained("swap_guide", tmp_path / "r")
    assert config.model.guide == "full-covariance"
    x = torch.rand(3, 784).round()
    q = vae.guide.posterior(x)
    scale_tril = q.scale_tril  # (3, d, d): the encoder's scales on the diagonal, learned values below it
    assert torch.equal(scale_tril.triu(1), torch.zeros_like(scale_tril))
    assert torch.allclose(scale_tril.diagonal(dim1=-2, dim2=-1), vae.guide.encoder(x)[1])
    assert scale_tril.tril(-1).abs().sum() > 0
    # its log-density is the same Gaussian's, written out
    z = q.sample()
    full = dist.MultivariateNormal(q.loc, covariance_matrix=scale_tril @ scale_tril.mT)
    assert torch.allclose(q.log_prob(z), full.log_prob(z), atol=1e-4)


def test_the_example_objective_is_iwae_at_alpha_0_and_the_elbo_as_alpha_goes_to_1():
    import torch

    example = load("swap_objective")
    log_w = torch.randn(5, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    renyi = example.RenyiBound(num_particles=5, max_plate_nesting=1)
    by_hand = 2 * ((0.5 * log_w).exp().mean(0)).log()  # 1/(1 - a) log mean_k w_k^(1 - a), a = 1/2
    assert torch.allclose(renyi.bound(log_w), by_hand)
    renyi.alpha = 0.0
    assert torch.allclose(renyi.bound(log_w), log_w.logsumexp(0) - torch.log(torch.tensor(5.0)))
    renyi.alpha = 1 - 1e-6
    assert torch.allclose(renyi.bound(log_w), log_w.mean(0), atol=1e-4)
    assert torch.allclose(renyi.static_loss(log_w), -renyi.bound(log_w).sum())


def _table_of(script: str, tmp_path, **env: str) -> list[list[str]]:
    """The Markdown table rows (cells, header and rule left out) that ``examples/SCRIPT`` prints, run
    on the synthetic data for 1 epoch into ``tmp_path/out`` (not made beforehand: the script makes it)."""
    import subprocess
    import sys

    result = subprocess.run(
        ["bash", str(EXAMPLES / script), str(tmp_path / "data"), str(tmp_path / "out"), "1"],
        cwd=EXAMPLES.parent,
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return [line.split("|")[1:-1] for line in result.stdout.splitlines()[2:]]


def test_measure_swaps_prints_one_row_per_likelihood_and_prior(tmp_path):
    rows = _table_of("measure_swaps.sh", tmp_path, DATASET="synthetic", NUM_SAMPLES="5")
    assert len(rows) == 7 and {r[1].strip() for r in rows} >= {"bernoulli", "discretized-logistic"}
    for row in rows:
        elbo, log_px = float(row[4]), float(row[5].split("±")[0])
        assert log_px >= elbo  # the same K weights: the log of their mean is at least their mean log


def test_measure_guides_prints_one_row_per_guide_and_model(tmp_path):
    rows = _table_of("measure_guides.sh", tmp_path, DATASETS="synthetic", NUM_SAMPLES="5", NUM_POINTS="8")
    assert [r[1].strip() for r in rows] == [
        "(defaults)", "`--guide iaf --num-flows 2`", "`--guide iaf --num-flows 4`",
        "`--guide planar --num-flows 4`", "`--guide spline --num-flows 1`", "`--model hvae`",
    ]  # fmt: skip
    for row in rows:
        elbo, log_px, gap = float(row[2]), float(row[3].strip("* ")), float(row[4])
        assert log_px >= elbo and abs(gap - (log_px - elbo)) < 0.011  # the same K weights
        assert int(row[7].replace(",", "")) > 0
