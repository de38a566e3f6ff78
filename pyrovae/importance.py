"""Importance weights of any Pyro model and guide, one row per data point: the importance-sampled
marginal log-likelihood (Burda et al., 2015) here, and the IWAE objectives of :mod:`pyrovae.objectives`
on the same code.

For each row ``x_n``, with ``z_k ~ q(z | x_n)``, ``k = 1..K``::

    log p(x_n) ~= logsumexp_k [log p(x_n, z_k) - log q(z_k | x_n)] - log K

The weights come from Pyro itself: the guide is traced under a vectorised ``particles`` plate and the
model replayed against it, and every site's ``log_prob`` is summed over all its dimensions but the
particles' and the data points'. Particles go in chunks and rows in batches, so memory is bounded
whatever K is; chunks are merged exactly with a running ``logsumexp``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import prune_subsample_sites

from .distributions import compiled_log_prob


class ImportanceEstimate(NamedTuple):
    """Per data point, each (N,): ``log_px`` the IS estimate of ``log p(x)``; ``stderr`` its Monte
    Carlo standard error (delta method, ``sqrt(1/ESS - 1/K)``); ``ess`` the effective sample size
    ``(sum w)^2 / sum w^2``; ``elbo`` the mean of the same log weights, an estimate of the ELBO."""

    log_px: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    elbo: torch.Tensor


def log_likelihood(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    chunk_size: int = 500,
    batch_size: int = 100,
) -> torch.Tensor:
    """The importance-sampled ``log p(x_n)`` of every row of ``x``: (N,).

    ``model(x)`` and ``guide(x)`` may be any Pyro programs whose batch plate runs over dim 0 of ``x``
    (or, without a plate, whose batch shape ends in N); every latent site of the model must be drawn
    by the guide. ``chunk_size`` particles of ``batch_size`` rows are evaluated at once: only memory
    and speed depend on them.

    Example::

        log_px = log_likelihood(vae.model, vae.guide, x_test, num_samples=5000)
    """
    return importance_estimate(model, guide, x, num_samples, chunk_size, batch_size).log_px


@torch.no_grad()
def importance_estimate(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    num_samples: int = 5000,
    chunk_size: int = 500,
    batch_size: int = 100,
    compile: bool = False,
    progress: Callable[[int], object] | None = None,
) -> ImportanceEstimate:
    """:func:`log_likelihood` with its standard error, effective sample size and ELBO.

    ``compile=True`` scores Bernoulli images with a kernel fused by ``torch.compile`` (see
    :func:`pyrovae.distributions.compiled_log_prob`): the same numbers, faster for large K.
    ``progress(n)`` is called as each batch of ``n`` images is scored (a progress bar's ``update``).
    """
    for name, value in (
        ("num_samples", num_samples),
        ("chunk_size", chunk_size),
        ("batch_size", batch_size),
    ):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    # The first trace is validated as Pyro's settings say (the support of x, every parameter);
    # the chunks repeat the same checks on the same data, so they run without them.
    data_dim, particle_dim = plate_dims(model, guide, (x,))
    with pyro.validation_enabled(False), compiled_log_prob(compile):
        parts = []
        for rows in x.split(batch_size):
            parts.append(_estimate_rows(model, guide, rows, num_samples, chunk_size, data_dim, particle_dim))
            if progress is not None:
                progress(len(rows))
    return ImportanceEstimate(*(torch.cat(t) for t in zip(*parts, strict=True)))


def _estimate_rows(model, guide, x, num_samples, chunk_size, data_dim, particle_dim):
    sizes = [min(chunk_size, num_samples - start) for start in range(0, num_samples, chunk_size)]
    log_w = _log_weights(model, guide, x, sizes[0], data_dim, particle_dim)  # (size, n)
    log_sum_w, log_sum_w2, sum_log_w = log_w.logsumexp(0), (2 * log_w).logsumexp(0), log_w.sum(0)
    for size in sizes[1:]:
        log_w = _log_weights(model, guide, x, size, data_dim, particle_dim)
        log_sum_w = torch.logaddexp(log_sum_w, log_w.logsumexp(0))
        log_sum_w2 = torch.logaddexp(log_sum_w2, (2 * log_w).logsumexp(0))
        sum_log_w += log_w.sum(0)
    log_px = log_sum_w - math.log(num_samples)
    ess = (2 * log_sum_w - log_sum_w2).exp()
    stderr = (1 / ess - 1 / num_samples).clamp(min=0).sqrt()
    return log_px, stderr, ess, sum_log_w / num_samples


def _log_weights(model, guide, x, num_particles, data_dim, particle_dim) -> torch.Tensor:
    """``log p(x_n, z_kn) - log q(z_kn | x_n)`` for ``num_particles`` draws: (num_particles, N)."""
    model_trace, guide_trace = trace_particles(model, guide, (x,), {}, num_particles, particle_dim)
    log_w, _ = point_log_weights(model_trace, guide_trace, len(x), num_particles, data_dim, particle_dim)
    return log_w


def trace_particles(model, guide, args, kwargs, num_particles, particle_dim, guide_trace=None):
    """The guide traced under a ``particles`` plate at ``particle_dim`` (or ``guide_trace`` as given),
    and the model replayed against it: ``(model_trace, guide_trace)``, subsample sites pruned."""
    if guide_trace is None:
        guide_trace = poutine.trace(in_particles(guide, num_particles, particle_dim)).get_trace(
            *args, **kwargs
        )
    # The plate inside replay, as Pyro's vectorized ELBOs nest it, so that it broadcasts the model's
    # distributions too (a plate outside replay leaves replayed sites alone).
    model_trace = poutine.trace(
        poutine.replay(in_particles(model, num_particles, particle_dim), trace=guide_trace)
    ).get_trace(*args, **kwargs)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def in_particles(program: Callable, num_particles: int, dim: int) -> Callable:
    """``program`` run inside a vectorized ``particles`` plate at ``dim``."""

    def run(*args, **kwargs):
        with pyro.plate("particles", num_particles, dim=dim):
            return program(*args, **kwargs)

    return run


def point_log_weights(
    model_trace, guide_trace, n, num_particles, data_dim, particle_dim
) -> tuple[torch.Tensor, float]:
    """``log w = sum_sites log p - sum_sites log q`` per particle and data point: ``(log_w, scale)``,
    ``log_w`` (P, n).

    A site's own weight (``poutine.scale``) stays inside ``log w``; the data plate's subsampling factor
    (``size / subsample_size``, the same for every site) is returned as ``scale``, to multiply a sum over
    points of a function of the weights, never the weights themselves: a scale inside the log-sum-exp is
    Pyro issue #3104.
    """
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w, scales = 0.0, set()
    for sign, trace in ((1, model_trace), (-1, guide_trace)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample":
                continue
            if trace is model_trace and not site["is_observed"] and name not in guide_trace.nodes:
                raise ValueError(f"the model's latent site {name!r} is not drawn by the guide")
            subsample = math.prod(
                f.full_size / f.size for f in site["cond_indep_stack"] if f.full_size is not None
            )
            scales.add(subsample)
            log_p = scale_and_mask(site["unscaled_log_prob"], site["scale"] / subsample, site["mask"])
            log_w = log_w + sign * _per_point(log_p, name, n, data_dim, particle_dim)
    if len(scales) > 1:
        raise ValueError("the sites are subsampled by different factors; a per-point weight needs one")
    return torch.as_tensor(log_w).expand(num_particles, n), scales.pop() if scales else 1.0


def _per_point(log_prob, name, n, data_dim, particle_dim) -> torch.Tensor:
    """Sum a site's ``log_prob`` over every dimension but particles and data points: (P or 1, n)."""
    rank = -particle_dim
    if log_prob.dim() > rank:
        raise ValueError(f"site {name!r} has more batch dimensions than its plates declare")
    log_prob = log_prob.reshape((1,) * (rank - log_prob.dim()) + log_prob.shape)
    if log_prob.shape[data_dim] != n:
        raise ValueError(
            f"site {name!r} is not in the batch plate over dim 0 of x (its log_prob has shape "
            f"{tuple(log_prob.shape)}); a per-point log p(x) needs every site in that plate"
        )
    keep = {0, rank + data_dim}
    others = [d for d in range(rank) if d not in keep]
    return log_prob.sum(others) if others else log_prob


def plate_dims(model, guide, args, kwargs=None) -> tuple[int, int]:
    """The batch dim of the data points, and a free dim left of every plate for the particles.

    Found by tracing both programs once: the data plate is the plate of an observed site whose size
    is ``len(args[0])``; a program without plates keeps its data points in the rightmost batch dim.
    """
    model_trace, guide_trace = trace_once(model, guide, args, kwargs)
    dims = [
        frame.dim
        for trace in (guide_trace, model_trace)
        for site in trace.nodes.values()
        if site["type"] == "sample"
        for frame in site["cond_indep_stack"]
        if frame.vectorized
    ]
    data_dim = find_data_dim(model_trace, len(args[0]))
    particle_dim = min([*dims, data_dim]) - 1
    return data_dim, particle_dim


def trace_once(model, guide, args, kwargs=None):
    """``(model_trace, guide_trace)`` of one draw, the guide traced and the model replayed against it,
    hidden from any handler outside (a look at the programs' structure, not a step)."""
    kwargs = kwargs or {}
    with poutine.block():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    return model_trace, guide_trace


def find_data_dim(model_trace, n: int, particle_dim: int | None = None) -> int:
    """The dim of the plate of an observed site whose size is ``n``: the data points' batch dim (never
    ``particle_dim``, whose plate may have the same size)."""
    data_dims = {
        frame.dim
        for site in model_trace.nodes.values()
        if site["type"] == "sample" and site["is_observed"]
        for frame in site["cond_indep_stack"]
        if frame.vectorized and frame.size == n and frame.dim != particle_dim
    }
    return min(data_dims) if data_dims else -1  # the outermost, where plates nest
