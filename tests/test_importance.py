"""The importance-sampled log p(x) against closed forms and quadrature, on hand-written Pyro models."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.data import binarize_fixed, synthetic_dataset
from pyrovae.importance import importance_estimate, log_likelihood
from pyrovae.runs import load_run


def test_exact_posterior_gives_the_closed_form_for_any_k(linear_gaussian):
    model, exact_guide, _, x, truth = linear_gaussian
    for k, chunk in ((1, 1), (3, 2), (50, 7)):
        estimate = importance_estimate(model, exact_guide, x, num_samples=k, chunk_size=chunk)
        torch.testing.assert_close(estimate.log_px, truth, rtol=0, atol=1e-10)
        torch.testing.assert_close(estimate.elbo, truth, rtol=0, atol=1e-10)
        torch.testing.assert_close(estimate.ess, torch.full_like(truth, float(k)))


def test_poor_guide_matches_the_closed_form_within_its_standard_error(linear_gaussian):
    model, _, poor_guide, x, truth = linear_gaussian
    estimate = importance_estimate(model, poor_guide, x, num_samples=5000, chunk_size=512)
    assert (estimate.ess < 4000).all()  # a poor guide: the test is not the trivial one above
    z = (estimate.log_px - truth) / estimate.stderr
    assert (z.abs() < 4).all(), z
    assert (estimate.elbo < truth - 0.05).all()  # the ELBO of a poor guide is a strict bound


def test_chunk_and_batch_sizes_change_only_the_draws(linear_gaussian):
    model, _, poor_guide, x, _ = linear_gaussian
    a = importance_estimate(model, poor_guide, x, num_samples=3000, chunk_size=3000, batch_size=20)
    b = importance_estimate(model, poor_guide, x, num_samples=3000, chunk_size=7, batch_size=3)
    z = (a.log_px - b.log_px) / (a.stderr**2 + b.stderr**2).sqrt()
    assert (z.abs() < 4).all(), z
    assert not torch.equal(a.log_px, b.log_px)


def test_progress_is_told_each_batch_of_images_and_changes_nothing(linear_gaussian):
    model, _, poor_guide, x, _ = linear_gaussian
    done = []
    pyro.set_rng_seed(0)
    told = importance_estimate(model, poor_guide, x, num_samples=50, batch_size=3, progress=done.append)
    pyro.set_rng_seed(0)
    silent = importance_estimate(model, poor_guide, x, num_samples=50, batch_size=3)
    assert done == [3] * (len(x) // 3) + ([len(x) % 3] if len(x) % 3 else [])
    assert all(torch.equal(a, b) for a, b in zip(told, silent, strict=True))


def test_bernoulli_decoder_with_a_scalar_latent_matches_quadrature():
    """``z ~ N(0, 1)``, ``x_d ~ Bernoulli(sigmoid(a_d z + c_d))``; ``p(x)`` by quadrature over z."""
    g = torch.Generator().manual_seed(1)
    a = 2 * torch.randn(8, generator=g, dtype=torch.float64)
    c = torch.randn(8, generator=g, dtype=torch.float64)
    z_true = torch.randn(30, 1, generator=g, dtype=torch.float64)
    x = torch.bernoulli(torch.sigmoid(z_true * a + c), generator=g)

    def model(x):  # no plate: the data points are the rightmost batch dim
        z = pyro.sample("z", dist.Normal(torch.zeros(len(x), dtype=x.dtype), 1.0))
        pyro.sample("x", dist.Bernoulli(logits=z.unsqueeze(-1) * a + c).to_event(1), obs=x)

    def guide(x):  # crude: the mean of x decides the location
        loc = 3 * (x.mean(-1) - 0.5)
        pyro.sample("z", dist.Normal(loc, 1.5))

    grid = torch.linspace(-12, 12, 48001, dtype=torch.float64)  # (G,)
    log_joint = dist.Normal(0.0, 1.0).log_prob(grid)[:, None] + dist.Bernoulli(
        logits=grid[:, None, None] * a + c
    ).log_prob(x).sum(-1)  # (G, N)
    truth = torch.logsumexp(log_joint, 0) + math.log(grid[1] - grid[0])

    estimate = importance_estimate(model, guide, x, num_samples=4000, chunk_size=1000)
    z = (estimate.log_px - truth) / estimate.stderr
    assert (z.abs() < 4).all(), z


def test_a_latent_site_missing_from_the_guide_is_refused(linear_gaussian):
    model, _, _, x, _ = linear_gaussian

    def empty_guide(x):
        pass

    with pytest.raises(ValueError, match="'z' is not drawn by the guide"):
        log_likelihood(model, empty_guide, x, num_samples=2)


def test_a_global_latent_is_refused():
    def model(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    def guide(x):
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))

    with pytest.raises(ValueError, match="'scale' is not in the batch plate"):
        log_likelihood(model, guide, torch.randn(4), num_samples=2)


def test_trained_vae_log_px_is_above_its_elbo_and_rises_with_k(synthetic_run):
    vae, _, _ = load_run(synthetic_run)
    x = binarize_fixed(synthetic_dataset().x_test)  # (200, 784)
    estimates = {k: importance_estimate(vae.model, vae.guide, x, num_samples=k) for k in (1, 10, 200)}
    for estimate in estimates.values():
        assert (estimate.log_px >= estimate.elbo - 1e-4).all()
    means = [estimates[k].log_px.mean().item() for k in (1, 10, 200)]
    assert means[0] < means[1] < means[2], means
    # The K=200 bound sits above the ELBO by more than its Monte Carlo error (the posterior is not Gaussian).
    gap = (estimates[200].log_px - estimates[200].elbo).mean()
    assert gap > 4 * estimates[200].stderr.pow(2).mean().sqrt() / len(x) ** 0.5


def test_compiled_scoring_gives_the_same_numbers(synthetic_run):
    vae, _, _ = load_run(synthetic_run)
    x = binarize_fixed(synthetic_dataset().x_test[:40])
    pyro.set_rng_seed(7)
    eager = importance_estimate(vae.model, vae.guide, x, num_samples=64, chunk_size=16, compile=False)
    pyro.set_rng_seed(7)
    fused = importance_estimate(vae.model, vae.guide, x, num_samples=64, chunk_size=16, compile=True)
    # float32 sums of 784 terms in another order: agreement to a few ulps of ~100 nats.
    torch.testing.assert_close(fused.log_px, eager.log_px, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(fused.elbo, eager.elbo, rtol=1e-5, atol=1e-4)
