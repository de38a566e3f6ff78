"""The VAE as a Pyro program (Kingma and Welling, 2014).

Generative model (the decoder), with the default prior and likelihood::

    z_n ~ N(0, I)                          n = 1..N,  z_n in R^{z_dim}
    x_n ~ Bernoulli(logits = f_theta(z_n))  x_n in {0, 1}^D

Inference model (the guide, the encoder)::

    z_n ~ N(loc_phi(x_n), diag(scale_phi(x_n)^2))

Both are trained together by maximising the ELBO,
``E_q[log p(x, z) - log q(z | x)] <= log p(x)``, with Pyro's ``Trace_ELBO``.

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
from .likelihoods import LIKELIHOODS
from .networks import Decoder, Encoder
from .priors import PRIORS


class Model(PyroModule):
    """``p(x, z) = p(z) p(x | z)``; the sites are ``"z"`` and ``"x"`` in the plate ``"data"``.

    ``p(z)`` and ``p(x | z)`` are the prior and likelihood named in the config (see
    :mod:`pyrovae.priors`, :mod:`pyrovae.likelihoods`); ``encoder`` is the guide's, for priors built on it.
    """

    # The plates a site may sit in (just "data"); objectives put their particles left of them.
    max_plate_nesting = 1

    def __init__(self, config: ModelConfig, encoder: nn.Module):
        super().__init__()
        self.p_x = LIKELIHOODS[config.likelihood](config.x_dim)
        self.p_z = PRIORS[config.prior](config.z_dim, config.x_dim, config.num_components, encoder)
        self.decoder = Decoder(config.z_dim, config.hidden_dims, config.x_dim * self.p_x.params_per_pixel)

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


class Guide(PyroModule):
    """``q(z | x) = N(loc(x), diag(scale(x)^2))``, amortised by the encoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.encoder = Encoder(config.x_dim, config.hidden_dims, config.z_dim)

    def posterior(self, x: torch.Tensor) -> dist.Distribution:
        loc, scale = self.encoder(x)
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with pyro.plate("data", x.shape[0], dim=-1):
            return pyro.sample("z", self.posterior(x))


def is_static(model: object, guide: object) -> bool:
    """Whether ``model`` and ``guide`` run exactly the programs of :class:`Model` and :class:`Guide`
    (subclasses may change the prior, the likelihood or the posterior, not ``forward``)."""
    return (
        isinstance(model, Model)
        and isinstance(guide, Guide)
        and type(model).forward is Model.forward
        and type(guide).forward is Guide.forward
    )


def log_weight_terms(
    model: Model, guide: Guide, x: torch.Tensor, num_particles: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log p(x | z), log p(z) - log q(z | x))`` at draws ``z ~ q(z | x)``: (N,) each, or (K, N) for
    ``num_particles=K``; their sum is the log importance weight ``log w``.

    :meth:`Model.forward` and :meth:`Guide.forward` without Pyro's effect handlers, drawing the same
    numbers in the same order as Pyro does (see :func:`is_static`). The objectives use it where no
    handler is active, and Pyro's traces everywhere else; tests hold the two equal.
    """
    q = guide.posterior(x)  # batch (N,), event (z_dim,)
    z = q.rsample() if num_particles is None else q.rsample((num_particles,))  # ([K,] N, z_dim)
    return model.likelihood(z).log_prob(x), model.prior().log_prob(z) - q.log_prob(z)


class VAE(nn.Module):
    """The model and its guide, with the helpers that look at what they learned."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config if config is not None else ModelConfig()
        self.guide = Guide(self.config)
        self.model = Model(self.config, self.guide.encoder)

    @torch.no_grad()
    def sample(self, num_samples: int) -> torch.Tensor:
        """Pixel means ``E[x | z]`` of ``num_samples`` draws ``z ~ p(z)``: (num_samples, D)."""
        z = self.model.prior().sample((num_samples,))
        return self.model.likelihood(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel means ``E[x | z]`` at the posterior mean ``z = E_q[z | x]``: (N, D)."""
        return self.model.likelihood(self.guide.posterior(x).mean).mean
