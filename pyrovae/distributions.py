"""Distributions the likelihoods return; each is a Pyro distribution, usable in any Pyro program."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import pyro.distributions as dist
import torch


def _bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    # logaddexp(l, 0) is softplus without F.softplus's cut-off (it returns l itself above 20).
    return torch.linalg.vecdot(logits, value) - torch.logaddexp(logits, logits.new_zeros(())).sum(-1)


def _fused_bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return (logits * value - torch.logaddexp(logits, logits.new_zeros(()))).sum(-1)


_compiled: Callable | None = None
_use_compiled = False


@contextlib.contextmanager
def compiled_log_prob(enabled: bool = True) -> Iterator[None]:
    """Within this context, :class:`BernoulliImage` scores with one kernel fused by ``torch.compile``.

    About three times faster on a CPU once compiled, which takes some 20 s the first time in a
    process: worth it for evaluations that score millions of importance samples, not for small jobs.
    Where compilation fails, the eager computation (the same numbers) is used, with a warning.
    """
    global _compiled, _use_compiled
    if enabled and _compiled is None:
        _compiled = torch.compile(_fused_bernoulli_log_prob, dynamic=True)
    previous, _use_compiled = _use_compiled, enabled
    try:
        yield
    finally:
        _use_compiled = previous


def _log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    global _compiled, _use_compiled
    if _use_compiled and _compiled is not None:
        try:
            return _compiled(logits, value)
        except Exception as e:  # no C++ compiler, an unsupported platform: fall back for good
            warnings.warn(f"torch.compile failed ({type(e).__name__}); scoring eagerly", stacklevel=3)
            _compiled, _use_compiled = None, False
    return _bernoulli_log_prob(logits, value)


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
        return _log_prob(self.logits, value)
