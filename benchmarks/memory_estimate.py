"""Benchmark: the bytes ``pyrovae/memory.py`` counts for a pass of model and guide, against the memory the
pass really takes.

For each model, each figure in a fresh process: the growth of peak resident memory (Linux's ``VmHWM``,
reset through ``/proc/self/clear_refs``) over two training steps (Pyro's Trace_ELBO, Adam) at batches of
50 and 200 images, and over evaluate's importance weights (no gradients, 10 draws) for 10 and 40 images.
The slope between the two sizes, per image, leaves out the weights, gradients and Adam's state; beside
it, memory.py's count of the same pass per image, and their ratio, which ``memory.TRAINING_COPIES`` and
``memory.EVALUATION_COPIES`` must exceed.

    python benchmarks/memory_estimate.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pyro
import torch
from levers import _status_kib  # this folder is on the path of a benchmark run as a script

from pyrovae import memory
from pyrovae.config import ModelConfig

MODELS = {
    "gated VAE": {"arch": "gated"},
    "VampPrior (500)": {"arch": "gated", "prior": "vamp", "num_components": 500},
    "IAF (2 flows)": {"arch": "gated", "guide": "iaf", "num_flows": 2},
    "HVAE, gated": {"arch": "gated", "family": "hvae"},
    "ConvHVAE (gated-conv)": {"arch": "gated-conv", "family": "hvae"},
    "convolutions": {"arch": "conv"},
    "Student-t prior": {"prior": "studentt"},
    "Gaussian pixels": {"likelihood": "gaussian"},
    "colour, discretized logistic": {"image_shape": [3, 32, 32], "likelihood": "discretized-logistic"},
}
TRAIN_SIZES, EVAL_SIZES, EVAL_DRAWS = (50, 200), (10, 40), 10


def peak_growth_bytes(model: dict, images: int, training: bool) -> int:
    """The child: the growth of peak resident memory over two training steps, or one evaluation pass."""
    from pyrovae.importance import _log_weights, plate_dims
    from pyrovae.model import VAE
    from pyrovae.train import adam, elbo_loss

    torch.set_num_threads(1)
    pyro.settings.set(module_local_params=True)
    pyro.set_rng_seed(0)
    config = ModelConfig(**model)
    vae = VAE(config)
    x = torch.bernoulli(torch.full((images, config.x_dim), 0.3))
    if config.likelihood_name == "discretized-logistic":
        x = torch.randint(0, 256, x.shape).float() / 255
    loss_fn = elbo_loss(vae)
    optimizer = adam(loss_fn.parameters(), 1e-3)

    def step(rows):
        loss = loss_fn(rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def evaluation(rows):
        with torch.no_grad():
            _log_weights(vae.model, vae.guide, rows, EVAL_DRAWS, *dims)

    with pyro.validation_enabled(False):
        dims = plate_dims(vae.model, vae.guide, (x[:1],))
        run = step if training else evaluation
        run(x[:1])  # libraries' lazy allocations, and Adam's state, before the measurement
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak resident size (VmHWM) starts again from the current one
        before = _status_kib("VmRSS")
        for _ in range(2 if training else 1):
            run(x)
    return (_status_kib("VmHWM") - before) * 1024


def measured_per_image(model: dict, sizes: tuple[int, int], training: bool) -> float:
    growth = []
    for images in sizes:
        child = [sys.executable, __file__, "--child", json.dumps([model, images, training])]
        growth.append(int(subprocess.run(child, capture_output=True, text=True, check=True).stdout))
    return (growth[1] - growth[0]) / (sizes[1] - sizes[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return print(peak_growth_bytes(*json.loads(args.child)))
    print(
        f"torch {torch.__version__}; KB per image: measured (peak growth) / memory.py's count = ratio; "
        f"training: batches {TRAIN_SIZES}, evaluation: {EVAL_DRAWS} draws, {EVAL_SIZES} images"
    )
    print("| model | training: measured | count | ratio | evaluation: measured | count | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, model in MODELS.items():
        count = memory.activations(ModelConfig(**model))
        train = measured_per_image(model, TRAIN_SIZES, True), count.per_image + count.per_draw
        evaluation = (
            measured_per_image(model, EVAL_SIZES, False),
            count.per_image + EVAL_DRAWS * count.per_draw,
        )
        cells = [f"{m / 1e3:.1f} | {c / 1e3:.1f} | {m / c:.2f}" for m, c in (train, evaluation)]
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
    print(
        f"memory.TRAINING_COPIES = {memory.TRAINING_COPIES}, EVALUATION_COPIES = {memory.EVALUATION_COPIES}"
    )


if __name__ == "__main__":
    main()
