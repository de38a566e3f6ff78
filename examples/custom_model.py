"""Your own model and guide, as plain Pyro programs, trained by pyrovae's loop and scored by its estimator.

Here a VAE whose prior is learned and whose decoder sees z through a sinusoidal feature map, nothing
pyrovae registers: a model and a guide are two Python functions, their networks plain ``nn.Module``s.
Any objective of :mod:`pyrovae.objectives` (or of Pyro) trains them through ``train_epoch``; the same
importance sampler that scores pyrovae's runs gives their ``log p(x)``.

    python examples/custom_model.py --data-dir ../shared/data --epochs 5
"""

import click
import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.data import binarize_fixed, load_dataset
from pyrovae.errors import one_line_errors
from pyrovae.importance import importance_estimate
from pyrovae.networks import Encoder, mlp
from pyrovae.objectives import OBJECTIVES
from pyrovae.train import adam, train_epoch


class Parts(nn.Module):
    """Every parameter of the model and the guide, in one module for the optimizer."""

    def __init__(self, x_dim: int, z_dim: int = 16, hidden: int = 256):
        super().__init__()
        self.prior_loc = nn.Parameter(torch.zeros(z_dim))
        self.prior_log_scale = nn.Parameter(torch.zeros(z_dim))
        self.decoder = mlp([2 * z_dim, hidden, x_dim])  # on [sin z, cos z]
        self.encoder = Encoder(x_dim, [hidden], z_dim)


def make_programs(parts: Parts):
    def model(x):  # p(z) p(x | z), x: (N, D) in {0, 1}
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(parts.prior_loc, parts.prior_log_scale.exp()).to_event(1))
            logits = parts.decoder(torch.cat([z.sin(), z.cos()], dim=-1))  # (..., N, D)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def guide(x):  # q(z | x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(*parts.encoder(x)).to_event(1))

    return model, guide


def fit_and_score(data, epochs: int, objective: str, num_particles: int, num_samples: int,
                  num_points: int) -> dict:  # fmt: skip
    pyro.set_rng_seed(0)
    parts = Parts(data.x_train.shape[1])
    model, guide = make_programs(parts)
    loss_fn = OBJECTIVES[objective](num_particles=num_particles, max_plate_nesting=1)(model, guide)
    optimizer = adam(parts.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        bound = float(train_epoch(loss_fn, optimizer, data.x_train, batch_size=128))
        print(f"epoch {epoch}: train bound {bound:.2f} nats")
    x = binarize_fixed(data.x_test[:num_points])
    estimate = importance_estimate(model, guide, x, num_samples=num_samples)
    return {"elbo": estimate.elbo.mean().item(), "log_px": estimate.log_px.mean().item()}


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--elbo", "objective", default="iwae", type=click.Choice(list(OBJECTIVES)))
@click.option("--num-particles", default=5)
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@one_line_errors
def main(dataset, data_dir, epochs, objective, num_particles, num_samples, num_points):
    scores = fit_and_score(load_dataset(dataset, data_dir), epochs, objective, num_particles, num_samples,
                           num_points)  # fmt: skip
    print(f"test ELBO {scores['elbo']:.2f} nats, IS log p(x) {scores['log_px']:.2f} nats "
          f"(K = {num_samples}, first {num_points} test images)")  # fmt: skip


if __name__ == "__main__":
    main()
