import os
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from click.testing import CliRunner

from pyrovae.data import binarize, synthetic_dataset


@pytest.fixture(autouse=True)
def known_state():
    """Every test starts as Pyro's own do: empty param store, validation on, a fixed seed."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST and Fashion-MNIST, from ``$PYROVAE_DATA``; tests that need them skip without."""
    path = os.environ.get("PYROVAE_DATA")
    if not path:
        pytest.skip("PYROVAE_DATA is not set: no real MNIST / Fashion-MNIST to test on")
    if not (Path(path) / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"PYROVAE_DATA={path} holds no FashionMNIST/raw folder")
    return Path(path)


@pytest.fixture
def x_small() -> torch.Tensor:
    """Sixteen binarized synthetic images, float64: (16, 784)."""
    g = torch.Generator().manual_seed(0)
    return binarize(synthetic_dataset(num_train=16, num_test=1).x_train, generator=g).double()


def invoke(*args: str):
    from cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    """A small VAE (z_dim 2) fitted by ``cli.py fit`` on the synthetic data for 10 epochs."""
    out = tmp_path_factory.mktemp("runs") / "synthetic"
    result = invoke(
        "fit",
        "--dataset",
        "synthetic",
        "--epochs",
        "10",
        "--batch-size",
        "32",
        "--z-dim",
        "2",
        "--hidden-dims",
        "64,32",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    return out


K_LATENT, D_OBS, SIGMA = 3, 5, 0.5


@pytest.fixture
def linear_gaussian():
    """``z ~ N(0, I_3)``, ``x = W z + b + sigma eps``: ``p(x) = N(b, W W^T + sigma^2 I)``."""
    g = torch.Generator().manual_seed(0)
    W = torch.randn(D_OBS, K_LATENT, generator=g, dtype=torch.float64)
    b = torch.randn(D_OBS, generator=g, dtype=torch.float64)
    marginal = dist.MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(D_OBS, dtype=torch.float64))
    x = marginal.sample((20,))
    # Exact posterior: precision M = I + W^T W / sigma^2, mean M^-1 W^T (x - b) / sigma^2.
    post_cov = torch.linalg.inv(torch.eye(K_LATENT, dtype=torch.float64) + W.T @ W / SIGMA**2)

    def model(x):
        with pyro.plate("batch", len(x)):  # not named "data": any plate over dim 0 of x will do
            z = pyro.sample("z", dist.Normal(torch.zeros(K_LATENT, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z @ W.T + b, SIGMA).to_event(1), obs=x)

    def post_loc(x):
        return (x - b) @ W @ post_cov / SIGMA**2

    def exact_guide(x):
        with pyro.plate("batch", len(x)):
            pyro.sample("z", dist.MultivariateNormal(post_loc(x), post_cov))

    def poor_guide(x):
        # Shifted and 1.5 times too wide: weights of finite variance, far from constant.
        scale = 1.5 * post_cov.diagonal().sqrt()
        with pyro.plate("batch", len(x)):
            pyro.sample("z", dist.Normal(post_loc(x) + 0.3, scale).to_event(1))

    return model, exact_guide, poor_guide, x, marginal.log_prob(x)
