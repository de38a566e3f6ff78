"""Swap the networks: residual hidden layers, ``x + relu(W x + b)``, in a few lines.

An architecture says how one hidden layer is made; registered by name, it builds every network of
the model and the guide (encoder, decoder, and any prior or flow that has one) through
`ModelConfig(arch="residual")`. From the CLI: `python cli.py --import examples/swap_network.py fit
--arch residual` (and the same `--import` for every later command on that run).

    python examples/swap_network.py --data-dir ../shared/data --epochs 5
"""

import click
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae import EvalConfig, ModelConfig, TrainConfig
from pyrovae.errors import one_line_errors
from pyrovae.evaluate import evaluate_run, summary
from pyrovae.networks import Architecture, register
from pyrovae.train import fit


class ResidualLayer(nn.Module):
    """``x + relu(W x + b)`` where the widths agree (He et al., 2016), ``relu(W x + b)`` where they do not."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear, self.skip = nn.Linear(d_in, d_out), d_in == d_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.linear(x))
        return x + h if self.skip else h


@register("residual")
class Residual(Architecture):
    """Hidden layers with skip connections, so deeper networks train as easily as shallow ones."""

    @staticmethod
    def hidden_layer(d_in, d_out):
        return [ResidualLayer(d_in, d_out)]


@click.command()
@click.option("--dataset", default="fashionmnist")
@click.option("--data-dir", default=None)
@click.option("--epochs", default=5)
@click.option("--num-samples", default=1000, help="Importance samples per test image.")
@click.option("--num-points", default=1000, help="Test images to score.")
@click.option("--out", default="runs/swap-network")
@one_line_errors
def main(dataset, data_dir, epochs, num_samples, num_points, out):
    model = ModelConfig(arch="residual", hidden_dims=(400, 400, 400))
    config = TrainConfig(dataset=dataset, data_dir=data_dir, epochs=epochs, out=out, model=model)
    run_dir = fit(config)
    print(summary(evaluate_run(run_dir, EvalConfig(num_samples=num_samples, num_points=num_points))))


if __name__ == "__main__":
    main()
