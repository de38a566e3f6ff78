"""Training objectives: each a ``pyro.infer.ELBO``, registered by name, built the same way::

    elbo = OBJECTIVES[name](num_particles=K, max_plate_nesting=1)
    loss_fn = elbo(model, guide)     # an nn.Module: x -> -(bound summed over the rows of x)

| name | bound per data point | gradient |
| --- | --- | --- |
| ``trace`` | ``(1/K) sum_k log w_k``, the ELBO (Pyro's ``Trace_ELBO``) | reparametrised |
| ``meanfield`` | the same, with ``KL(q || p)`` in closed form (``TraceMeanField_ELBO``) | reparametrised |
| ``iwae`` | ``log (1/K) sum_k w_k`` (Burda et al., 2015) | reparametrised |
| ``iwae-dreg`` | the same | doubly reparametrised for the guide (Tucker et al., 2019) |

with ``log w_k = log p(x, z_k) - log q(z_k | x)``, ``z_k ~ q(z | x)``, ``K = num_particles``.

:class:`KLWeight` weights the latent sites' log-densities in the gradient (KL warm-up, beta); every value
an objective returns stays the unweighted bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from pyro.poutine.messenger import Messenger
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match
from torch import nn

from .importance import (
    find_data_dim,
    in_particles,
    plate_dims,
    point_log_weights,
    trace_once,
    trace_particles,
)
from .model import is_static
from .priors import has_closed_form_kl
from .registry import registrar

OBJECTIVES: dict[str, type[Objective]] = {}
register = registrar(OBJECTIVES)


class Objective:
    """What a registered objective adds to Pyro's ``ELBO``: a check that it can train a given pair, and
    a training module that skips Pyro's effect handlers where they would change nothing."""

    name: str
    num_particles: int
    # ``static_loss(log_w)``: the loss from the log weights (K, N) of the model's ``log_weight_terms``
    # (:meth:`pyrovae.model.Model.log_weight_terms`), for objectives whose estimator is a function of them
    # alone; None for the others.
    static_loss: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def check(cls, model: Callable, guide: Callable, x: torch.Tensor) -> None:
        """Raise ``ValueError`` (one line, for the user) where this objective cannot serve the pair."""

    def __call__(self, model: nn.Module, guide: nn.Module) -> ObjectiveModule:
        return ObjectiveModule(self, model, guide)


class ObjectiveModule(nn.Module):
    """``x -> loss``: Pyro's ``ELBO(...)(model, guide)``, and faster for pyrovae's own model and guide.

    For pyrovae's models and their guides (see :func:`~pyrovae.model.is_static`), on a step that Pyro does not
    validate and under no effect handler but :class:`KLWeight`, the loss is computed from
    :meth:`~pyrovae.model.Model.log_weight_terms` (the same program, the same draws, no tracing): the same
    value and gradients as the estimator's, by a quarter less time a step on a CPU. Everywhere else,
    and for any other pair, it is the estimator's ``differentiable_loss`` itself.
    """

    def __init__(self, elbo: Objective, model: nn.Module, guide: nn.Module):
        super().__init__()
        self.model, self.guide, self.elbo = model, guide, elbo
        self.static = elbo.static_loss is not None and is_static(model, guide)

    def forward(self, *args, **kwargs) -> torch.Tensor:
        weight = self._static_weight(args, kwargs)
        if weight is None:
            return self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)
        k = self.elbo.num_particles
        log_px_z, latent = self.model.log_weight_terms(self.guide, args[0], k if k > 1 else None)
        if weight != 1:
            latent = _weight_gradient(latent, weight)
        return self.elbo.static_loss(log_px_z + latent)

    def _static_weight(self, args, kwargs) -> float | None:
        """The KL weight in force, where the static path applies; None where it does not."""
        if not self.static or kwargs or len(args) != 1 or is_validation_enabled():
            return None
        weight = 1.0
        for handler in _PYRO_STACK:
            if not isinstance(handler, KLWeight):
                return None
            weight *= handler.weight
        return weight


@register("trace")
class TraceELBO(Objective, Trace_ELBO):
    """Pyro's ``Trace_ELBO``: ``log p(x, z) - log q(z | x)`` at draws of ``z``."""

    def static_loss(self, log_w: torch.Tensor) -> torch.Tensor:
        return -log_w.sum() / self.num_particles


@register("meanfield")
class MeanFieldELBO(Objective, TraceMeanField_ELBO):
    """Pyro's ``TraceMeanField_ELBO``: ``E_q log p(x | z) - KL(q(z | x) || p(z))`` with the KL in closed
    form, a lower-variance estimate of the same bound. Pyro falls back to a Monte Carlo KL without
    saying so where none is known; :meth:`check` refuses such a pair instead."""

    @classmethod
    def check(cls, model, guide, x):
        model_trace, guide_trace = (prune_subsample_sites(t) for t in trace_once(model, guide, (x,)))
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            if not has_closed_form_kl(site["fn"], guide_trace.nodes[name]["fn"]):
                q, p = type(guide_trace.nodes[name]["fn"]).__name__, type(site["fn"]).__name__
                raise ValueError(
                    f"--elbo meanfield needs KL(q || p) in closed form at site {name!r}, and there is none "
                    f"for {q} against {p}; use --elbo trace"
                )


@register("iwae")
class IWAE(Objective, ELBO):
    """The importance-weighted bound of Burda et al. (2015), per data point ``x_n``::

        L_K(x_n) = E[log (1/K) sum_k w_kn],  log w_kn = log p(x_n, z_kn) - log q(z_kn | x_n)

    ``differentiable_loss(model, guide, x, ...)`` is ``-sum_n L_K(x_n)`` at one draw of the ``K``
    particles, for any Pyro model and guide whose data plate runs over dim 0 of ``x`` (see
    :func:`pyrovae.importance.log_likelihood`, whose tracing code it shares). Site scales from
    ``poutine.scale`` stay inside each weight; the data plate's subsampling factor multiplies the sum
    over points, outside the log-sum-exp (unlike Pyro's ``RenyiELBO``: Pyro issue #3104). At ``K = 1``
    it is ``Trace_ELBO``.

    Example::

        loss = IWAE(num_particles=50, max_plate_nesting=1).differentiable_loss(model, guide, x)
    """

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: float = float("inf"),
        vectorize_particles: bool = True,
        **kwargs,
    ):
        if not vectorize_particles:
            raise ValueError("IWAE draws its particles vectorized, in one plate")
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
            **kwargs,
        )
        # The particles take the dim left of the model's plates; Pyro's ELBO has already counted it.
        self._particle_dim = None if math.isinf(max_plate_nesting) else -int(max_plate_nesting) - 1

    def point_bounds(self, model, guide, *args, **kwargs) -> tuple[torch.Tensor, float]:
        """``(L, scale)``: ``L`` the K-particle bound of each row of ``args[0]`` (N,), differentiable;
        ``scale`` the data plate's subsampling factor."""
        _, _, log_w, scale = self._weights(model, guide, args, kwargs)
        return log_w.logsumexp(0) - math.log(self.num_particles), scale

    def _find_particle_dim(self, model, guide, args, kwargs) -> None:
        if self._particle_dim is None:  # found once by an extra traced pass, as Pyro's ELBO guesses it
            self._particle_dim = plate_dims(model, guide, args, kwargs)[1]

    def _get_trace(self, model, guide, args, kwargs, guide_trace=None):
        """The K particles' ``(model_trace, guide_trace)``, as Pyro's ELBOs name it."""
        self._find_particle_dim(model, guide, args, kwargs)
        return trace_particles(
            model, guide, args, kwargs, self.num_particles, self._particle_dim, guide_trace
        )

    def _weights(self, model, guide, args, kwargs, guide_trace=None):
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs, guide_trace)
        if is_validation_enabled():
            check_model_guide_match(model_trace, guide_trace)
        n = len(args[0])
        data_dim = find_data_dim(model_trace, n, self._particle_dim)
        log_w, scale = point_log_weights(
            model_trace, guide_trace, n, self.num_particles, data_dim, self._particle_dim
        )
        return model_trace, guide_trace, log_w, scale  # log_w: (K, N)

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        bound, scale = self.point_bounds(model, guide, *args, **kwargs)
        return -scale * bound.sum()

    def static_loss(self, log_w: torch.Tensor) -> torch.Tensor:
        log_w = log_w.reshape(self.num_particles, -1)
        return -(log_w.logsumexp(0) - math.log(self.num_particles)).sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


@register("iwae-dreg")
class IWAEDReG(IWAE):
    """:class:`IWAE` with the doubly reparametrised gradient of Tucker et al. (2019) for the guide.

    The bound's value and the model's gradient ``sum_k w~_k grad log w_k`` are IWAE's; for the guide's
    parameters ``phi`` the estimator is ``sum_k w~_k^2 (d log w_k / d z_k)(d z_k / d phi)``, with ``w~``
    the normalised weights and ``log q`` evaluated with ``phi`` held fixed, so only the path through
    ``z`` carries gradient. Its signal-to-noise ratio does not fall as K grows, where IWAE's does
    (Rainforth et al., 2018). The guide must be an ``nn.Module`` (its parameters are held fixed by
    ``torch.func.functional_call``) whose latent sites are all reparametrised.
    """

    static_loss = None  # its guide gradient is not that of a function of the weights

    @classmethod
    def check(cls, model, guide, x):
        # log q at the draws, with phi held fixed, means the guide's transforms evaluated backwards.
        try:
            with pyro.poutine.block():
                cls(num_particles=1).differentiable_loss(model, guide, x)
        except (KeyError, NotImplementedError):
            raise ValueError(
                "iwae-dreg evaluates log q(z | x) at given z, which needs the inverse of every transform "
                "of the guide, and this guide has one without (planar flows): use --elbo iwae"
            ) from None

    def point_bounds(self, model, guide, *args, **kwargs):
        if not isinstance(guide, nn.Module):
            raise ValueError("iwae-dreg holds the guide's parameters fixed: the guide must be an nn.Module")
        self._find_particle_dim(model, guide, args, kwargs)
        guide_trace = prune_subsample_sites(
            pyro.poutine.trace(in_particles(guide, self.num_particles, self._particle_dim)).get_trace(
                *args, **kwargs
            )
        )
        # Every value the model and the fixed-parameter guide read is a copy of a draw whose gradient
        # is multiplied by w~ on its way back: the guide's own path to phi stays single, so each path
        # from log w to phi is weighted once, by w~ (from here) times w~ (from the loss below).
        normalised: list[torch.Tensor] = []
        for site in guide_trace.nodes.values():
            if site["type"] != "sample":
                continue
            if not site["fn"].has_rsample:
                raise ValueError(f"iwae-dreg needs every latent site reparametrised; {site['name']!r} is not")
            site["value"] = _weighted_gradient(site["value"], normalised)
        fixed = {name: p.detach() for name, p in guide.named_parameters()}

        def fixed_guide(*a, **k):
            with warnings.catch_warnings():
                # Without module-local parameters, PyroModule offers its children's parameters to the
                # global param store, which rightly declines the fixed copies (and says so).
                warnings.filterwarnings("ignore", "[^ ]+ was not registered in the param store")
                return torch.func.functional_call(guide, fixed, a, k)

        q_trace = pyro.poutine.trace(
            pyro.poutine.replay(
                in_particles(fixed_guide, self.num_particles, self._particle_dim), guide_trace
            )
        ).get_trace(*args, **kwargs)
        _, _, log_w, scale = self._weights(model, guide, args, kwargs, q_trace)
        w = log_w.detach().softmax(0)  # (K, N)
        normalised.append(w)
        bound = log_w.logsumexp(0) - math.log(self.num_particles)
        surrogate = (w * log_w).sum(0)
        return bound.detach() + (surrogate - surrogate.detach()), scale


def _weighted_gradient(z: torch.Tensor, normalised: list[torch.Tensor]) -> torch.Tensor:
    """``z`` itself, whose gradient is multiplied by the normalised weights ``normalised[0]`` (K, N),
    known only once the weights are computed, before the backward pass reads them."""
    if not z.requires_grad:
        return z
    copy = z.view_as(z)

    def hook(grad: torch.Tensor) -> torch.Tensor:
        w = normalised[0]
        return grad * w.reshape(w.shape + (1,) * (grad.dim() - w.dim()))

    copy.register_hook(hook)
    return copy


class _GradientWeighted(dist.TorchDistribution):
    """``base``, whose ``log_prob`` has the value of ``base.log_prob`` and ``weight`` times its gradient."""

    arg_constraints: dict = {}

    def __init__(self, base: dist.Distribution, weight: float):
        self.base, self.weight = base, weight
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    @property
    def has_rsample(self) -> bool:
        return self.base.has_rsample

    @property
    def mean(self) -> torch.Tensor:
        return self.base.mean

    def expand(self, batch_shape, _instance=None) -> _GradientWeighted:
        return _GradientWeighted(self.base.expand(batch_shape), self.weight)

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self.base.sample(sample_shape)

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self.base.rsample(sample_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return _weight_gradient(self.base.log_prob(value), self.weight)


def _weight_gradient(t: torch.Tensor, weight: float) -> torch.Tensor:
    return weight * t + (1 - weight) * t.detach()


@torch.distributions.kl.register_kl(_GradientWeighted, _GradientWeighted)
def _kl_gradient_weighted(q: _GradientWeighted, p: _GradientWeighted) -> torch.Tensor:
    return _weight_gradient(torch.distributions.kl_divergence(q.base, p.base), q.weight)


class KLWeight(Messenger):
    """Within this context, the log-densities of latent sites (model and guide alike) enter every
    gradient multiplied by ``weight``, their values unchanged: the gradient of
    ``E_q[log p(x | z) + weight (log p(z) - log q(z | x))]``, the objective of KL warm-up and of the
    beta-VAE, with the unweighted bound as the loss's value. Set ``weight`` between steps.

    Equal in gradient to ``poutine.scale(scale=weight)`` around the latent sites of model and guide (as
    Pyro's ``examples/dmm.py`` anneals), which would also scale the value reported.
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def _process_message(self, msg) -> None:
        # A plate's subsample site is a "sample" too, of no torch distribution: it has no density.
        latent = msg["type"] == "sample" and not msg["is_observed"]
        if latent and self.weight != 1 and isinstance(msg["fn"], torch.distributions.Distribution):
            msg["fn"] = _GradientWeighted(msg["fn"], self.weight)
