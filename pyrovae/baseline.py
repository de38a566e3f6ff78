"""The same VAE written by hand in PyTorch, as notebooks do: closed-form KL plus Bernoulli log-likelihood.

It shares the networks of :mod:`pyrovae.networks`, so the tests can hold the Pyro program against it
number for number, and the benchmarks can time the two side by side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .networks import Decoder, Encoder

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_d log Bernoulli(x_d | sigmoid(logits_d))``: (...,)."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


def normal_log_prob(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``sum_k log N(z_k | loc_k, scale_k^2)``: (...,)."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - HALF_LOG_2PI).sum(-1)


def gaussian_kl(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``KL(N(loc, diag(scale^2)) || N(0, I))`` in closed form: (...,)."""
    return 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)


def elbo_at(encoder: Encoder, decoder: Decoder, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The single-sample ELBO ``log p(x | z) + log p(z) - log q(z | x)`` at a given ``z``: (N,)."""
    loc, scale = encoder(x)
    log_prior = normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z))
    return bernoulli_log_prob(decoder(z), x) + log_prior - normal_log_prob(z, loc, scale)


def closed_form_elbo(
    encoder: Encoder, decoder: Decoder, x: torch.Tensor, z: torch.Tensor | None = None
) -> torch.Tensor:
    """``log p(x | z) - KL(q(z | x) || p(z))`` with ``z ~ q(z | x)`` reparametrised: (N,).

    Pass ``z`` to evaluate at a given draw instead of a fresh one.
    """
    loc, scale = encoder(x)
    if z is None:
        z = torch.distributions.Normal(loc, scale).rsample()
    return bernoulli_log_prob(decoder(z), x) - gaussian_kl(loc, scale)


class ClosedFormLoss(nn.Module):
    """``-sum_n ELBO(x_n)`` with the closed-form KL; a drop-in for Pyro's ELBO module."""

    def __init__(self, encoder: Encoder, decoder: Decoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -closed_form_elbo(self.encoder, self.decoder, x).sum()
