"""Guides ``q(z | x)``: each a module whose ``posterior(x)`` returns a Pyro distribution over z (event
shape (z_dim,)); :meth:`Guide.forward` is the same program for all. A new one is one class::

    @register("my-guide")
    class MyGuide(Guide):
        def posterior(self, x):
            return dist.Something(...).to_event(1)

The flows are Pyro's conditional transforms (``pyro.distributions.transforms``), each conditioned on the
encoder's last hidden layer: ``q(z | x) = T_K(h) o ... o T_1(h)`` applied to ``N(loc(x), scale(x)^2)``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import transforms
from pyro.nn import PyroModule
from torch import nn

from .config import ModelConfig
from .networks import Encoder
from .registry import registrar

GUIDES: dict[str, type[Guide]] = {}
register = registrar(GUIDES)


class Guide(PyroModule):
    """``q(z | x)``, amortised by an encoder; the site ``"z"`` in the plate ``"data"``."""

    name: str
    reads: tuple[str, ...] = ()  # as a prior's (pyrovae.priors.Prior.reads)

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.encoder = Encoder(
            config.x_dim, config.hidden_dims, config.z_dim, config.arch, config.image_shape, config.scale
        )

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        raise NotImplementedError

    def location(self, x: torch.Tensor) -> torch.Tensor:
        """A point that stands for ``q(z | x)`` in pictures: its mean, where known."""
        return self.posterior(x).mean

    def layer_locations(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``E_q[z | x]`` of each latent layer, the top one first, (N, z_dim) each: the statistic of
        Burda et al.'s active units. One layer here: :meth:`location` (``generator`` is unused)."""
        return {"z": self.location(x)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.posterior(x))


@register("gaussian")
class Gaussian(Guide):
    """``q(z | x) = N(loc(x), diag(scale(x)^2))`` (Kingma and Welling, 2014)."""

    def posterior(self, x):
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)


class Flow(Guide):
    """The encoder's Gaussian through ``config.num_flows`` conditional transforms made by ``transform``."""

    reads = ("num_flows",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        # A ModuleList, so that the flows' parameters are the guide's (a list would hide them).
        self.flows = nn.ModuleList(
            self.transform(config.z_dim, self.encoder.context_dim) for _ in range(config.num_flows)
        )

    @staticmethod
    def transform(z_dim: int, context_dim: int) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def transform_parameters(cls, z_dim: int, context_dim: int) -> int:
        """Parameters of one transform. Pyro's transforms read tensor values while they are built, so
        they cannot be counted on the ``meta`` device: a small one is built on the CPU and counted, a
        large one bounded from above (a network of one hidden layer as wide as its context, with up to
        32 outputs per latent dimension, as the spline's knots need)."""
        if (z_dim + context_dim) * context_dim <= 10**6:
            with torch.device("cpu"), torch.random.fork_rng(devices=[]):  # the global stream untouched
                return sum(p.numel() for p in cls.transform(z_dim, context_dim).parameters())
        return (z_dim + context_dim + 1) * context_dim + 32 * z_dim * (context_dim + 1)

    def posterior(self, x):
        loc, scale, h = self.encoder.with_context(x)  # (N, z_dim) twice, (N, context_dim)
        base = dist.Normal(loc, scale).to_event(1)
        return dist.ConditionalTransformedDistribution(base, list(self.flows)).condition(h)

    def location(self, x):
        """The flows applied to the base Gaussian's mean (a flow's own mean has no closed form)."""
        loc, _, h = self.encoder.with_context(x)
        for flow in self.flows:
            loc = flow.condition(h)(loc)
        return loc


@register("iaf")
class InverseAutoregressiveFlow(Flow):
    """Inverse autoregressive flows (Kingma et al., 2016), in their numerically stable, gated form;
    each with its own ordering of the dimensions."""

    @staticmethod
    def transform(z_dim, context_dim):
        # Pyro's autoregressive networks are at least as wide as their input.
        return transforms.conditional_affine_autoregressive(
            z_dim, context_dim, hidden_dims=[max(context_dim, z_dim)], stable=True
        )


@register("planar")
class PlanarFlow(Flow):
    """Planar flows (Rezende and Mohamed, 2015): ``z + u tanh(w^T z + b)``, ``u, w, b`` from the context."""

    @staticmethod
    def transform(z_dim, context_dim):
        return transforms.conditional_planar(z_dim, context_dim, hidden_dims=[context_dim])


@register("spline")
class SplineFlow(Flow):
    """Elementwise rational-quadratic splines (Durkan et al., 2019) on [-3, 3], their knots from the
    context."""

    @staticmethod
    def transform(z_dim, context_dim):
        return transforms.conditional_spline(z_dim, context_dim, hidden_dims=[context_dim], count_bins=8)
