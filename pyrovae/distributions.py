"""Distributions the likelihoods return; each is a Pyro distribution, usable in any Pyro program."""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.util import broadcast_shape


class _BernoulliLogProb(torch.autograd.Function):
    """``sum_d [x_d l_d - softplus(l_d)]`` over the last dimension, one autograd node, ``x`` held fixed.

    softplus(l) = max(l, 0) - log sigmoid(|l|), through torch's sigmoid and log, which are vectorized
    on the CPU; its log1p, inside log_sigmoid and so inside ``binary_cross_entropy_with_logits``, is not:
    the fused binary cross-entropy took 0.55-0.59 ms forward on a 128 x 784 batch, this takes 0.18-0.29
    (``benchmarks/levers.py``, part 2, four runs). Rounding sigmoid(|l|) costs at most 2^-24 nats a
    pixel, as much as the binary cross-entropy's own rounding. The gradient ``(x - sigmoid(l)) g`` is
    the binary cross-entropy's, bit for bit.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, value)
        log_sigmoid_abs = torch.sigmoid(logits.abs()).log_()  # -log(1 + e^-|l|)
        return torch.addcmul(log_sigmoid_abs, logits, value).sub_(logits.clamp(min=0)).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, value = ctx.saved_tensors  # value never requires grad here (see _bernoulli_log_prob)
        grad_logits = (value - torch.sigmoid(logits)).mul_(grad.unsqueeze(-1))
        return grad_logits.sum_to_size(logits.shape), None


def _bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    if value.requires_grad:  # a relaxed or learned target: torch's own, which differentiates in both
        logits, value = torch.broadcast_tensors(logits, value)  # views, no copies
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)
    return _BernoulliLogProb.apply(logits, value)


def _fused_bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    # x l - softplus(l), softplus(l) = max(l, 0) + log(1 + e^-|l|). log, not log1p: inductor vectorizes
    # log on the CPU and not log1p, which made the score cost 40% of the decoder's time at K = 500 (6x
    # slower than this; benchmarks/log_likelihood.py). Rounding 1 + e^-|l| costs at most 2^-24 nats a
    # pixel, below the float32 sum's own rounding over 784 pixels.
    return (logits * value - logits.clamp(min=0) - torch.log(1 + torch.exp(-logits.abs()))).sum(-1)


_compiled: Callable | None = None
_use_compiled = False


@contextlib.contextmanager
def compiled_log_prob(enabled: bool = True) -> Iterator[None]:
    """Within this context, :class:`BernoulliImage` scores with one kernel fused by ``torch.compile``.

    Twelve to fourteen times faster than the eager binary cross-entropy on this project's CPU once
    compiled (``benchmarks/levers.py``), which takes some 20 s the first time in a process: worth it for
    evaluations that score millions of importance samples, not for small jobs.
    Where compilation fails, the eager computation (the same numbers) is used, with a warning.
    """
    global _compiled, _use_compiled
    if enabled and _compiled is None:
        # Inductor's C++ build step looks for a CUDA toolkit and, on a CPU-only machine with torch's CUDA
        # wheel, logs "No CUDA runtime is found" at WARNING: nothing is wrong, so nothing is shown.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
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

    Only ``log_prob`` differs: ``sum_d [x_d logits_d - softplus(logits_d)]`` as one autograd node
    (:class:`_BernoulliLogProb`), with ``value`` broadcast against particle dimensions, or, inside
    :func:`compiled_log_prob`, by one kernel fused by ``torch.compile``, for the millions of importance
    samples of an evaluation. (It replaced torch's fused binary cross-entropy, which had replaced a dot
    product and ``logaddexp``: each took longer forward and backward on a training batch on this
    project's CPU, torch 2.14: ``benchmarks/levers.py``, part 2.)
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


class UnitNormal(dist.Normal):
    """``N(0, 1)`` in each coordinate: Pyro's ``Normal(zeros, ones)``, whose ``log_prob`` leaves out the
    arithmetic that 0 and 1 make exact. ``-(z - 0)^2 / (2 * 1^2) - log 1 - log sqrt(2 pi)`` is
    ``-z^2 / 2 - log sqrt(2 pi)`` bit for bit (subtracting 0 and halving are exact in floating point),
    in three operations instead of nine, forward and backward, on every training step."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        log_p = -(value**2) / 2 - math.log(math.sqrt(2 * math.pi))
        # Pyro's broadcast_shape, not torch.broadcast_shapes: torch's imports sympy on its first call in
        # a process, 0.3-0.4 s of every command's first step (benchmarks/commands.py --only startup).
        shape = broadcast_shape(log_p.shape, self.batch_shape)
        return log_p if shape == log_p.shape else log_p.expand(shape)


def _log_sub_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(exp(a) - exp(b))`` for ``a > b``, without overflow or cancellation."""
    return a + torch.log(-torch.expm1(b - a))


class DiscretizedLogistic(dist.TorchDistribution):
    """A logistic density integrated over the bins of 256 grey levels ``k / 255``, ``k = 0..255``
    (Salimans et al., 2017, PixelCNN++): ``P(k) = F((k + 1/2) / 255) - F((k - 1/2) / 255)``, the outer
    bins reaching to -inf and +inf, so the 256 probabilities sum to one. Values are the levels ``k / 255``.
    """

    arg_constraints = {"loc": dist.constraints.real, "scale": dist.constraints.positive}
    support = dist.constraints.unit_interval  # the 256 levels k / 255 within it
    has_rsample = False
    levels = 256

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: bool | None = None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> DiscretizedLogistic:
        return DiscretizedLogistic(self.loc.expand(batch_shape), self.scale.expand(batch_shape))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        half_bin = 0.5 / (self.levels - 1)
        upper = (value + half_bin - self.loc) / self.scale
        lower = (value - half_bin - self.loc) / self.scale
        # sigmoid(u) - sigmoid(l) = sigmoid(-l) - sigmoid(-u): right of the mode the upper tail is used,
        # so neither side subtracts two numbers close to 1.
        right = value > self.loc
        a, b = torch.where(right, -lower, upper), torch.where(right, -upper, lower)
        mid = _log_sub_exp(F.logsigmoid(a), F.logsigmoid(b))
        first = F.logsigmoid(upper)  # k = 0: F(upper) - 0
        last = F.logsigmoid(-lower)  # k = 255: 1 - F(lower)
        return torch.where(value < half_bin, first, torch.where(value > 1 - half_bin, last, mid))

    def _probs(self) -> torch.Tensor:
        k = torch.arange(self.levels, dtype=self.loc.dtype, device=self.loc.device) / (self.levels - 1)
        return self.log_prob(k.expand(*self.batch_shape, self.levels).movedim(-1, 0)).exp()  # (256, ...)

    @property
    def mean(self) -> torch.Tensor:
        k = torch.arange(self.levels, dtype=self.loc.dtype, device=self.loc.device) / (self.levels - 1)
        return torch.tensordot(k, self._probs(), dims=([0], [0]))

    def sample(self, sample_shape=()) -> torch.Tensor:
        with torch.no_grad():
            u = torch.rand(torch.Size(sample_shape) + self.batch_shape, device=self.loc.device)
            u = u.clamp(1e-6, 1 - 1e-6).to(self.loc.dtype)
            y = self.loc + self.scale * (torch.log(u) - torch.log1p(-u))
            return (y * (self.levels - 1)).round().clamp(0, self.levels - 1) / (self.levels - 1)


def _log_sum_exp(x: torch.Tensor) -> torch.Tensor:
    """``log sum_k exp(x_k)`` over the last dimension, as torch.logsumexp but for exp's slow path.

    exp of a float32 below about -87 (a subnormal or zero result) leaves the CPU's vectorized exp:
    0.84-1.26 ms for 50,000 values near -90 against 0.033-0.049 near 0 on this project's CPU
    (``benchmarks/levers.py --parts 4``), and most of a mixture's components lie that far below the
    nearest one. Terms more than 80 below the largest add
    less than e^-80 of it, far below the sum's rounding, so they are counted at e^-80 instead.
    """
    peak = x.detach().amax(-1, keepdim=True)  # detached: its gradient cancels exactly anyway
    shift = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # a row of -inf stays -inf
    return (x - shift).clamp(min=-80).exp().sum(-1).log() + peak.squeeze(-1)


class DiagonalNormalMixture(dist.MixtureSameFamily):
    """``sum_k pi_k N(z; loc_k, diag(scale_k^2))``: Pyro's ``MixtureSameFamily`` of diagonal Normals
    (``logits`` (K,), ``loc`` and ``scale`` (K, D)), whose log-density goes through one matrix product.

    Each component's squared distance ``sum_d (z_d - loc_kd)^2 / scale_kd^2`` is the quadratic form
    ``[z^2, z] @ [1 / scale^2, -2 loc / scale^2]^T + sum_d loc_kd^2 / scale_kd^2``: (M, 2D) x (2D, K)
    instead of MixtureSameFamily's (M, K, D) differences, squares and quotients: a quarter to a third of a
    VampPrior training step (500 components, z = 40, batch 100), and 18.8 GiB of memory against 0.72
    scoring 100 images at K = 1000 (``benchmarks/levers.py --parts 4``).
    Expanding the square cancels large terms where a scale is small, so the form is summed in float64
    (rounding well below float32's on the exact differences); the rest is in the value's dtype.
    Broadcasting over a batch (a plate) keeps the (K, D) components: they are the same at every point.
    """

    def __init__(
        self,
        logits: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        validate_args: bool | None = None,
    ):
        if logits.dim() != 1 or loc.dim() != 2 or loc.shape != scale.shape:
            raise ValueError("logits must be (K,) and loc, scale (K, D)")
        self._params = logits, loc, scale  # unexpanded, whatever batch the mixture is broadcast to
        super().__init__(
            dist.Categorical(logits=logits, validate_args=validate_args),
            dist.Normal(loc, scale, validate_args=validate_args).to_event(1),
            validate_args,
        )

    def expand(self, batch_shape, _instance=None) -> DiagonalNormalMixture:
        new = super().expand(batch_shape, self._get_checked_instance(DiagonalNormalMixture, _instance))
        new._params = self._params
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits, loc, scale = self._params
        loc64, precision = loc.double(), scale.double().pow(-2)  # (K, D) each
        z = value.reshape(-1, value.shape[-1]).double()  # (M, D)
        weighted_loc = loc64 * precision
        distance = torch.addmm(
            (loc64 * weighted_loc).sum(-1),  # (K,)
            torch.cat([z * z, z], dim=-1),  # (M, 2D)
            torch.cat([precision, -2 * weighted_loc], dim=-1).T,  # (2D, K)
        ).to(value.dtype)  # (M, K)
        log_normal = -0.5 * distance - scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_p = _log_sum_exp(log_normal + torch.log_softmax(logits, -1)).reshape(value.shape[:-1])
        shape = broadcast_shape(log_p.shape, self.batch_shape)
        return log_p if shape == log_p.shape else log_p.expand(shape)
