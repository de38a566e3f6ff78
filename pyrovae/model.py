"""The VAE as a Pyro program (Kingma and Welling, 2014), and its two-layer hierarchy (Tomczak and
Welling, 2018).

Generative model (the decoder), with the default prior and likelihood::

    z_n ~ N(0, I)                          n = 1..N,  z_n in R^{z_dim}
    x_n ~ Bernoulli(logits = f_theta(z_n))  x_n in {0, 1}^D

Inference model (the guide, the encoder; see :mod:`pyrovae.guides` for the flows)::

    z_n ~ N(loc_phi(x_n), diag(scale_phi(x_n)^2))

Both are trained together by maximising a bound on ``log p(x)`` (see :mod:`pyrovae.objectives`), the
ELBO ``E_q[log p(x, z) - log q(z | x)]`` by default.

Example::

    vae = VAE(ModelConfig(z_dim=20))
    loss = pyro.infer.Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)  # x: (N, 784) in {0, 1}
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from .config import ModelConfig
from .guides import GUIDES, Guide
from .likelihoods import LIKELIHOODS
from .networks import Decoder, Encoder, JointDecoder, JointEncoder
from .priors import PRIORS
from .registry import registrar

MODELS: dict[str, type[Model]] = {}
register = registrar(MODELS)


@register("vae")
class Model(PyroModule):
    """``p(x, z) = p(z) p(x | z)``; the sites are ``"z"`` and ``"x"`` in the plate ``"data"``.

    ``p(z)`` and ``p(x | z)`` are the prior and likelihood named in the config (see
    :mod:`pyrovae.priors`, :mod:`pyrovae.likelihoods`); ``encoder`` is the guide's, for priors built on it.
    """

    # The plates a site may sit in (just "data"); objectives put their particles left of them.
    max_plate_nesting = 1
    # The guide whose program (its ``forward``) :meth:`log_weight_terms` restates with this one's.
    guide_program = Guide

    def __init__(self, config: ModelConfig, encoder: nn.Module):
        super().__init__()
        self.p_x = LIKELIHOODS[config.likelihood_name](config.x_dim)
        self.p_z = PRIORS[config.prior](config, encoder)
        outputs = config.x_dim * self.p_x.params_per_pixel
        self.decoder = Decoder(config.z_dim, config.hidden_dims, outputs, config.arch, config.image_shape)

    @staticmethod
    def make_guide(config: ModelConfig) -> Guide:
        """The guide this model is fitted with: the one the config names."""
        return GUIDES[config.guide](config)

    def prior(self) -> dist.Distribution:
        """``p(z)``."""
        return self.p_z()

    def likelihood(self, z: torch.Tensor) -> dist.Distribution:
        """``p(x | z)``."""
        return self.p_x(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # dim=-1 leaves the dimensions on the left free for a particles plate (see log_likelihood).
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(z), obs=x)

    def log_weight_terms(
        self, guide: Guide, x: torch.Tensor, num_particles: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x | z), log p(z) - log q(z | x))`` at draws ``z ~ q(z | x)``: (N,) each, or (K, N) for
        ``num_particles=K``; their sum is the log importance weight ``log w``.

        :meth:`forward` and the guide's without Pyro's effect handlers, drawing the same numbers in the
        same order as Pyro does (see :func:`is_static`). The objectives use it where no handler is
        active, and Pyro's traces everywhere else; tests hold the two equal.
        """
        q = guide.posterior(x)  # batch (N,), event (z_dim,)
        z = q.rsample() if num_particles is None else q.rsample((num_particles,))  # ([K,] N, z_dim)
        return self.likelihood(z).log_prob(x), self.prior().log_prob(z) - q.log_prob(z)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """``p(x | z)`` for the top latent ``z`` (here the only one): what the pictures draw."""
        return self.likelihood(z)

    def reconstruction(self, guide: Guide, x: torch.Tensor) -> dist.Distribution:
        """``p(x | z)`` at the posterior's location, ``z = E_q[z | x]``."""
        return self.likelihood(guide.location(x))


class HierarchicalGuide(Guide):
    """``q(z2 | x) q(z1 | x, z2)``, diagonal Gaussians; ``posterior`` is the top layer's ``q(z2 | x)``."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.encoder_z1 = JointEncoder(
            config.x_dim, config.z_dim, config.hidden_dims, config.z_dim, config.arch, config.image_shape,
            scale=config.scale,
        )  # fmt: skip

    def posterior(self, x):
        return dist.Normal(*self.encoder(x)).to_event(1)

    def lower(self, x: torch.Tensor, z2: torch.Tensor) -> dist.Distribution:
        """``q(z1 | x, z2)``."""
        return dist.Normal(*self.encoder_z1(x, z2)).to_event(1)

    # E_q[z1 | x] has no closed form: it is a mean over draws of z2 ~ q(z2 | x). The variance over the
    # data of that mean exceeds the true one by the images' mean Var_{q(z2|x)}(E[z1 | x, z2]) / draws.
    LOCATION_DRAWS = 100

    def layer_locations(self, x: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``E_q[z2 | x]``, and ``E_q[z1 | x] = E_{q(z2 | x)} E[z1 | x, z2]`` over ``LOCATION_DRAWS``
        draws of z2 from ``generator`` (Burda et al. estimate a lower layer's activity the same way)."""
        loc, scale = self.encoder(x)  # (N, z_dim) each
        features = self.encoder_z1.a(x)  # (N, width): x read once
        total = torch.zeros_like(loc)
        for _ in range(self.LOCATION_DRAWS):  # one at a time: the memory of one pass, at any batch size
            eps = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
            total += self.encoder_z1.given(features, loc + scale * eps)[0]
        return {"z2": loc, "z1": total / self.LOCATION_DRAWS}

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.posterior(x))
            return pyro.sample("z1", self.lower(x, z2))


@register("hvae")
class HierarchicalModel(Model):
    """The two-stochastic-layer VAE of the VampPrior paper (Tomczak and Welling, 2018, Sec. 3.3;
    jmtomczak/vae_vampprior, ``models/HVAE_2level.py``), with z1 and z2 both of size ``z_dim``::

        p(x, z1, z2) = p(z2) p(z1 | z2) p(x | z1, z2)      q(z1, z2 | x) = q(z2 | x) q(z1 | x, z2)

    ``p(z2)`` is any prior of the registry (the VampPrior at the guide's ``q(z2 | x)``); ``p(z1 | z2)``,
    ``q(z2 | x)`` and ``q(z1 | x, z2)`` are diagonal Gaussians. Sites ``"z2"``, ``"z1"``, ``"x"``.
    """

    guide_program = HierarchicalGuide

    def __init__(self, config: ModelConfig, encoder: nn.Module):
        super().__init__(config, encoder)
        hidden, z = config.hidden_dims, config.z_dim
        del self.decoder
        self.p_z1 = Encoder(z, hidden, z, config.arch, scale=config.scale)  # z2 -> (loc, scale) of z1
        outputs = config.x_dim * self.p_x.params_per_pixel
        self.decoder = JointDecoder(z, z, hidden, outputs, config.arch, config.image_shape)

    @staticmethod
    def make_guide(config):
        return HierarchicalGuide(config)

    def conditional_prior(self, z2: torch.Tensor) -> dist.Distribution:
        """``p(z1 | z2)``."""
        return dist.Normal(*self.p_z1(z2)).to_event(1)

    def likelihood(self, z1: torch.Tensor, z2: torch.Tensor) -> dist.Distribution:
        """``p(x | z1, z2)``."""
        return self.p_x(self.decoder(z1, z2))

    def forward(self, x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.conditional_prior(z2))
            return pyro.sample("x", self.likelihood(z1, z2), obs=x)

    def log_weight_terms(self, guide, x, num_particles=None):
        """``(log p(x | z1, z2), log p(z2) + log p(z1 | z2) - log q(z2 | x) - log q(z1 | x, z2))``, as
        :meth:`Model.log_weight_terms`: z2 drawn first, then z1, as the guide's program draws them."""
        q2 = guide.posterior(x)  # batch (N,), event (z_dim,)
        z2 = q2.rsample() if num_particles is None else q2.rsample((num_particles,))  # ([K,] N, z_dim)
        q1 = guide.lower(x, z2)  # batch ([K,] N)
        z1 = q1.rsample()
        log_p_z = self.prior().log_prob(z2) + self.conditional_prior(z2).log_prob(z1)
        return self.likelihood(z1, z2).log_prob(x), log_p_z - q2.log_prob(z2) - q1.log_prob(z1)

    def decode(self, z2):
        return self.likelihood(self.conditional_prior(z2).mean, z2)

    def reconstruction(self, guide, x):
        z2 = guide.location(x)
        return self.likelihood(guide.lower(x, z2).mean, z2)


def is_static(model: object, guide: object) -> bool:
    """Whether ``model`` and ``guide`` run exactly the programs that ``model.log_weight_terms`` restates:
    the ``forward`` of the model class that defines it and of that class's ``guide_program`` (subclasses
    may change the prior, the likelihood or the posterior, not ``forward``)."""
    if not (isinstance(model, Model) and isinstance(guide, Guide)):
        return False
    owner = next(c for c in type(model).__mro__ if "log_weight_terms" in vars(c))
    return type(model).forward is owner.forward and type(guide).forward is owner.guide_program.forward


class VAE(nn.Module):
    """The model and its guide, with the helpers that look at what they learned."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        family = MODELS[self.config.family]
        self.guide = family.make_guide(self.config)
        self.model = family(self.config, self.guide.encoder)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Pixel means ``E[x | z]`` of ``num_samples`` draws ``z ~ p(z)``: (num_samples, D)."""
        return self.model.decode(self.model.prior().sample((num_samples,))).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel means ``E[x | z]`` at the posterior's location ``z = E_q[z | x]``: (N, D)."""
        return self.model.reconstruction(self.guide, x).mean
