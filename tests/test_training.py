"""Pyro and the hand-written baseline, trained side by side on real data, reach the same test ELBO."""

import copy

import pyro
import pytest
import torch

from pyrovae.baseline import ClosedFormLoss
from pyrovae.config import ModelConfig
from pyrovae.data import binarize_fixed, load_dataset
from pyrovae.model import VAE
from pyrovae.train import elbo_loss, evaluate_elbo, train_epoch

# The paired difference (Pyro minus baseline) of the test ELBO after 3 epochs of the default model on
# Fashion-MNIST, over training seeds 1-6 (this test's body with `pyro.set_rng_seed(s)` for s = 1..6;
# 2026-11-23, `r < x` binarization): -1.02, -0.40, -0.26, -0.26,
# -0.21, -0.30; mean -0.41, standard deviation 0.31. Pyro's Monte Carlo KL gives noisier gradients than
# the baseline's closed form, so it trails a little after so few steps. 1.7 nats is the mean's size
# plus 4 standard deviations; a wrong term in either objective (a dropped constant, a KL off by a
# factor) moves the ELBO by tens of nats. (Over 4 seeds of the first binarization the standard
# deviation was 0.26 and the tolerance 1.0, with the offset unmeasured.)
TOLERANCE_NATS = 1.7


@pytest.mark.slow
def test_pyro_and_baseline_reach_the_same_test_elbo(data_dir):
    data = load_dataset("fashionmnist", data_dir)
    x_test = binarize_fixed(data.x_test)
    pyro.set_rng_seed(0)
    vae = VAE(ModelConfig())
    twin = copy.deepcopy(vae)
    losses = {
        "pyro": elbo_loss(vae),
        "baseline": ClosedFormLoss(twin.guide.encoder, twin.model.decoder),
    }
    test_elbo = {}
    for name, loss_fn in losses.items():
        optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-3)
        pyro.set_rng_seed(1)
        for _ in range(3):
            train_epoch(loss_fn, optimizer, data.x_train, batch_size=128)
        test_elbo[name] = evaluate_elbo(loss_fn, x_test, batch_size=1000)
    assert -260 < test_elbo["pyro"] < -240, test_elbo
    assert abs(test_elbo["pyro"] - test_elbo["baseline"]) < TOLERANCE_NATS, test_elbo
