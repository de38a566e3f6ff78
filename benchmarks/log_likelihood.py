"""Benchmark: importance-sampled log p(x) against the bare encoder and decoder passes it needs.

Both sides see the same images, K and chunking, in one run, alternated over repeats; the ratio
(estimator time) / (bare passes time) is the overhead of doing it the Pyro way, with log-probs,
bookkeeping and the running logsumexp.

    python benchmarks/log_likelihood.py --run-dir RUN --num-points 10000 --num-samples 5000
"""

from __future__ import annotations

import statistics
import time

import click
import pyro
import torch

from pyrovae.data import binarize_fixed, load_dataset
from pyrovae.importance import importance_estimate
from pyrovae.model import VAE
from pyrovae.runs import load_run
from pyrovae.train import resolve_device


@torch.no_grad()
def bare_passes(vae: VAE, x: torch.Tensor, num_samples: int, chunk_size: int, batch_size: int):
    """The networks alone: encode each batch, draw the same number of z, decode every one."""
    for rows in x.split(batch_size):
        loc, scale = vae.guide.encoder(rows)
        for start in range(0, num_samples, chunk_size):
            size = min(chunk_size, num_samples - start)
            z = loc + scale * torch.randn(size, *loc.shape, device=x.device)  # (size, n, z_dim)
            vae.model.decoder(z)  # (size, n, D)


def _timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


@click.command()
@click.option("--run-dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--data-dir", default=None)
@click.option("--num-points", type=click.IntRange(min=1), default=10000)
@click.option("--num-samples", type=click.IntRange(min=1), default=5000)
@click.option("--chunk-size", type=click.IntRange(min=1), default=500)
@click.option("--batch-size", type=click.IntRange(min=1), default=100)
@click.option("--repeats", type=click.IntRange(min=1), default=3)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--compile/--no-compile", default=True)  # evaluate's choice for its own jobs of this size
def main(run_dir, data_dir, num_points, num_samples, chunk_size, batch_size, repeats, device, compile):
    device = resolve_device(device)
    vae, config, _ = load_run(run_dir, device)
    data = load_dataset(config.dataset, data_dir or config.data_dir, config.test_fraction)
    x = binarize_fixed(data.x_test[:num_points]).to(device)
    pyro.set_rng_seed(0)
    print(
        f"{config.dataset}: {len(x)} test images, K = {num_samples}, chunk {chunk_size}, batch {batch_size}, "
        f"compile {compile}, on {device} ({torch.get_num_threads()} threads), {repeats} repeats"
    )

    def estimate(rows, k):
        return importance_estimate(vae.model, vae.guide, rows, k, chunk_size, batch_size, compile)

    estimate(x[:batch_size], chunk_size)  # warm-up, untimed: compilation happens once per process
    times = {"log_likelihood": [], "bare passes": []}
    for _ in range(repeats):
        times["log_likelihood"].append(_timed(lambda: estimate(x, num_samples)))
        times["bare passes"].append(_timed(lambda: bare_passes(vae, x, num_samples, chunk_size, batch_size)))
    for name, t in times.items():
        print(f"  {name:15s} median {statistics.median(t):8.2f} s   all {[round(s, 2) for s in t]}")
    ratio = statistics.median(times["log_likelihood"]) / statistics.median(times["bare passes"])
    print(f"  ratio log_likelihood / bare passes: {ratio:.3f}")


if __name__ == "__main__":
    main()
