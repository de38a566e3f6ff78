"""Swap the scale: the notebooks' log-variance head, ``std = exp(0.5 * logvar)``, in a few lines.

A scale says how a network's unconstrained output becomes a Gaussian's standard deviation; registered by
name, it serves every Gaussian a network parametrises (``q(z | x)``, and the HVAE's ``q(z1 | x, z2)`` and
``p(z1 | z2)``) through `ModelConfig(scale="log-variance")`. pyrovae's own are ``softplus`` (the default)
and ``bounded`` (the VampPrior code's log-variance held to [-6, 2]); this one is the PyTorch VAE
notebook's, unbounded both ways. From the CLI: `python cli.py --import examples/swap_scale.py fit
--scale log-variance` (and the same `--import` for every later command on that run).

    python examples/swap_scale.py --data-dir ../shared/data --epochs 5
"""

import click
import torch

from pyrovae import EvalConfig, ModelConfig, TrainConfig
from pyrovae.errors import one_line_errors
from pyrovae.evaluate import evaluate_run, summary
from pyrovae.networks import Scale, register_scale
from pyrovae.train import fit


@register_scale("log-variance")
class LogVariance(Scale):
    """``raw`` is ``log sigma^2``, so ``sigma = exp(raw / 2)`` (Kingma and Welling, 2014, appendix C.2)."""

    @staticmethod
    def sigma(raw: torch.Tensor) -> torch.Tensor:
        return torch.exp(0.5 * raw)


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@click.option("--out", default="runs/swap-scale")
@one_line_errors
def main(dataset, data_dir, epochs, num_samples, num_points, out):
    config = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=epochs, out=out,
                         model=ModelConfig(scale="log-variance"))  # fmt: skip
    run_dir = fit(config)
    print(summary(evaluate_run(run_dir, EvalConfig(num_samples=num_samples, num_points=num_points))))


if __name__ == "__main__":
    main()
