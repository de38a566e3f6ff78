"""Swap the guide: a full-covariance Gaussian posterior ``q(z | x) = N(loc(x), L(x) L(x)^T)``.

A guide is one class whose ``posterior(x)`` returns a Pyro distribution over z; registered by name,
`ModelConfig(guide="full-covariance")` builds it, every objective trains it and `evaluate_run` scores
it by importance sampling. Here the encoder's location and scales (on the diagonal of the Cholesky
factor ``L``) are kept, and a linear map of its last hidden layer fills ``L`` below the diagonal, so
the latent dimensions of one image's posterior may correlate. From the CLI: `python cli.py --import
examples/swap_guide.py fit --guide full-covariance`.

    python examples/swap_guide.py --data-dir ../shared/data --epochs 5
"""

import click
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae import EvalConfig, ModelConfig, TrainConfig
from pyrovae.errors import one_line_errors
from pyrovae.evaluate import evaluate_run, summary
from pyrovae.guides import Guide, register
from pyrovae.train import fit


@register("full-covariance")
class FullCovariance(Guide):
    """``q(z | x) = N(loc(x), L(x) L(x)^T)``; ``L`` lower-triangular, the encoder's scales on its diagonal."""

    def __init__(self, config):
        super().__init__(config)
        d = config.z_dim
        self.below = nn.Linear(self.encoder.context_dim, d * (d - 1) // 2)  # L's entries below the diagonal
        self.register_buffer("rows_cols", torch.tril_indices(d, d, -1), persistent=False)

    def posterior(self, x):
        loc, scale, h = self.encoder.with_context(x)  # (N, d), (N, d), (N, context_dim)
        scale_tril = torch.diag_embed(scale)  # (N, d, d)
        scale_tril[..., self.rows_cols[0], self.rows_cols[1]] = self.below(h)
        return dist.MultivariateNormal(loc, scale_tril=scale_tril)


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@click.option("--out", default="runs/swap-guide")
@one_line_errors
def main(dataset, data_dir, epochs, num_samples, num_points, out):
    config = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=epochs, out=out,
                         model=ModelConfig(guide="full-covariance"))  # fmt: skip
    run_dir = fit(config)
    print(summary(evaluate_run(run_dir, EvalConfig(num_samples=num_samples, num_points=num_points))))


if __name__ == "__main__":
    main()
