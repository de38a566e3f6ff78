"""Swap the objective: the variational Renyi bound (Li and Turner, 2016), in a few lines.

An objective is a ``pyro.infer.ELBO`` registered by name; `TrainConfig(elbo="renyi")` trains with it.
Here it is :class:`pyrovae.objectives.IWAE` with another function of the same K log weights per image:

    L_a(x) = 1/(1 - a) log (1/K) sum_k w_k^(1 - a),  log w_k = log p(x, z_k) - log q(z_k | x)

the IWAE bound at ``a = 0``, the ELBO as ``a -> 1``; between them for ``a = 1/2``. From the CLI:
`python cli.py --import examples/swap_objective.py fit --elbo renyi --num-particles 5`.

    python examples/swap_objective.py --data-dir ../shared/data --epochs 5
"""

import math

import click
import torch

from pyrovae import EvalConfig, TrainConfig
from pyrovae.errors import one_line_errors
from pyrovae.evaluate import evaluate_run, summary
from pyrovae.objectives import IWAE, register
from pyrovae.train import fit


@register("renyi")
class RenyiBound(IWAE):
    """``L_a`` at ``a = 1/2``, per data point, from the log weights IWAE draws."""

    alpha = 0.5

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """(K, N) log weights -> (N,) bounds."""
        a = self.alpha
        return (((1 - a) * log_w).logsumexp(0) - math.log(self.num_particles)) / (1 - a)

    def point_bounds(self, model, guide, *args, **kwargs):
        _, _, log_w, scale = self._weights(model, guide, args, kwargs)
        return self.bound(log_w), scale

    def static_loss(self, log_w):  # pyrovae's own model and guide: the same bound, no tracing
        return -self.bound(log_w.reshape(self.num_particles, -1)).sum()


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--num-particles", default=5, help="Draws K of z per image in the bound.")
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@click.option("--out", default="runs/swap-objective")
@one_line_errors
def main(dataset, data_dir, epochs, num_particles, num_samples, num_points, out):
    config = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=epochs, out=out, elbo="renyi",
                         num_particles=num_particles)  # fmt: skip
    run_dir = fit(config)
    print(summary(evaluate_run(run_dir, EvalConfig(num_samples=num_samples, num_points=num_points))))


if __name__ == "__main__":
    main()
