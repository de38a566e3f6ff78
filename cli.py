"""pyrovae's command line: each command parses its options into a config and calls the library."""

from __future__ import annotations

import functools

import click

from pyrovae.config import DATASETS, DEVICES, ELBOS, ModelConfig, TrainConfig
from pyrovae.errors import UserError


def user_errors(command):
    """Show a :class:`UserError` as click's one-line ``Error: ...`` and exit 1, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


class SizeList(click.ParamType):
    """Comma-separated positive integers, e.g. ``400`` or ``200,200``."""

    name = "sizes"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            sizes = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not sizes or any(s <= 0 for s in sizes):
            self.fail(f"{value!r}: every size must be a positive integer", param, ctx)
        return sizes


POSITIVE_INT = click.IntRange(min=1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli() -> None:
    """Variational autoencoders written the Pyro way."""


@cli.command()
@click.option("--dataset", type=click.Choice(DATASETS), default=TrainConfig.dataset)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder in torchvision's layout  [default: $PYROVAE_DATA, else ~/.cache/pyrovae]",
)
@click.option("--epochs", type=POSITIVE_INT, default=TrainConfig.epochs)
@click.option("--batch-size", type=POSITIVE_INT, default=TrainConfig.batch_size)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=TrainConfig.lr,
              help="Adam's learning rate.")
@click.option("--z-dim", type=POSITIVE_INT, default=ModelConfig.z_dim, help="Latent dimensions.")
@click.option("--hidden-dims", type=SizeList(), default=",".join(map(str, ModelConfig.hidden_dims)),
              help="Hidden layer sizes of the encoder (the decoder mirrors them), e.g. 200,200.")
@click.option("--elbo", type=click.Choice(ELBOS), default=TrainConfig.elbo,
              help="trace: Trace_ELBO; meanfield: TraceMeanField_ELBO (analytic KL).")
@click.option("--seed", type=int, default=TrainConfig.seed)
@click.option("--device", type=click.Choice(DEVICES), default=TrainConfig.device,
              help="auto: CUDA when present, else the CPU.")
@click.option("--out", type=click.Path(), default=None,
              help="Run directory  [default: runs/<dataset>-<timestamp>]")
@user_errors
def fit(z_dim: int, hidden_dims: tuple[int, ...], **options) -> None:
    """Train a VAE and write its run directory: config, checkpoint, metrics and pictures."""
    from pyrovae.train import fit as fit_vae  # deferred: --help need not import torch

    model = ModelConfig(z_dim=z_dim, hidden_dims=hidden_dims)
    run_dir = fit_vae(TrainConfig(model=model, **options), log=click.echo)
    click.echo(f"wrote {run_dir}")


if __name__ == "__main__":
    cli()
