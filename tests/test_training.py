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

# Spread of the test ELBO after 3 epochs of the default model on Fashion-MNIST, measured over 4 seeds
# (2026-11-20): standard deviation 0.20 nats (Pyro), 0.18 (baseline), 0.26 for the paired difference.
# 1.0 nat is about 4 standard deviations of the difference; a wrong term in either objective (a
# dropped constant, a KL off by a factor) moves the ELBO by tens of nats.
TOLERANCE_NATS = 1.0


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
