"""Pyro and the hand-written baseline, trained side by side on real data, reach the same test ELBO."""

import copy
import os
import subprocess
import sys

import pyro
import pytest
import torch

from pyrovae.baseline import ClosedFormLoss
from pyrovae.config import ModelConfig, TrainConfig
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


# In a fresh process: the setting is each thread's own, and torch's worker threads take it as they start.
_FLUSH_PROBE = """
import json, sys, torch
from pyrovae import train
from pyrovae.config import ModelConfig, TrainConfig

def flushed() -> float:  # the fraction of a product split across the worker threads that is flushed
    return (torch.full((4 * 10**6,), 1e-30) * 1e-10).eq(0).float().mean().item()

seen = []
probe = lambda line: seen.append(flushed()) if not seen else None  # "fitting ...": data loaded, model built
flush, out, command = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if command == "fit":
    train.fit(TrainConfig(dataset="synthetic", epochs=1, batch_size=64, out=out, flush_denormal=flush,
                          model=ModelConfig(z_dim=2, hidden_dims=(16,))), log=probe)
else:
    train.resume(out, {"epochs": 2}, log=probe)
print(seen[0], flushed() if sys.float_info.min / 2 != 0 else "main thread left flushing")
"""


@pytest.mark.parametrize("flush", [True, False])
def test_fit_and_resume_flush_subnormals_in_every_thread_as_told(tmp_path, flush):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}  # two workers, so that a thread left out shows
    for command in ("fit", "resume"):  # each in a process of its own, as from the command line
        probe = [sys.executable, "-c", _FLUSH_PROBE, str(flush).lower(), str(tmp_path / "run"), command]
        result = subprocess.run(probe, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
        during, after = result.stdout.strip().splitlines()[-1].split(" ", 1)
        assert float(during) == (1.0 if flush else 0.0), command
        assert after != "main thread left flushing", command  # its setting is given back


def test_a_run_made_before_flush_denormal_keeps_subnormals():
    old = TrainConfig().to_dict()
    del old["flush_denormal"]
    assert TrainConfig.from_dict(old).flush_denormal is False
    assert TrainConfig().flush_denormal is True
