"""Priors ``p(z)``: each a module returning a Pyro distribution over z (event shape (z_dim,)); learnable
parameters are trained by the same SVI step as the networks. A new one is one class, registered once::

    @register("my-prior")
    class MyPrior(Prior):
        def forward(self):
            return dist.Something(...).to_event(1)
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .distributions import DiagonalNormalMixture, UnitNormal
from .registry import registrar

PRIORS: dict[str, type[Prior]] = {}
register = registrar(PRIORS)


class Prior(nn.Module):
    """``p(z)`` over ``config.z_dim`` dimensions. ``encoder`` is the guide's (the VampPrior is built from
    it); ``config.num_components`` sizes the mixtures."""

    name: str
    # The options of ModelConfig that only some parts use, which this one reads (a config that sets one
    # that none of its parts reads is refused: config.json would keep a value that was never used).
    reads: tuple[str, ...] = ()

    def __init__(self, config: ModelConfig, encoder: nn.Module):
        super().__init__()
        self.z_dim = config.z_dim

    def forward(self) -> dist.Distribution:
        raise NotImplementedError


def _normal(shape: tuple[int, ...], generator: torch.Generator, std: float = 1.0) -> torch.Tensor:
    """``std`` times standard normal draws from ``generator``. Where a module is only being shaped
    (``torch.device("meta")``, as memory.py counts one) nothing is drawn: a CPU generator's draws there
    would be made for real, and the arithmetic on them run through torch's Python references, which
    import torch._dynamo (some 2 s)."""
    if torch.get_default_device().type == "meta":
        return torch.empty(shape)
    return std * torch.randn(shape, generator=generator)


@register("normal")
class StandardNormal(Prior):
    """``N(0, I)``."""

    def __init__(self, config, encoder):
        super().__init__(config, encoder)
        # Buffers, not constants, so that .to(device) is the only device code.
        self.register_buffer("loc", torch.zeros(self.z_dim))
        self.register_buffer("scale", torch.ones(self.z_dim))

    def forward(self):
        return UnitNormal(self.loc, self.scale).to_event(1)


@register("studentt")
class StudentT(Prior):
    """Independent Student-t coordinates with 4 degrees of freedom: heavier tails than N(0, I)."""

    df = 4.0

    def __init__(self, config, encoder):
        super().__init__(config, encoder)
        self.register_buffer("loc", torch.zeros(self.z_dim))
        self.register_buffer("scale", torch.ones(self.z_dim))

    def forward(self):
        return dist.StudentT(self.df, self.loc, self.scale).to_event(1)


@register("mog")
class MixtureOfGaussians(Prior):
    """``sum_k pi_k N(loc_k, diag(scale_k^2))`` with learned weights, locations and scales."""

    reads = ("num_components",)

    def __init__(self, config, encoder):
        super().__init__(config, encoder)
        k, z_dim = config.num_components, config.z_dim
        g = torch.Generator().manual_seed(0)  # spread the components without touching the global seed
        self.loc = nn.Parameter(_normal((k, z_dim), g))
        self.raw_scale = nn.Parameter(torch.full((k, z_dim), math.log(math.e - 1)))  # scale 1
        self.logits = nn.Parameter(torch.zeros(k))

    def forward(self):
        return DiagonalNormalMixture(self.logits, self.loc, F.softplus(self.raw_scale) + 1e-4)


@register("vamp")
class VampPrior(Prior):
    """The VampPrior (Tomczak and Welling, 2018): ``(1/K) sum_k q(z | u_k)``, the guide's posteriors at
    K learned pseudo-inputs ``u_k`` in the data's space."""

    reads = ("num_components",)

    def __init__(self, config, encoder):
        super().__init__(config, encoder)
        g = torch.Generator().manual_seed(0)
        self.raw_pseudo_inputs = nn.Parameter(_normal((config.num_components, config.x_dim), g, 0.1))
        self.encoder = encoder  # shared with the guide, not a copy

    @property
    def pseudo_inputs(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_pseudo_inputs)  # (K, D) in (0, 1), like every data representation

    def forward(self):
        loc, scale = self.encoder(self.pseudo_inputs)  # (K, z_dim) each
        return DiagonalNormalMixture(loc.new_zeros(loc.shape[0]), loc, scale)


def has_closed_form_kl(prior: dist.Distribution, posterior: dist.Distribution) -> bool:
    """Whether ``KL(posterior || prior)`` is known in closed form, as TraceMeanField_ELBO needs."""
    try:
        torch.distributions.kl_divergence(posterior, prior)
    except NotImplementedError:
        return False
    return True
