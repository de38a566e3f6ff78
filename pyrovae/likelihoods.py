"""Likelihoods ``p(x | z)``: each turns the decoder's output into a Pyro distribution over an image,
and owns the representation of 8-bit pixels it is a true likelihood for.

A new one is one class here, registered by name once::

    @register("my-likelihood")
    class MyLikelihood(Likelihood):
        def forward(self, out):            # out: (..., D * params_per_pixel)
            return dist.Something(...).to_event(1)

``log_px_offset`` converts a density on dequantized data, ``y = (x + u) / 256`` with ``u ~ U(0, 1)^D``,
into a lower bound on the probability of the discrete pixels: ``log P(x) >= E_u log p(y) - D log 256``.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .distributions import BernoulliImage, DiscretizedLogistic
from .registry import registrar

LIKELIHOODS: dict[str, type[Likelihood]] = {}
register = registrar(LIKELIHOODS)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw ``x_bin ~ Bernoulli(x / 255)`` of uint8 grey levels ``x``, as float 0/1.

    A fresh draw (training's, every batch) is ``r < x`` with ``r`` uniform on the integers 0..254, so
    ``P(r < x) = x / 255`` exactly: 0.30 ms for a batch of 128 images on this project's CPU, against
    0.37 ms for ``u < x / 255`` with ``u ~ U[0, 1)`` and 1.31 ms for ``torch.bernoulli``
    (``benchmarks/levers.py``), of a step of about 6 ms. With a ``generator`` (the evaluation sets'
    fixed draw, :func:`pyrovae.data.fixed_representation`) it is ``u < x / 255``, as the first round
    drew them, so that every version of pyrovae scores the same binarized images.
    """
    if generator is None:
        r = torch.empty_like(x, dtype=torch.uint8).random_(0, 255)
        return (r < x).float()
    u = torch.rand(x.shape, generator=generator, device=x.device)
    return (u < x.float().div_(255)).float()


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(x + u) / 256``, ``u ~ U(0, 1)``: grey levels spread uniformly over their bins, inside (0, 1).

    No value sits on the edge of [0, 1], where densities such as a Beta's may be infinite: ``u`` is kept
    off 0 (torch.rand can return it), and float32 would round ``(255 + u) / 256`` up to 1 for ``u`` near 1.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device).clamp_(min=2**-24)
    return ((x.float() + u) / 256).clamp_(max=1 - 2**-24)


class Likelihood(nn.Module):
    """``p(x | z)`` from the decoder's output; see the module's docstring."""

    name: str
    params_per_pixel = 1
    data_description: str

    def __init__(self, x_dim: int):
        super().__init__()
        self.x_dim = x_dim

    @classmethod
    def check(cls, image_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` where this likelihood is no model of images of ``image_shape``."""

    def data(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The representation of uint8 pixels (N, D) this likelihood is a true likelihood of."""
        raise NotImplementedError

    def log_px_offset(self) -> float:
        """Added to ``log p(data)`` to give ``log P(pixels)`` (a bound for dequantized densities)."""
        return 0.0

    def forward(self, out: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError


@register("bernoulli")
class Bernoulli(Likelihood):
    """Independent Bernoulli pixels on binarized images (a fresh binarization every time)."""

    data_description = "binarized pixels"

    @classmethod
    def check(cls, image_shape):
        if len(image_shape) == 3 and image_shape[0] > 1:
            raise ValueError(
                "a Bernoulli likelihood models binarized grey images, not colour ones; choose "
                "--likelihood discretized-logistic (the default for colour images)"
            )

    def data(self, x, generator=None):
        return binarize(x, generator)

    def forward(self, out):
        return BernoulliImage(logits=out)


class Dequantized(Likelihood):
    """A density on dequantized grey levels in [0, 1): subclass it and write ``forward``."""

    data_description = "dequantized grey levels"

    def data(self, x, generator=None):
        return dequantize(x, generator)

    def log_px_offset(self) -> float:
        return -self.x_dim * math.log(256)


@register("continuous-bernoulli")
class ContinuousBernoulli(Dequantized):
    """The continuous Bernoulli (Loaiza-Ganem and Cunningham, 2019) on dequantized grey levels in [0, 1].

    Torch's implementation evaluates its normalising constant ``2 atanh(1 - 2 lam) / (1 - 2 lam)`` by a
    Taylor expansion near ``lam = 1/2``, where the closed form is 0/0.
    """

    data_description = "dequantized grey levels"

    def forward(self, out):
        return dist.ContinuousBernoulli(logits=out).to_event(1)


@register("gaussian")
class Gaussian(Dequantized):
    """``N(loc(z), scale^2)`` on dequantized grey levels, with a learned scale per pixel."""

    data_description = "dequantized grey levels"

    def __init__(self, x_dim: int):
        super().__init__(x_dim)
        # softplus(-2.25) + 1e-3 ~ 0.1 at the start: about the spread of a pixel's grey level.
        self.raw_scale = nn.Parameter(torch.full((x_dim,), -2.25))

    def forward(self, out):
        return dist.Normal(out, F.softplus(self.raw_scale) + 1e-3).to_event(1)


@register("discretized-logistic")
class DiscretizedLogisticPixels(Likelihood):
    """A logistic per pixel integrated over the 256 grey levels: a distribution over the pixels
    themselves, so ``log p`` is already the probability of the 8-bit image."""

    data_description = "pixel levels k / 255"
    params_per_pixel = 2

    def data(self, x, generator=None):
        return x.float() / 255

    def forward(self, out):
        loc, raw_scale = out.unflatten(-1, (2, self.x_dim)).unbind(-2)  # (..., D) each
        return DiscretizedLogistic(torch.sigmoid(loc), F.softplus(raw_scale) + 1e-3).to_event(1)
