"""The objectives (multi-sample ELBO, IWAE, DReG, KL weight) against hand derivations at the same draws."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyrovae import baseline
from pyrovae.config import ModelConfig, TrainConfig
from pyrovae.data import binarize_fixed, synthetic_dataset
from pyrovae.model import VAE
from pyrovae.objectives import IWAE, OBJECTIVES, IWAEDReG, KLWeight
from pyrovae.runs import load_run
from pyrovae.train import check_objective

from .test_model import _draws
from .test_swaps import components


@pytest.fixture
def vae() -> VAE:
    return VAE(ModelConfig(z_dim=4, hidden_dims=(32, 16))).double()


def _log_w(vae, x, z):
    """Hand-written ``log p(x, z) - log q(z | x)`` with the baseline's densities: (K, N)."""
    return baseline.elbo_at(vae.guide.encoder, vae.model.decoder, x, z)


def _draw_z(vae, x, k):
    """The draws ``K`` vectorized particles make after ``pyro.set_rng_seed``: (K, N, z_dim)."""
    return vae.guide.posterior(x).rsample((k,))


def test_iwae_at_one_particle_is_trace_elbo(vae, x_small):
    pyro.set_rng_seed(1)
    iwae = IWAE(num_particles=1, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x_small)
    pyro.set_rng_seed(1)
    trace = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x_small)
    torch.testing.assert_close(iwae, trace, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("k", [2, 7])
def test_iwae_is_logsumexp_of_hand_written_weights(vae, x_small, k):
    pyro.set_rng_seed(2)
    bound, scale = IWAE(num_particles=k, max_plate_nesting=1).point_bounds(vae.model, vae.guide, x_small)
    pyro.set_rng_seed(2)
    expected = _log_w(vae, x_small, _draw_z(vae, x_small, k)).logsumexp(0) - math.log(k)
    assert scale == 1.0
    torch.testing.assert_close(bound, expected, rtol=1e-12, atol=1e-9)


def test_k_particle_elbo_is_the_mean_of_k_single_particle_elbos(vae, x_small):
    k = 5
    pyro.set_rng_seed(3)
    loss = OBJECTIVES["trace"](num_particles=k, max_plate_nesting=1, vectorize_particles=True)
    value = loss.differentiable_loss(vae.model, vae.guide, x_small)
    pyro.set_rng_seed(3)
    z = _draw_z(vae, x_small, k)
    singles = [-_log_w(vae, x_small, z[i]).sum() for i in range(k)]
    torch.testing.assert_close(value, torch.stack(singles).mean(), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("k", [1, 4, 50])
def test_iwae_with_the_exact_posterior_is_the_closed_form(linear_gaussian, k):
    model, exact_guide, _, x, truth = linear_gaussian
    bound, _ = IWAE(num_particles=k, max_plate_nesting=1).point_bounds(model, exact_guide, x)
    torch.testing.assert_close(bound, truth, rtol=0, atol=1e-10)
    # Without max_plate_nesting the particles' dim is found by tracing, as Pyro's ELBO guesses it.
    loss = IWAE(num_particles=k).differentiable_loss(model, exact_guide, x)
    torch.testing.assert_close(loss, -truth.sum(), rtol=0, atol=1e-9)


def test_iwae_keeps_subsampling_outside_the_log_sum_exp():
    """``z ~ N(0, 1)``, ``x | z ~ N(z, 1)``, so ``p(x) = N(0, 2)``; exact guide ``N(x / 2, 1 / 2)``. In a
    plate of 1000 subsampled to n rows, the loss is ``1000 / n`` times minus the rows' ``log p(x)``."""
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    rows = torch.arange(len(x))

    def model(x):
        with pyro.plate("data", 1000, subsample=rows):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", 1000, subsample=rows):
            pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))

    truth = dist.Normal(torch.zeros_like(x), math.sqrt(2.0)).log_prob(x)
    loss = IWAE(num_particles=3, max_plate_nesting=1).differentiable_loss(model, guide, x)
    torch.testing.assert_close(loss, -(1000 / len(x)) * truth.sum(), rtol=1e-12, atol=1e-9)


def test_iwae_bound_rises_with_k_on_a_trained_model(synthetic_run):
    vae, _, _ = load_run(synthetic_run)
    x = binarize_fixed(synthetic_dataset().x_test).repeat(20, 1)  # 20 draws of each bound per image
    bounds = []
    with torch.no_grad():
        for k in (1, 10, 100):
            pyro.set_rng_seed(k)
            bounds.append(IWAE(num_particles=k, max_plate_nesting=1).point_bounds(vae.model, vae.guide, x)[0])
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        diff = (hi - lo).reshape(20, -1).mean(0)  # paired by image: the spread between images cancels
        assert diff.mean() > 4 * diff.std() / math.sqrt(len(diff)), (diff.mean(), diff.std())


def _projected_draws(elbo, vae, x, num_draws, seed):
    params = list(vae.parameters())
    g = torch.Generator().manual_seed(3)
    directions = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    pyro.set_rng_seed(seed)
    return _draws(lambda: elbo.differentiable_loss(vae.model, vae.guide, x), params, directions, num_draws)


def test_dreg_has_iwae_value_and_mean_gradient(vae, x_small):
    """Unbiased for the same gradient: per parameter tensor, means within 4 standard errors."""
    x, k, num_draws = x_small[:4], 5, 400
    pyro.set_rng_seed(6)
    a = IWAE(num_particles=k, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(6)
    b = IWAEDReG(num_particles=k, max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-9)

    iwae = _projected_draws(IWAE(num_particles=k, max_plate_nesting=1), vae, x, num_draws, 7)
    dreg = _projected_draws(IWAEDReG(num_particles=k, max_plate_nesting=1), vae, x, num_draws, 8)
    diff = iwae.mean(0) - dreg.mean(0)
    stderr = (iwae.var(0) / num_draws + dreg.var(0) / num_draws).sqrt()
    assert (stderr > 0).all()
    assert (diff.abs() < 4 * stderr).all(), (diff / stderr).tolist()


def test_dreg_lowers_the_guide_gradient_variance_at_k_50(vae, x_small):
    x, k, num_draws = x_small[:4], 50, 100
    iwae = _projected_draws(IWAE(num_particles=k, max_plate_nesting=1), vae, x, num_draws, 9)
    dreg = _projected_draws(IWAEDReG(num_particles=k, max_plate_nesting=1), vae, x, num_draws, 10)
    encoder = slice(1, 1 + len(list(vae.guide.parameters())))  # column 0 is the loss
    ratio = dreg[:, encoder].var(0).sum() / iwae[:, encoder].var(0).sum()
    assert ratio < 0.5, ratio


def _reconstruction_and_latent_terms(vae, x, z):
    """``(log p(x | z), log p(z) - log q(z | x))`` summed over rows, by hand."""
    loc, scale = vae.guide.encoder(x)
    reconstruction = baseline.bernoulli_log_prob(vae.model.decoder(z), x).sum()
    latent = baseline.normal_log_prob(z, torch.zeros_like(z), torch.ones_like(z)) - baseline.normal_log_prob(
        z, loc, scale
    )
    return reconstruction, latent.sum()


@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_kl_weight_weights_the_gradient_and_not_the_value(vae, x_small, beta):
    params = list(vae.parameters())
    pyro.set_rng_seed(11)
    with KLWeight(beta):
        loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x_small)
    grads = torch.autograd.grad(loss, params)

    pyro.set_rng_seed(11)
    z = _draw_z(vae, x_small, 1)[0]
    reconstruction, latent = _reconstruction_and_latent_terms(vae, x_small, z)
    torch.testing.assert_close(-loss, reconstruction + latent, rtol=1e-12, atol=1e-9)  # unweighted value
    expected = torch.autograd.grad(-(reconstruction + beta * latent), params)
    for name, g, e in zip([n for n, _ in vae.named_parameters()], grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10, msg=name)


def test_kl_weight_with_meanfield_weights_the_closed_form_kl(vae, x_small):
    beta = 0.25
    params = list(vae.parameters())
    pyro.set_rng_seed(12)
    with KLWeight(beta):
        loss = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x_small)
    grads = torch.autograd.grad(loss, params)
    pyro.set_rng_seed(12)
    z = _draw_z(vae, x_small, 1)[0]
    loc, scale = vae.guide.encoder(x_small)
    reconstruction = baseline.bernoulli_log_prob(vae.model.decoder(z), x_small).sum()
    kl = baseline.gaussian_kl(loc, scale).sum()
    torch.testing.assert_close(-loss, reconstruction - kl, rtol=1e-12, atol=1e-9)
    expected = torch.autograd.grad(-(reconstruction - beta * kl), params)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("family", ["vae", "hvae"])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized-logistic"])
@pytest.mark.parametrize("prior", ["normal", "vamp"])
@pytest.mark.parametrize("name, k, beta", [("trace", 1, 1.0), ("trace", 5, 0.3), ("iwae", 1, 1.0),
                                           ("iwae", 4, 0.5)])  # fmt: skip
def test_static_path_equals_the_estimator_number_for_number(
    x_small, family, likelihood, prior, name, k, beta
):
    """Where Pyro does not validate the step, pyrovae's own models and guides skip the effect handlers:
    the loss and every gradient equal the estimator's at the same draw."""
    vae = VAE(ModelConfig(z_dim=4, hidden_dims=(32,), likelihood=likelihood, prior=prior, family=family,
                          **components(prior, 3))).double()  # fmt: skip
    x = vae.model.p_x.data((x_small * 255).to(torch.uint8), torch.Generator().manual_seed(0)).double()
    elbo = OBJECTIVES[name](num_particles=k, max_plate_nesting=1, vectorize_particles=True)
    module = elbo(vae.model, vae.guide)
    assert module.static
    params = list(vae.parameters())
    results = []
    for validate in (True, False):  # Pyro's traces, then the static path
        pyro.set_rng_seed(13)
        with pyro.validation_enabled(validate), KLWeight(beta):
            loss = module(x)
        results.append((loss, torch.autograd.grad(loss, params)))
    (pyro_loss, pyro_grads), (static_loss, static_grads) = results
    torch.testing.assert_close(static_loss, pyro_loss, rtol=1e-12, atol=1e-9)
    for g, e in zip(static_grads, pyro_grads, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_static_path_steps_aside_for_other_handlers_and_other_programs(vae, x_small):
    module = OBJECTIVES["trace"](max_plate_nesting=1)(vae.model, vae.guide)
    with pyro.validation_enabled(False):
        assert module._static_weight((x_small,), {}) == 1.0
        with KLWeight(0.5):
            assert module._static_weight((x_small,), {}) == 0.5
        with pyro.poutine.scale(scale=2.0):
            assert module._static_weight((x_small,), {}) is None
    with pyro.validation_enabled(True):
        assert module._static_weight((x_small,), {}) is None

    class Other(type(vae.model)):
        def forward(self, x):
            return super().forward(x)

    vae.model.__class__ = Other
    assert not OBJECTIVES["trace"](max_plate_nesting=1)(vae.model, vae.guide).static
    assert not OBJECTIVES["iwae-dreg"](max_plate_nesting=1)(VAE().model, VAE().guide).static


def test_the_static_path_serves_each_model_only_with_its_own_guides_program():
    hvae, vae = VAE(ModelConfig(family="hvae")), VAE()
    trace = OBJECTIVES["trace"](max_plate_nesting=1)
    assert trace(hvae.model, hvae.guide).static
    assert not trace(hvae.model, vae.guide).static  # the HVAE's program draws z1 and z2
    assert not trace(vae.model, hvae.guide).static

    class OtherGuide(type(hvae.guide)):
        def forward(self, x):
            return super().forward(x)

    hvae.guide.__class__ = OtherGuide
    assert not trace(hvae.model, hvae.guide).static

    class OtherPrior(type(vae.model)):  # a new prior, the same program: still static
        def prior(self):
            return super().prior()

    vae.model.__class__ = OtherPrior
    assert trace(vae.model, vae.guide).static


@pytest.mark.parametrize("elbo", ["meanfield", "iwae-dreg"])
def test_an_objectives_check_runs_on_an_input_made_like_the_models_parameters(vae, elbo):
    """``fit`` checks the objective on the model's own device (a GPU's, where it trains there): the
    check's input is made like the parameters, here float64, which a CPU float32 input would not fit
    ("mat1 and mat2 must have the same dtype"); its draws leave the stream alone."""
    config = TrainConfig(elbo=elbo, model=vae.config)
    state = torch.get_rng_state()
    check_objective(config, vae)
    assert torch.equal(torch.get_rng_state(), state)
