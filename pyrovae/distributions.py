"""Distributions the likelihoods return; each is a Pyro distribution, usable in any Pyro program."""

from __future__ import annotations

import pyro.distributions as dist
import torch


class BernoulliImage(dist.Independent):
    """Independent Bernoulli pixels: ``Bernoulli(logits=logits).to_event(1)``, same support and samples.

    Only ``log_prob`` differs, in speed: ``sum_d [x_d logits_d - softplus(logits_d)]`` is computed as a
    dot product and one softplus, not as binary cross-entropy's elementwise passes over (..., D), which
    are most of the cost when thousands of importance samples are scored at once.
    """

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        super().__init__(dist.Bernoulli(logits=logits, validate_args=validate_args), 1, validate_args)

    @property
    def logits(self) -> torch.Tensor:
        return self.base_dist.logits

    def expand(self, batch_shape, _instance=None) -> BernoulliImage:
        shape = torch.Size(batch_shape) + self.event_shape
        return BernoulliImage(self.logits.expand(shape), validate_args=self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.logits
        # logaddexp(l, 0) is softplus without F.softplus's cut-off (it returns l itself above 20).
        return torch.linalg.vecdot(logits, value) - torch.logaddexp(logits, logits.new_zeros(())).sum(-1)
