"""Memory a job will need, estimated before anything is allocated, against the memory there is.

The model is built on torch's ``meta`` device (shapes, no storage) to count its parameters exactly. Its
activations are counted by running model and guide as the objectives and the evaluation run them,
adding up the bytes of every new tensor a torch function returns, for one or two images with one or two
draws of z each. A pass's bytes are ``a + n b + k d + n k c`` for ``n`` images and ``k`` draws, so those
four runs give ``a`` (the VampPrior's pseudo-inputs through the encoder), ``b`` (the encoder), ``d``
(a few bytes) and ``c`` (the decoder and the log-densities) for any size and any network, convolutions
included. A small model runs for real on the CPU (0.05-0.5 s here, about 1 s for the ConvHVAE); a
large one, or one of large images, on ``meta``, where torch's shape functions cost some 2 s to import
once.

A job whose estimate exceeds the memory available is refused with one line, rather than killed by the
kernel halfway through.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import NamedTuple

import pyro
import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from .config import EvalConfig, ModelConfig, TrainConfig
from .errors import UserError

FLOAT = 4  # bytes of a float32
# The memory a pass takes, as a multiple of the bytes counted: a training step keeps the forward pass's
# values for the backward pass, whose gradients are about as many again, and functions make temporaries
# (a convolution's workspace) the count does not see, while an evaluation frees most of what it makes.
# ``python benchmarks/memory_estimate.py`` measures the ratio for nine models; two runs (2026-12-01) gave
# at most 1.59 and 1.67 for a training step (gated HVAE, IAF) and 1.18 and 1.16 for an evaluation
# (convolutions); the peak of a process's memory varies with the allocator, hence the margin.
TRAINING_COPIES = 2.5
EVALUATION_COPIES = 1.5
# The largest model counted by running it on the CPU: its weights, and one image's pass, are small.
MAX_REAL_PARAMETERS = 10**7
MAX_REAL_PIXELS = 4096


class _BytesMade(TorchFunctionMode):
    """Counts the bytes of the new tensors the torch functions run under it return (not views, not an
    input returned in place); freed ones are counted too."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        self.bytes += sum(
            t.numel() * t.element_size()
            for t in pytree.tree_leaves(out)
            if isinstance(t, torch.Tensor) and t._base is None and id(t) not in inputs
        )
        return out


class Activations(NamedTuple):
    """Bytes of one pass of model and guide: ``fixed + images * per_image + draws * per_draws +
    images * draws * per_draw``."""

    fixed: int
    per_image: int
    per_draws: int  # the particles' own (a few bytes: sizes, and the like)
    per_draw: int

    def bytes(self, images: int, draws: int) -> int:
        return self.fixed + images * self.per_image + draws * self.per_draws + images * draws * self.per_draw


def available_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, or the CPU's available memory (``MemAvailable``)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _vae(config: ModelConfig, device: str):
    """The VAE of ``config`` on ``device``; on ``meta`` a flow guide is replaced by its Gaussian (Pyro's
    transforms read tensor values while they are built, which ``meta`` tensors have not)."""
    from .guides import GUIDES, Flow
    from .model import VAE  # the model imports every registry; the config module must not

    if device == "meta" and issubclass(GUIDES[config.guide], Flow):
        config = dataclasses.replace(config, guide="gaussian", num_flows=ModelConfig.num_flows)
    with torch.device(device):
        return VAE(config)


@functools.lru_cache(maxsize=8)
def parameter_count(config: ModelConfig) -> int:
    """The exact number of parameters of the VAE of ``config``, counted without allocating them."""
    from .guides import GUIDES, Flow

    count = sum(p.numel() for p in _vae(config, "meta").parameters())
    guide = GUIDES[config.guide]
    if issubclass(guide, Flow):
        count += config.num_flows * guide.transform_parameters(config.z_dim, config.hidden_dims[-1])
    return count


@functools.lru_cache(maxsize=8)
def activations(config: ModelConfig) -> Activations:
    """The bytes that model and guide make in one pass (:class:`Activations`)."""
    from .guides import GUIDES, Flow
    from .importance import _log_weights, plate_dims

    real = parameter_count(config) <= MAX_REAL_PARAMETERS and config.x_dim <= MAX_REAL_PIXELS
    device = "cpu" if real else "meta"

    def made(images: int, draws: int) -> int:
        x = torch.zeros(images, config.x_dim, device=device)
        with _BytesMade() as counter:
            _log_weights(vae.model, vae.guide, x, draws, data_dim, particle_dim)
        return counter.bytes

    # The global random state left as it was, and nothing put in Pyro's global param store.
    with (
        torch.random.fork_rng(devices=[]),
        torch.no_grad(),
        pyro.validation_enabled(False),
        pyro.settings.context(module_local_params=True),
    ):
        vae = _vae(config, device)
        data_dim, particle_dim = plate_dims(
            vae.model, vae.guide, (torch.zeros(1, config.x_dim, device=device),)
        )
        b11, b21, b12, b22 = made(1, 1), made(2, 1), made(1, 2), made(2, 2)
    per_draw = b22 - b21 - b12 + b11
    per_image, per_draws = b21 - b11 - per_draw, b12 - b11 - per_draw
    fixed = b11 - per_image - per_draws - per_draw
    if not real and issubclass(GUIDES[config.guide], Flow):
        # each transform's network, one hidden layer as wide as the context, and its affine map
        per_draw += config.num_flows * FLOAT * (2 * config.hidden_dims[-1] + 8 * config.z_dim)
    return Activations(fixed, per_image, per_draws, per_draw)


def training_bytes(config: TrainConfig, num_train: int) -> int:
    """Weights, gradients and Adam's moments, and one batch's pass kept for the backward pass (or the
    per-epoch evaluation's larger batches, without gradients), for ``num_train`` training images."""
    model = config.model
    count = activations(model)
    step = TRAINING_COPIES * count.bytes(min(config.batch_size, num_train), config.num_particles)
    evaluation = EVALUATION_COPIES * count.bytes(min(config.eval_batch_size, num_train), 1)
    return FLOAT * 4 * parameter_count(model) + int(max(step, evaluation))


def evaluation_bytes(model: ModelConfig, config: EvalConfig, num_points: int) -> int:
    """The weights, and one chunk of importance samples for one batch of images (no gradients)."""
    chunk = min(config.chunk_size, config.num_samples)
    chunk_bytes = activations(model).bytes(min(config.batch_size, num_points), chunk)
    return FLOAT * parameter_count(model) + int(EVALUATION_COPIES * chunk_bytes)


def check_fits(needed: int, device: torch.device, what: str) -> None:
    """Refuse, with one line, a job that needs more memory than ``device`` has available."""
    available = available_bytes(device)
    if needed > available:
        raise UserError(
            f"{what} needs about {needed / 2**30:,.1f} GiB of memory and {device} has "
            f"{available / 2**30:,.1f} GiB available; choose smaller sizes"
        )
