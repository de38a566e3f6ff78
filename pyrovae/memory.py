"""Memory a job will need, estimated before anything is allocated, against the memory there is.

A model is built on torch's ``meta`` device (shapes, no storage) to count its parameters exactly; the
activations of one batch are estimated from the layer widths. A job whose estimate exceeds the memory
available is refused with one line, rather than killed by the kernel halfway through.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .config import EvalConfig, ModelConfig, TrainConfig
from .errors import UserError

FLOAT = 4  # bytes of a float32
# Floats kept per activation in a training step: the forward value saved for backward, its gradient,
# and temporaries of about the same size.
ACTIVATION_COPIES = 4


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


def parameter_count(config: ModelConfig) -> int:
    """The exact number of parameters of the VAE of ``config``, counted without allocating them."""
    from .guides import GUIDES, Flow
    from .model import VAE  # the model imports every registry; the config module must not

    guide = GUIDES[config.guide]
    flows = issubclass(guide, Flow)
    with torch.device("meta"):
        vae = VAE(dataclasses.replace(config, guide="gaussian") if flows else config)
    count = sum(p.numel() for p in vae.parameters())
    if flows:
        count += config.num_flows * guide.transform_parameters(config.z_dim, config.hidden_dims[-1])
    return count


def _floats_per_image(config: ModelConfig, num_particles: int) -> int:
    """Activations of one image through encoder and decoder, with ``num_particles`` draws of z."""
    from .likelihoods import LIKELIHOODS
    from .priors import PRIORS

    hidden = sum(config.hidden_dims)
    outputs = config.x_dim * LIKELIHOODS[config.likelihood_name].params_per_pixel
    encoder = config.x_dim + hidden + 2 * config.z_dim
    decoder = config.z_dim + hidden + outputs + config.x_dim  # and the data as broadcast against them
    decoder += PRIORS[config.prior].floats_per_draw(config.num_components)  # log p(z)
    return encoder + num_particles * decoder


def training_bytes(config: TrainConfig, num_train: int) -> int:
    """Weights, gradients and Adam's moments, and one batch's activations (with the pseudo-inputs'
    pass through the encoder, for the VampPrior), for ``num_train`` training images."""
    from .priors import PRIORS

    model = config.model
    images = min(config.batch_size, num_train) + PRIORS[model.prior].encoder_images(model.num_components)
    activations = ACTIVATION_COPIES * images * _floats_per_image(model, config.num_particles)
    evaluation = min(config.eval_batch_size, num_train) * _floats_per_image(model, 1)
    return FLOAT * (4 * parameter_count(model) + max(activations, evaluation))


def evaluation_bytes(model: ModelConfig, config: EvalConfig, num_points: int) -> int:
    """The weights, and one chunk of importance samples for one batch of images (no gradients)."""
    chunk = min(config.chunk_size, config.num_samples)
    per_chunk = min(config.batch_size, num_points) * _floats_per_image(model, chunk)
    return FLOAT * (parameter_count(model) + 2 * per_chunk)


def check_fits(needed: int, device: torch.device, what: str) -> None:
    """Refuse, with one line, a job that needs more memory than ``device`` has available."""
    available = available_bytes(device)
    if needed > available:
        raise UserError(
            f"{what} needs about {needed / 2**30:,.1f} GiB of memory and {device} has "
            f"{available / 2**30:,.1f} GiB available; choose smaller sizes"
        )
