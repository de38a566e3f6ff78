"""Benchmark: a pyrovae training epoch against the same epoch written by hand, side by side in one run.

(a) pyrovae: ``Trace_ELBO()(model, guide)`` stepped by ``torch.optim.Adam`` (what ``fit`` runs);
(b) baseline: the closed-form objective of ``pyrovae/baseline.py`` with the same Adam.
Same networks and initial weights, same data (uint8 on the device, binarized per batch), batch size and
seed; (a) and (b) alternate over the repeats; the medians and the ratio (a)/(b) are printed. Then the
importance-sampled log p(x) throughput (importance samples scored per second).

    python benchmarks/speed.py --data-dir ../shared/data --batch-size 128 --repeats 5
"""

from __future__ import annotations

import copy
import statistics
import time

import click
import pyro
import torch

from pyrovae.baseline import ClosedFormLoss
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.data import binarize_fixed, load_dataset
from pyrovae.importance import importance_estimate
from pyrovae.model import VAE
from pyrovae.train import adam, elbo_loss, resolve_device, train_epoch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_epoch(loss_fn, optimizer, x: torch.Tensor, batch_size: int) -> float:
    _sync(x.device)
    start = time.perf_counter()
    float(train_epoch(loss_fn, optimizer, x, batch_size))  # one host sync, at the end, as in fit
    _sync(x.device)
    return time.perf_counter() - start


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size)
@click.option("--repeats", type=click.IntRange(min=1), default=5)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--is-points", type=click.IntRange(min=0), default=100, help="Images for the log p(x) rate.")
@click.option("--is-samples", type=click.IntRange(min=1), default=5000)
@click.option("--same-optimizer", is_flag=True, help="Plain torch.optim.Adam on both sides.")
def main(dataset, data_dir, batch_size, repeats, device, is_points, is_samples, same_optimizer):
    device = resolve_device(device)
    data = load_dataset(dataset, data_dir).to(device)
    pyro.set_rng_seed(0)
    vae = VAE(ModelConfig(image_shape=data.image_shape)).to(device)
    twin = copy.deepcopy(vae)
    losses = {
        "pyrovae": elbo_loss(vae),
        "baseline": ClosedFormLoss(twin.guide.encoder, twin.model.decoder),
    }
    # pyrovae's optimizer is what fit uses (fused Adam where torch has it); the baseline's is plain
    # torch.optim.Adam, as a notebook writes it. --same-optimizer gives both the plain one.
    optimizers = {
        "pyrovae": torch.optim.Adam(losses["pyrovae"].parameters(), lr=1e-3)
        if same_optimizer
        else adam(losses["pyrovae"].parameters(), lr=1e-3),
        "baseline": torch.optim.Adam(losses["baseline"].parameters(), lr=1e-3),
    }
    print(
        f"{dataset}: {len(data.x_train)} images an epoch, batch {batch_size}, on {device} "
        f"({torch.get_num_threads()} threads), torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{repeats} repeats after one warm-up epoch each; pyrovae's optimizer: "
        f"{'plain Adam' if same_optimizer else 'fit' + chr(39) + 's (fused Adam)'}"
    )
    times: dict[str, list[float]] = {name: [] for name in losses}
    for repeat in range(repeats + 1):
        for name, loss_fn in losses.items():
            pyro.set_rng_seed(repeat)
            seconds = timed_epoch(loss_fn, optimizers[name], data.x_train, batch_size)
            if repeat > 0:
                times[name].append(seconds)
    for name, t in times.items():
        print(f"  {name:9s} epoch: median {statistics.median(t):7.3f} s   all {[round(s, 3) for s in t]}")
    ratio = statistics.median(times["pyrovae"]) / statistics.median(times["baseline"])
    print(f"  ratio pyrovae / baseline: {ratio:.3f}")

    if is_points:
        x = binarize_fixed(data.x_test[:is_points])
        importance_estimate(vae.model, vae.guide, x[:10], num_samples=500)  # warm-up
        _sync(device)
        start = time.perf_counter()
        importance_estimate(vae.model, vae.guide, x, num_samples=is_samples)
        _sync(device)
        seconds = time.perf_counter() - start
        rate = is_points * is_samples / seconds
        print(f"  log p(x): {is_points} images x K = {is_samples} in {seconds:.2f} s = {rate:,.0f} samples/s")


if __name__ == "__main__":
    main()
