import os
from pathlib import Path

import pyro
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
