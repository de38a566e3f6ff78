"""Swap the prior: a learned diagonal Gaussian ``N(loc, diag(scale^2))``, in a few lines.

The new prior is one class, registered by name; its parameters are trained by the same SVI step as the
networks. Without a closed-form KL registered for it, it trains with `Trace_ELBO` (the default);
`--elbo meanfield` would refuse it.

    python examples/swap_prior.py --data-dir ../shared/data --epochs 5
"""

import click
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae import EvalConfig, ModelConfig, TrainConfig
from pyrovae.errors import one_line_errors
from pyrovae.evaluate import evaluate_run, summary
from pyrovae.priors import Prior, register
from pyrovae.train import fit


@register("learned-normal")
class LearnedNormal(Prior):
    """``z ~ N(loc, diag(scale^2))`` with ``loc`` and ``scale`` learned."""

    def __init__(self, config, encoder):
        super().__init__(config, encoder)
        self.loc = nn.Parameter(torch.zeros(config.z_dim))
        self.raw_scale = nn.Parameter(torch.full((config.z_dim,), 0.5413))  # softplus(0.5413) = 1

    def forward(self):
        return dist.Normal(self.loc, F.softplus(self.raw_scale)).to_event(1)


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@click.option("--out", default="runs/swap-prior")
@one_line_errors
def main(dataset, data_dir, epochs, num_samples, num_points, out):
    config = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=epochs, out=out,
                         model=ModelConfig(prior="learned-normal"))  # fmt: skip
    run_dir = fit(config)
    print(summary(evaluate_run(run_dir, EvalConfig(num_samples=num_samples, num_points=num_points))))


if __name__ == "__main__":
    main()
