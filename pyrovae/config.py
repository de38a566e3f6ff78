"""One frozen dataclass per concern; each is the single source of its defaults.

The CLI reads its option defaults from these classes and a run directory stores them as JSON,
so a run is rebuilt from ``config.json`` (or from a checkpoint) alone.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

# The data sets pyrovae knows by name; --dataset also takes a folder of images or an .npz file.
DATASETS = ("mnist", "fashionmnist", "cifar10", "synthetic")
# pyro.set_rng_seed seeds NumPy too, which takes 0 <= seed < 2**32.
SEED_RANGE = (0, 2**32 - 1)
DEVICES = ("auto", "cpu", "cuda")


def channels(image_shape: tuple[int, ...]) -> int:
    """1 for a grey ``(H, W)`` image, ``C`` for a ``(C, H, W)`` one."""
    return 1 if len(image_shape) == 2 else image_shape[0]


def default_likelihood(image_shape: tuple[int, ...]) -> str:
    """Bernoulli for grey images (binarized, the literature's protocol); for colour ones the
    discretized logistic over each channel's 256 levels, so bits/dim are the 8-bit images' own."""
    return "bernoulli" if channels(image_shape) == 1 else "discretized-logistic"


def _positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _seed(value: Any) -> None:
    low, high = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"seed must be an integer from {low} to {high}, got {value!r}")


def _non_negative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")


def _name(name: str, value: Any, optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        raise ValueError(f"{name} must be a string{' (or left out)' if optional else ''}, got {value!r}")


def _sizes(name: str, value: Any) -> tuple[int, ...]:
    """A list of positive integers (a TOML array, a JSON list) as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
    for size in value:
        _positive_int(name, size)
    return tuple(value)


def _positive_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def check_registered(kind: str, name: str, table: dict[str, type]) -> None:
    """Raise ``ValueError`` where ``name`` names no part of ``kind`` in its registry ``table``."""
    _name(kind, name)
    if name not in table:
        raise ValueError(
            f"{kind} {name!r} is not registered (registered: {', '.join(table)}); a part of your own "
            "is found with --import MODULE, the module that registers it"
        )


@dataclass(frozen=True)
class ModelConfig:
    """The VAE: a prior over ``z`` of size ``z_dim``, a likelihood, MLPs with ``hidden_dims``, images of
    ``image_shape`` (``(H, W)`` grey, ``(C, H, W)`` colour)."""

    image_shape: tuple[int, ...] = (28, 28)
    z_dim: int = 20
    hidden_dims: tuple[int, ...] = (400,)
    # The hidden layers (see pyrovae.networks): mlp (linear + ReLU) or gated (gated dense layers).
    arch: str = "mlp"
    # None: the image's own (default_likelihood); a run's config.json names the one it trained.
    likelihood: str | None = None
    prior: str = "normal"
    # Components of the mixture priors (mog, vamp).
    num_components: int = 50
    # q(z | x) (see pyrovae.guides) and the conditional flows of the flow guides.
    guide: str = "gaussian"
    num_flows: int = 2
    # The model (see pyrovae.model): vae, or hvae (two stochastic layers, each of size z_dim).
    family: str = "vae"
    # How the Gaussians' standard deviations are made (see pyrovae.networks): softplus, or bounded
    # (the VampPrior code's log-variance in [-6, 2]).
    scale: str = "softplus"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_shape", _sizes("image_shape", self.image_shape))
        object.__setattr__(self, "hidden_dims", _sizes("hidden_dims", self.hidden_dims))
        if len(self.image_shape) not in (2, 3):
            raise ValueError(f"image_shape must be (H, W) or (C, H, W), got {self.image_shape}")
        _positive_int("z_dim", self.z_dim)
        if not self.hidden_dims:
            raise ValueError("hidden_dims must name at least one hidden layer")
        _name("likelihood", self.likelihood, optional=True)
        _positive_int("num_components", self.num_components)
        _positive_int("num_flows", self.num_flows)
        from .guides import GUIDES  # the registries import torch; configs are read without it
        from .likelihoods import LIKELIHOODS
        from .model import MODELS
        from .networks import NETWORKS, SCALES
        from .priors import PRIORS

        for kind, name, table in (
            ("likelihood", self.likelihood_name, LIKELIHOODS),
            ("prior", self.prior, PRIORS),
            ("guide", self.guide, GUIDES),
            ("model", self.family, MODELS),
            ("architecture", self.arch, NETWORKS),
            ("scale", self.scale, SCALES),
        ):
            check_registered(kind, name, table)
        NETWORKS[self.arch].check(self.image_shape)
        LIKELIHOODS[self.likelihood_name].check(self.image_shape)
        parts = (PRIORS[self.prior], GUIDES[self.guide])
        for option in ("num_components", "num_flows"):  # given to parts that do not read it: never used
            if getattr(self, option) != getattr(type(self), option) and not any(
                option in getattr(part, "reads", ()) for part in parts
            ):
                readers = [name for table in (PRIORS, GUIDES) for name, part in table.items()
                           if option in getattr(part, "reads", ())]  # fmt: skip
                raise ValueError(
                    f"{option} is for {', '.join(readers)}; the {self.prior} prior and the {self.guide} "
                    f"guide read none (a part of your own that does says reads = ({option!r},))"
                )
        if self.family == "hvae" and self.guide != "gaussian":
            raise ValueError("the hvae has its own two-layer Gaussian guide; --guide works with --model vae")

    @property
    def likelihood_name(self) -> str:
        return self.likelihood if self.likelihood is not None else default_likelihood(self.image_shape)

    @property
    def x_dim(self) -> int:
        return math.prod(self.image_shape)


@dataclass(frozen=True)
class TrainConfig:
    """How a model is fitted: data, optimiser, objective, protocol, where the run goes."""

    # A name in DATASETS, or a folder of images (one subfolder per class) or an .npz file of your own.
    dataset: str = "fashionmnist"
    data_dir: str | None = None
    # The share of a data set of your own (chosen with a fixed seed) held out as its test split.
    test_fraction: float = 0.1
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    # The rate of each epoch: lr times a schedule's factor (see pyrovae.optim: constant, burda).
    lr_schedule: str = "constant"
    # Adam's epsilon (the IWAE paper's 1e-4; torch's 1e-8).
    adam_eps: float = 1e-8
    # Flush subnormal floats (below 1.2e-38) to zero while training on the CPU (torch.set_flush_denormal):
    # the IWAE's normalised weights of its unlikely particles fall there, and arithmetic on them made an
    # MNIST IWAE step up to 3.5 times slower here (benchmarks/levers.py, part 6); no figure moves.
    # A run made before this option keeps them (False).
    flush_denormal: bool = True
    # The objective (see pyrovae.objectives) and its particles z_1..z_K per image.
    elbo: str = "trace"
    num_particles: int = 1
    # The weight of log p(z) - log q(z|x) in the gradient rises linearly, step by step, from 0 to beta
    # over the first `warmup` epochs (0: beta from the start). Reported figures are never weighted.
    warmup: int = 0
    beta: float = 1.0
    # Training images held out (chosen once, with a fixed seed) to pick the best epoch; 0: none.
    validation: int = 0
    # Stop after this many epochs (past the warm-up) without a better validation ELBO; None: never.
    early_stopping: int | None = None
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    # Experiment loggers (see pyrovae.loggers: tensorboard, swanlab, wandb), each writing in <out>.
    loggers: tuple[str, ...] = ()
    # Images per forward pass when evaluating; only memory depends on it.
    eval_batch_size: int = 1000
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", ModelConfig(**self.model))
        if isinstance(self.loggers, str) or not all(isinstance(name, str) for name in self.loggers):
            raise ValueError(f"loggers must be a list of names, got {self.loggers!r}")
        object.__setattr__(self, "loggers", tuple(dict.fromkeys(self.loggers)))  # once each, in order
        from .loggers import LOGGERS

        for name in self.loggers:
            check_registered("logger", name, LOGGERS)
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be one of {', '.join(DATASETS)} or a path, got {self.dataset!r}")
        _name("data_dir", self.data_dir, optional=True)
        _name("out", self.out, optional=True)
        if isinstance(self.test_fraction, bool) or not (
            isinstance(self.test_fraction, (int, float)) and 0 < self.test_fraction < 1
        ):
            raise ValueError(f"test_fraction must be a number between 0 and 1, got {self.test_fraction!r}")
        if self.dataset in DATASETS and self.test_fraction != type(self).test_fraction:  # kept, never used
            raise ValueError(
                f"test_fraction is for images of your own; {self.dataset} has its own test split"
            )
        from .objectives import OBJECTIVES

        check_registered("objective", self.elbo, OBJECTIVES)
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _positive_int("epochs", self.epochs)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_batch_size", self.eval_batch_size)
        _positive_number("lr", self.lr)
        _positive_number("adam_eps", self.adam_eps)
        if not isinstance(self.flush_denormal, bool):
            raise ValueError(f"flush_denormal must be true or false, got {self.flush_denormal!r}")
        from .optim import SCHEDULES

        if not isinstance(self.lr_schedule, str) or self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        _seed(self.seed)
        _positive_int("num_particles", self.num_particles)
        _non_negative_int("warmup", self.warmup)
        _positive_number("beta", self.beta)
        _non_negative_int("validation", self.validation)
        if self.early_stopping is not None:
            _positive_int("early_stopping", self.early_stopping)
            if not self.validation:
                raise ValueError("early stopping needs a validation split to watch: give --validation N")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        if "tensorboard" in d:  # the config.json of a run made before --logger
            d["loggers"] = ["tensorboard"] if d.pop("tensorboard") else []
        d.setdefault("flush_denormal", False)  # a run made before the option kept subnormals
        return cls(**d)


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A run's options from a TOML file with the keys of ``config.json``: :class:`TrainConfig`'s fields
    at the top, :class:`ModelConfig`'s in a ``[model]`` table. Unknown keys are a ``ValueError``."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            values = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:  # TOML is UTF-8 text
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    model = values.get("model", {})
    if not isinstance(model, dict):
        raise ValueError(f"{path}: 'model' must be a table of ModelConfig's fields")
    for keys, cls, where in ((values, TrainConfig, "top level"), (model, ModelConfig, "[model]")):
        unknown = set(keys) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown keys at the {where}: {', '.join(sorted(unknown))}")
    return values


# test; validation: the images the run held out (fit --validation N), chosen with the fixed seed every run
# uses; train: the images it trained on (its training set less those).
SPLITS = ("test", "validation", "train")
CHECKPOINTS = ("best", "last")


# Compiling costs 4 s (this machine, inductor's cache warm) to 20 s (cold) and saves some 7 us an
# image-sample (eager 385-421 ms, compiled 27-33 ms, for 500 x 100: benchmarks/levers.py, part 3): it
# repays itself from about 0.6 to 2.7 million image-samples.
COMPILE_FROM = 10**6


@dataclass(frozen=True)
class EvalConfig:
    """How a run is scored by importance sampling (see :func:`pyrovae.importance.log_likelihood`)."""

    num_samples: int = 5000
    split: str = "test"
    # The first this many images of the split (None: all of them).
    num_points: int | None = None
    # Particles and rows evaluated at once: memory and speed depend on them, the estimate does not.
    chunk_size: int = 500
    batch_size: int = 100
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    # Fuse the Bernoulli log-density with torch.compile: 4-20 s once, then 12-14x faster scoring of the
    # pixels. None: where the job scores at least COMPILE_FROM image-samples (images times K).
    compile: bool | None = None
    # best: the epoch of the best validation ELBO (the last, for a run without a validation split).
    checkpoint: str = "best"

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")
        for name in ("num_samples", "chunk_size", "batch_size"):
            _positive_int(name, getattr(self, name))
        _seed(self.seed)
        _name("data_dir", self.data_dir, optional=True)
        if self.compile is not None and not isinstance(self.compile, bool):
            raise ValueError(f"compile must be true, false or None, got {self.compile!r}")
        if self.num_points is not None:
            _positive_int("num_points", self.num_points)
