"""Benchmark, run under torchrun: the cost of DDP's gradient all-reduce per training step.

Times ``all_reduce`` of one flat float32 buffer holding as many values as the model has parameters (DDP
reduces the gradients in buckets of up to 25 MB: one bucket for the default 652,824 parameters), and
prints it per step and per epoch of ``--batch-size`` images.

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/allreduce.py --data-size 60000
"""

from __future__ import annotations

import math
import statistics
import time

import click
import torch
import torch.distributed as dist

from pyrovae import distributed
from pyrovae.config import ModelConfig
from pyrovae.model import VAE


@click.command()
@click.option("--steps", type=click.IntRange(min=1), default=200)
@click.option("--batch-size", type=click.IntRange(min=1), default=128)
@click.option("--data-size", type=click.IntRange(min=1), default=60000, help="Training images per epoch.")
def main(steps: int, batch_size: int, data_size: int) -> None:
    with distributed.process_group(torch.device("cpu")) as group:
        if not group.active:
            raise click.UsageError("run it under torchrun with 2 or more processes")
        count = sum(p.numel() for p in VAE(ModelConfig()).parameters())
        buffer = torch.randn(count)
        for _ in range(10):  # warm-up: connections made, buffers touched
            dist.all_reduce(buffer)
        times = []
        for _ in range(steps):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(buffer)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        if group.is_main:
            per_epoch = math.ceil(data_size / batch_size)
            print(
                f"{group.world_size} processes (gloo, {torch.get_num_threads()} thread(s) each): "
                f"all-reduce of {count:,} float32 gradients: median {median * 1e3:.2f} ms per step "
                f"({min(times) * 1e3:.2f}-{max(times) * 1e3:.2f}), {median * per_epoch:.2f} s per epoch of "
                f"{per_epoch} steps"
            )


if __name__ == "__main__":
    main()
