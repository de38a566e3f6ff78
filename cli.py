"""pyrovae's command line: each command parses its options into a config and calls the library."""

from __future__ import annotations

import functools
import gc
import importlib
import importlib.util
import math
import os
import signal
import sys
from pathlib import Path

import click

from pyrovae import distributed
from pyrovae.config import (
    CHECKPOINTS,
    DATASETS,
    DEVICES,
    SEED_RANGE,
    SPLITS,
    EvalConfig,
    ModelConfig,
    TrainConfig,
    read_config_file,
)
from pyrovae.errors import UserError, one_line
from pyrovae.guides import GUIDES
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.loggers import LOGGERS
from pyrovae.model import MODELS
from pyrovae.networks import NETWORKS, SCALES
from pyrovae.objectives import OBJECTIVES
from pyrovae.optim import SCHEDULES
from pyrovae.priors import PRIORS


def user_errors(command):
    """Show a :class:`UserError` as click's one-line ``Error: ...`` and exit 1, with no traceback; so
    too an allocation that fails despite the memory estimates made before each job."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        group = distributed.current()
        if group.active:  # torchrun ends every rank with SIGTERM when one fails: say so in one line
            signal.signal(signal.SIGTERM, _stopped_by_torchrun)
        try:
            return command(*args, **kwargs)
        except UserError as e:
            if not group.is_main:  # under torchrun, rank 0 alone says it
                raise SystemExit(1) from None
            raise click.ClickException(one_line(e)) from None
        except OSError as e:  # a folder that is missing, full or read-only
            raise click.ClickException(one_line(e)) from None
        except MemoryError:
            raise click.ClickException("out of memory; choose smaller sizes") from None
        except RuntimeError as e:  # torch.OutOfMemoryError is one; so is the CPU allocator's failure
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if group.active and _peer_failure(e):  # a rank died or left while the others waited on it
                if not group.is_main:
                    raise SystemExit(1) from None
                raise click.ClickException(
                    f"another process of this torchrun job failed or left ({first}); a run directory "
                    "keeps its last checkpoint"
                ) from None
            if "memory" not in first.lower() and "allocate" not in first.lower():
                raise
            raise click.ClickException(f"out of memory ({first}); choose smaller sizes") from None

    return wrapper


def _stopped_by_torchrun(signum, frame) -> None:
    raise UserError(
        "torchrun stopped this job: another of its processes failed, or it was interrupted; a run "
        "directory keeps its last checkpoint (fit --resume continues it)"
    )


def _peer_failure(e: RuntimeError) -> bool:
    """Whether a collective failed because another rank died, left or timed out (gloo and NCCL say so
    in plain RuntimeErrors)."""
    import torch.distributed as dist

    words = ("gloo", "NCCL", "Connection", "peer", "timed out", "Timed out")
    return isinstance(e, dist.DistError) or any(word in str(e) for word in words)


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


class PositiveFloat(click.ParamType):
    """A finite number above zero (click's FloatRange lets nan and inf through)."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not (math.isfinite(number) and number > 0):
            self.fail(f"{value!r} is not a finite positive number", param, ctx)
        return number


class DatasetName(click.ParamType):
    """A data set pyrovae knows by name, or a folder of images or an ``.npz`` file (kept as an absolute
    path, so that commands run elsewhere find the data again from ``config.json``)."""

    name = "name|path"

    def convert(self, value, param, ctx):
        if value in DATASETS:
            return value
        path = Path(value)
        if path.is_dir() or (path.is_file() and path.suffix == ".npz"):
            return str(path.resolve())
        self.fail(
            f"{value!r} is none of {', '.join(DATASETS)}, and no folder of images or .npz file", param, ctx
        )


POSITIVE_INT = click.IntRange(min=1)
SEED = click.IntRange(*SEED_RANGE)


class Registered(click.ParamType):
    """A name in one of pyrovae's registries, read when the option is parsed, so that parts registered by
    an ``--import``ed module count too."""

    name = "name"

    def __init__(self, table: dict):
        self.table = table

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.table) + "]"

    def convert(self, value, param, ctx):
        if value not in self.table:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, self.table))}", param, ctx)
        return value


def import_parts(path_or_module: str) -> None:
    """Import a module (a dotted name, or a ``.py`` file) that registers likelihoods, priors, guides,
    models or objectives of its own."""
    try:
        if path_or_module.endswith(".py"):
            path = Path(path_or_module)
            spec = importlib.util.spec_from_file_location(f"pyrovae_parts_{path.stem}", path)
            if spec is None or not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # as import does: its classes then know their file
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[spec.name]
                raise
        else:
            importlib.import_module(path_or_module)
    except Exception as e:  # any failure of the user's module is theirs to see, in one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise click.BadParameter(
            f"cannot import {path_or_module}: {first}", param_hint="'--import'"
        ) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="A module (dotted name or .py file) that registers parts of your own, imported first; needed "
    "again by every command that reads a run made with them. A run directory never runs code.",
)
def cli(imports: tuple[str, ...]) -> None:
    """Variational autoencoders written the Pyro way."""
    if not distributed.current().is_main:  # under torchrun, rank 0 alone reports
        sys.stdout = open(os.devnull, "w")  # open for the life of the process
    for module in imports:
        import_parts(module)


@cli.command()
@click.option(
    "--dataset",
    type=DatasetName(),
    default=TrainConfig.dataset,
    help=f"{', '.join(DATASETS)}, or your own images: a folder with one subfolder of images per class "
    "(torchvision's ImageFolder layout), or an .npz file holding x (uint8, N x H x W or N x H x W x C) "
    "and optionally y.",
)
@click.option(
    "--test-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=TrainConfig.test_fraction,
    help="For your own images: the share held out (chosen with a fixed seed) as the test split.",
)
@click.option(
    "--data-dir",
    # kept absolute, so that resume and evaluate find the data again from config.json, run from anywhere
    type=click.Path(file_okay=False, resolve_path=True),
    default=None,
    help="Folder in torchvision's layout  [default: $PYROVAE_DATA, else ~/.cache/pyrovae]",
)
@click.option("--epochs", type=POSITIVE_INT, default=TrainConfig.epochs)
@click.option("--batch-size", type=POSITIVE_INT, default=TrainConfig.batch_size)
@click.option("--lr", type=PositiveFloat(), default=TrainConfig.lr, help="Adam's learning rate.")
@click.option(
    "--lr-schedule",
    type=Registered(SCHEDULES),
    default=TrainConfig.lr_schedule,
    help="constant, or burda: the IWAE paper's 8 stages of 3^i epochs at lr * 10^(-i/7).",
)
@click.option("--adam-eps", type=PositiveFloat(), default=TrainConfig.adam_eps, help="Adam's epsilon.")
@click.option(
    "--flush-denormal/--keep-denormal",
    default=TrainConfig.flush_denormal,
    help="Flush subnormal floats to zero while training on the CPU: the same figures, and an IWAE step "
    "several times faster.",
)
@click.option("--z-dim", type=POSITIVE_INT, default=ModelConfig.z_dim, help="Latent dimensions.")
@click.option(
    "--hidden-dims",
    type=SizeList(),
    default=",".join(map(str, ModelConfig.hidden_dims)),
    help="Hidden layer sizes of the encoder (the decoder mirrors them), e.g. 200,200.",
)
@click.option(
    "--arch",
    type=Registered(NETWORKS),
    default=ModelConfig.arch,
    help="Hidden layers: mlp (linear + ReLU), gated (gated dense, as the VampPrior paper), conv, gated-conv "
    "(the VampPrior paper's ConvHVAE), tanh (the IWAE paper's).",
)
@click.option(
    "--likelihood",
    type=Registered(LIKELIHOODS),
    default=ModelConfig.likelihood,
    help="p(x | z), each on the representation it is a true likelihood of (see README)  [default: "
    "bernoulli for grey images, discretized-logistic for colour ones]",
)
@click.option("--prior", type=Registered(PRIORS), default=ModelConfig.prior, help="p(z).")
@click.option(
    "--guide",
    type=Registered(GUIDES),
    default=ModelConfig.guide,
    help="q(z | x): the encoder's Gaussian, or that Gaussian through --num-flows conditional flows.",
)
@click.option("--num-flows", type=POSITIVE_INT, default=ModelConfig.num_flows, help="For the flow guides.")
@click.option(
    "--model",
    "family",
    type=Registered(MODELS),
    default=ModelConfig.family,
    help="vae, or hvae: two stochastic layers (the VampPrior paper's HVAE).",
)
@click.option(
    "--num-components", type=POSITIVE_INT, default=ModelConfig.num_components, help="For --prior mog or vamp."
)
@click.option(
    "--scale",
    type=Registered(SCALES),
    default=ModelConfig.scale,
    help="The Gaussians' standard deviations from the networks: softplus (+ 1e-4), or bounded (log-variance "
    "in [-6, 2], as the VampPrior paper's code).",
)
@click.option(
    "--elbo",
    type=Registered(OBJECTIVES),
    default=TrainConfig.elbo,
    help="The objective: trace (Trace_ELBO), meanfield (analytic KL), iwae (Burda et al.), iwae-dreg "
    "(IWAE with doubly reparametrised guide gradients).",
)
@click.option(
    "--num-particles",
    type=POSITIVE_INT,
    default=TrainConfig.num_particles,
    help="Samples z_1..z_K per image in the objective (vectorized).",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=0),
    default=TrainConfig.warmup,
    help="Epochs over which the KL weight rises linearly from 0 to --beta (0: none).",
)
@click.option(
    "--beta", type=PositiveFloat(), default=TrainConfig.beta, help="Weight of the KL term in the gradient."
)
@click.option(
    "--validation",
    type=click.IntRange(min=0),
    default=TrainConfig.validation,
    help="Training images held out (fixed seed) to choose the best epoch (0: none).",
)
@click.option(
    "--early-stopping",
    type=POSITIVE_INT,
    default=None,
    help="Stop after this many epochs past the warm-up without a better validation ELBO.",
)
@click.option("--seed", type=SEED, default=TrainConfig.seed)
@click.option(
    "--device",
    type=click.Choice(DEVICES),
    default=TrainConfig.device,
    help="auto: CUDA when present, else the CPU.",
)
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="Run directory  [default: runs/<dataset>-<timestamp>]",
)
@click.option(
    "--logger",
    "loggers",
    type=Registered(LOGGERS),
    multiple=True,
    help="Also log to this logger, inside the run directory (repeatable; each needs its extra: pip install "
    "-e '.[NAME]'): tensorboard, swanlab (local mode), wandb (offline mode).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A TOML file with the keys of config.json (see recipes/); options given here override it.",
)
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Continue this run from its last checkpoint (only --epochs, --device, --data-dir, --logger may "
    "change).",
)
@click.pass_context
@user_errors
def fit(
    ctx: click.Context,
    z_dim: int,
    hidden_dims: tuple[int, ...],
    arch: str,
    likelihood: str | None,
    prior: str,
    num_components: int,
    guide: str,
    num_flows: int,
    family: str,
    scale: str,
    config_file: str | None,
    resume: str | None,
    **options,
) -> None:
    """Train a VAE and write its run directory: config, checkpoint, metrics and pictures."""
    from pyrovae import train  # deferred: --help need not import torch

    model_options = dict(
        z_dim=z_dim,
        hidden_dims=hidden_dims,
        arch=arch,
        likelihood=likelihood,
        prior=prior,
        num_components=num_components,
        guide=guide,
        num_flows=num_flows,
        family=family,
        scale=scale,
    )

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE

    if resume is not None:
        if config_file is not None:  # the run's own config.json is its config; a file would be ignored
            raise click.UsageError(
                "--config cannot be given with --resume: a run resumes with its own config (of which "
                "--epochs, --device, --data-dir and --logger may change on the command line)"
            )
        changes = {name: value for name, value in {**options, **model_options}.items() if given(name)}
        click.echo(f"wrote {train.resume(resume, changes, log=click.echo)}")
        return
    try:
        if config_file is not None:  # the file's values, where the command line gives none
            values = read_config_file(config_file)

            def overlay(cli_values: dict, file_values: dict) -> dict:
                return {
                    **file_values,
                    **{k: v for k, v in cli_values.items() if given(k) or k not in file_values},
                }

            model_options = overlay(model_options, values.pop("model", {}))
            options = overlay(options, values)
        config = TrainConfig(model=ModelConfig(**model_options), **options)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    run_dir = train.fit(config, log=click.echo)
    click.echo(f"wrote {run_dir}")


CHECKPOINT = click.option(
    "--checkpoint",
    type=click.Choice(CHECKPOINTS),
    default=EvalConfig.checkpoint,
    help="best: the epoch of the best validation ELBO (the last where the run has no validation split).",
)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--num-samples",
    type=POSITIVE_INT,
    default=EvalConfig.num_samples,
    help="Importance samples K per image.",
)
@click.option(
    "--split",
    type=click.Choice(SPLITS),
    default=EvalConfig.split,
    help="validation: the images the run held out (fit --validation N); train: those it trained on.",
)
@click.option(
    "--num-points",
    type=POSITIVE_INT,
    default=None,
    help="Only the split's first N images (written to evaluation-firstN.json).",
)
@click.option(
    "--chunk-size",
    type=POSITIVE_INT,
    default=EvalConfig.chunk_size,
    help="Samples evaluated at once (memory only).",
)
@click.option(
    "--batch-size",
    type=POSITIVE_INT,
    default=EvalConfig.batch_size,
    help="Images evaluated at once (memory only).",
)
@click.option("--seed", type=SEED, default=EvalConfig.seed)
@click.option("--device", type=click.Choice(DEVICES), default=EvalConfig.device)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="  [default: the run's own]")
@click.option(
    "--compile/--no-compile",
    default=EvalConfig.compile,
    show_default="where it scores a million image-samples or more",
    help="Fuse the Bernoulli log-density with torch.compile (4-20 s once, then faster).",
)
@CHECKPOINT
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def evaluate(run_dir: str, as_json: bool, **options) -> None:
    """ELBO and importance-sampled log p(x) of a run; writes RUN_DIR/evaluation.json (for another
    split than test, RUN_DIR/evaluation-SPLIT.json; for the first N images, -firstN before .json)."""
    import json

    from pyrovae.evaluate import evaluate_run, summary

    result = evaluate_run(run_dir, EvalConfig(**options))
    if result is not None:  # None: a rank of torchrun's other than 0
        click.echo(json.dumps(result, indent=2) if as_json else summary(result))


RUN_DIR = click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
OUT = click.option("--out", type=click.Path(dir_okay=False), default=None, help="  [default: in RUN_DIR]")
VIEW_DEVICE = click.option("--device", type=click.Choice(DEVICES), default="cpu")
DATA_DIR = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None, help="  [default: the run's own]"
)


def _echo_paths(paths) -> None:
    for path in paths:
        click.echo(str(path))


@cli.command()
@RUN_DIR
@click.option("-n", "--num-samples", type=POSITIVE_INT, default=64)
@click.option("--seed", type=SEED, default=0)
@OUT
@VIEW_DEVICE
@CHECKPOINT
@user_errors
def sample(run_dir: str, **options) -> None:
    """Decode prior draws: the likelihood's mean beside a draw from it (samples.png)."""
    from pyrovae import views

    _echo_paths(views.sample(run_dir, **options))


@cli.command()
@RUN_DIR
@click.option("-n", "--num-images", type=POSITIVE_INT, default=36)
@OUT
@VIEW_DEVICE
@CHECKPOINT
@DATA_DIR
@user_errors
def reconstruct(run_dir: str, **options) -> None:
    """Test images over their reconstructions (reconstructions.png)."""
    from pyrovae import views

    _echo_paths(views.reconstruct(run_dir, **options))


@cli.command()
@RUN_DIR
@OUT
@VIEW_DEVICE
@CHECKPOINT
@DATA_DIR
@user_errors
def latent(run_dir: str, **options) -> None:
    """Posterior means of the test set by class (latent.png); for a 2-D latent also manifold.png (beside
    --out FILE.png: FILE-manifold.png)."""
    from pyrovae import views

    _echo_paths(views.latent(run_dir, **options))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, help="  [default: RUN_DIR/elbo.png, one run]"
)
@click.option(
    "--column",
    type=click.Choice(["valid", "test", "train"]),
    default=None,
    help="Of several runs, the ELBO drawn  [default: valid where every run held out a split, else test]",
)
@user_errors
def curves(run_dirs: tuple[str, ...], **options) -> None:
    """The training bound, validation and test ELBO per epoch from metrics.csv (elbo.png); works while
    the run still trains. Of several runs, one ELBO of each on one picture (--out)."""
    from pyrovae import views

    _echo_paths(views.curves(run_dirs, **options))


@cli.command()
@RUN_DIR
@click.option("--pairs", type=POSITIVE_INT, default=6)
@click.option("--steps", type=click.IntRange(min=2), default=10)
@OUT
@VIEW_DEVICE
@CHECKPOINT
@DATA_DIR
@user_errors
def interpolate(run_dir: str, **options) -> None:
    """Decodings along lines between the latents of pairs of test images (interpolations.png)."""
    from pyrovae import views

    _echo_paths(views.interpolate(run_dir, **options))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--markdown", is_flag=True, help="Print a Markdown table.")
@click.option(
    "--split", type=click.Choice(SPLITS), default=EvalConfig.split, help="The runs' scores of this split."
)
@click.option(
    "--num-points", type=POSITIVE_INT, default=None, help="Their scores of the split's first N images."
)
@user_errors
def compare(run_dirs: tuple[str, ...], markdown: bool, split: str, num_points: int | None) -> None:
    """log p(x) of scored runs, and each run's paired difference against the first, image by image."""
    from pyrovae.compare import compare_runs, table

    click.echo(table(compare_runs(list(run_dirs), split, num_points), markdown))


if __name__ == "__main__":
    # What the imports made (torch's ~200,000 objects) lives as long as the process: out of the cyclic
    # collector's sight, it costs nothing in the collections a command makes nor in the interpreter's
    # last one at exit, 0.5-0.9 s (benchmarks/commands.py --only startup).
    gc.freeze()
    cli()
