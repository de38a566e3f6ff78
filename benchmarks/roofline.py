"""Benchmark: the arithmetic of a training epoch against what this machine's matrix multiply can do.

(1) FLOPs of one training step of the default model, counted by torch's ``FlopCounterMode`` (the matrix
    products of forward and backward; the element-wise work is a few percent more and not counted),
    times the steps of an epoch;
(2) the machine's peak: a large float32 matrix product (4096 x 4096) on every thread torch uses, and the
    step's own shapes (a batch of 128 through the 784-400 layers), the best of several runs;
(3) pyrovae's epoch (``train_epoch``, what ``fit`` runs), timed, and its rate as a fraction of both.

    python benchmarks/roofline.py --data-dir ../shared/data --repeats 3

With ``--recipe FILE``, (1) and (2) for a recipe's model, objective and batch instead (random binary
images of its data set's 60,000 training images less its validation split), and the least time its
epochs could take here: the FLOPs at the peak rate.

    python benchmarks/roofline.py --recipe recipes/mnist-convhvae.toml
"""

from __future__ import annotations

import math
import time

import click
import pyro
import torch
from torch.utils.flop_counter import FlopCounterMode

from pyrovae.config import ModelConfig, TrainConfig, read_config_file
from pyrovae.data import load_dataset
from pyrovae.likelihoods import binarize
from pyrovae.model import VAE
from pyrovae.train import adam, elbo_loss, train_epoch


def best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_rate(m: int, k: int, n: int, repeats: int, inner: int) -> float:
    """FLOP/s of ``(m, k) @ (k, n)`` in float32, the best of ``repeats`` runs of ``inner`` products."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)

    def run():
        for _ in range(inner):
            torch.mm(a, b, out=out)

    return 2 * m * k * n * inner / best_seconds(run, repeats)


def recipe_bound(path: str, repeats: int) -> None:
    values = read_config_file(path)
    model = ModelConfig(**values.pop("model"))
    config = TrainConfig(**values, model=model)
    pyro.set_rng_seed(0)
    loss_fn = elbo_loss(VAE(config.model), config.elbo, config.num_particles)
    x = (torch.rand(config.batch_size, config.model.x_dim) < 0.5).float()
    with FlopCounterMode(display=False) as counter:
        loss_fn(x).backward()
    step_flops = counter.get_total_flops()
    steps = math.ceil((60000 - config.validation) / config.batch_size)
    peak = matmul_rate(4096, 4096, 4096, repeats, 1)
    epoch = step_flops * steps / peak
    print(
        f"{path}: {step_flops / config.batch_size / 1e6:.1f} MFLOP an image (forward and backward, "
        f"{config.elbo}, K = {config.num_particles}), {step_flops * steps / 1e12:.2f} TFLOP a training epoch "
        f"of {steps} steps; at this machine's peak of {peak / 1e9:.1f} GFLOP/s at least {epoch:.1f} s an "
        f"epoch, {epoch * config.epochs / 3600:.1f} h for its {config.epochs} epochs (validation not counted)"
    )


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--repeats", type=click.IntRange(min=1), default=3)
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False), default=None)
def main(dataset, data_dir, repeats, recipe):
    pyro.settings.set(module_local_params=True)
    if recipe is not None:
        return recipe_bound(recipe, repeats)
    data = load_dataset(dataset, data_dir)
    batch = TrainConfig.batch_size
    pyro.set_rng_seed(0)
    vae = VAE(ModelConfig(image_shape=data.image_shape))
    loss_fn = elbo_loss(vae)
    optimizer = adam(loss_fn.parameters(), 1e-3)
    x = binarize(data.x_train[:batch])
    with FlopCounterMode(display=False) as counter:
        loss_fn(x).backward()
    optimizer.zero_grad(set_to_none=True)
    step_flops = counter.get_total_flops()
    steps = math.ceil(len(data.x_train) / batch)
    epoch_flops = step_flops * steps  # the last, smaller batch counted as full: 0.03% too many
    print(
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; {dataset}, batch {batch}, "
        f"{steps} steps an epoch"
    )
    print(f"  matrix-product FLOPs: {step_flops / 1e6:.1f} M a step, {epoch_flops / 1e12:.3f} T an epoch")
    peak = matmul_rate(4096, 4096, 4096, repeats, 1)
    shaped = matmul_rate(batch, 784, 400, repeats, 200)
    print(f"  peak, float32 4096 x 4096 product: {peak / 1e9:.1f} GFLOP/s")
    print(f"  the step's shape, (128 x 784) @ (784 x 400): {shaped / 1e9:.1f} GFLOP/s")
    seconds = best_seconds(lambda: train_epoch(loss_fn, optimizer, data.x_train, batch), repeats)
    rate = epoch_flops / seconds
    print(
        f"  pyrovae's epoch: {seconds:.2f} s (best of {repeats}), {rate / 1e9:.1f} GFLOP/s: "
        f"{100 * rate / peak:.0f}% of the peak, {100 * rate / shaped:.0f}% of the step's shapes' rate"
    )


if __name__ == "__main__":
    main()
