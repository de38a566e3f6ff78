"""Swap the likelihood: a Beta density per pixel on dequantized grey levels, in a few lines.

The new likelihood is one class, registered by name; `ModelConfig(likelihood="beta")` then builds it,
`fit` trains it, and `evaluate_run` scores it by importance sampling in bits per dimension of the 8-bit
pixels (the density's log p minus D log 256), comparable with every other likelihood.

    python examples/swap_likelihood.py --data-dir ../shared/data --epochs 5
"""

import click
import pyro.distributions as dist
import torch.nn.functional as F

from pyrovae import EvalConfig, ModelConfig, TrainConfig
from pyrovae.errors import one_line_errors
from pyrovae.evaluate import evaluate_run, summary
from pyrovae.likelihoods import Dequantized, register
from pyrovae.train import fit


@register("beta")
class Beta(Dequantized):
    """``y_d ~ Beta(a_d(z), b_d(z))`` for dequantized grey levels ``y`` in (0, 1)."""

    params_per_pixel = 2

    def forward(self, out):
        a, b = (F.softplus(out) + 1e-3).unflatten(-1, (2, self.x_dim)).unbind(-2)
        return dist.Beta(a, b).to_event(1)


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@click.option("--out", default="runs/swap-likelihood")
@one_line_errors
def main(dataset, data_dir, epochs, num_samples, num_points, out):
    config = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=epochs, out=out,
                         model=ModelConfig(likelihood="beta"))  # fmt: skip
    run_dir = fit(config)
    print(summary(evaluate_run(run_dir, EvalConfig(num_samples=num_samples, num_points=num_points))))


if __name__ == "__main__":
    main()
