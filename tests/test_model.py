"""The Pyro program against the hand-written closed-form baseline, number for number."""

import copy

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.nn.module import to_pyro_module_

from pyrovae import baseline
from pyrovae.config import ModelConfig
from pyrovae.model import VAE
from pyrovae.train import elbo_loss


@pytest.fixture(params=["mlp", "gated", "conv"])
def vae(request) -> VAE:
    """The default model, in each architecture: the baseline shares its networks."""
    return VAE(ModelConfig(z_dim=4, hidden_dims=(32, 16), arch=request.param)).double()


def test_sites_plate_and_shapes(vae, x_small):
    guide_trace = poutine.trace(vae.guide).get_trace(x_small)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x_small)
    z, x = model_trace.nodes["z"], model_trace.nodes["x"]
    assert z["value"].shape == (16, 4) and z["fn"].event_shape == (4,)
    assert x["is_observed"] and torch.equal(x["value"], x_small)
    assert x["fn"].event_shape == (784,) and x["fn"].batch_shape == (16,)
    assert [f.name for f in z["cond_indep_stack"]] == ["data"]
    assert guide_trace.nodes["z"]["fn"].batch_shape == (16,)


def test_encoder_scale_is_positive_for_extreme_inputs(vae):
    x = torch.cat([torch.full((1, 784), v, dtype=torch.double) for v in (-1e4, 0.0, 1e4)])
    _, scale = vae.guide.encoder(x)
    assert (scale > 0).all() and scale.isfinite().all()


def _encoder_decoder(vae):
    return vae.guide.encoder, vae.model.decoder


def test_trace_elbo_equals_baseline_at_the_same_draw(vae, x_small):
    pyro.set_rng_seed(1)
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x_small)
    pyro.set_rng_seed(1)
    guide_trace = poutine.trace(vae.guide).get_trace(x_small)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x_small)
    z = guide_trace.nodes["z"]["value"]
    expected = baseline.elbo_at(*_encoder_decoder(vae), x_small, z)  # (16,)

    traced = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    torch.testing.assert_close(traced, expected.sum(), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(-loss, expected.sum(), rtol=1e-12, atol=1e-9)


def test_meanfield_elbo_equals_closed_form_kl_baseline(vae, x_small):
    pyro.set_rng_seed(2)
    loss = TraceMeanField_ELBO().differentiable_loss(vae.model, vae.guide, x_small)
    pyro.set_rng_seed(2)
    z = poutine.trace(vae.guide).get_trace(x_small).nodes["z"]["value"]
    expected = baseline.closed_form_elbo(*_encoder_decoder(vae), x_small, z=z)
    torch.testing.assert_close(-loss, expected.sum(), rtol=1e-12, atol=1e-9)


def _draws(loss_fn, params, directions, num_draws):
    """Per draw: the loss and, per parameter, its gradient projected on a fixed direction: (M, 1 + P)."""
    rows = []
    for _ in range(num_draws):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
        rows.append(
            torch.stack([loss.detach()] + [(g * v).sum() for g, v in zip(grads, directions, strict=True)])
        )
    return torch.stack(rows)


def test_trace_elbo_and_its_gradients_agree_with_closed_form_on_average(vae, x_small):
    """Both are unbiased for the same ELBO and gradient: their means differ by < 4 standard errors.

    Elementwise checks over ~30k gradient entries would fail by chance at 4 SE; projecting each
    parameter's gradient on a fixed random direction keeps one test per parameter tensor.
    """
    num_draws = 500
    x = x_small[:4]
    params = list(vae.parameters())
    g = torch.Generator().manual_seed(3)
    directions = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]

    pyro.set_rng_seed(4)
    trace_elbo = Trace_ELBO()
    pyro_draws = _draws(
        lambda: trace_elbo.differentiable_loss(vae.model, vae.guide, x),
        params,
        directions,
        num_draws,
    )
    base_draws = _draws(
        lambda: -baseline.closed_form_elbo(*_encoder_decoder(vae), x).sum(),
        params,
        directions,
        num_draws,
    )
    diff = pyro_draws.mean(0) - base_draws.mean(0)
    stderr = (pyro_draws.var(0) / num_draws + base_draws.var(0) / num_draws).sqrt()
    assert (stderr > 0).all()
    assert (diff.abs() < 4 * stderr).all(), (diff / stderr).tolist()


def test_elbo_module_step_is_pyro_svi_step(x_small):
    """Our training step (ELBO module + torch Adam) moves the parameters exactly as pyro.infer.SVI."""
    ours = VAE(ModelConfig(z_dim=4, hidden_dims=(32,))).double()
    reference = copy.deepcopy(ours)

    loss_fn = elbo_loss(ours)
    optimizer = torch.optim.Adam(loss_fn.parameters(), lr=1e-2)
    pyro.set_rng_seed(5)
    for _ in range(3):
        loss = loss_fn(x_small)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    to_pyro_module_(reference)  # its parameters now live in Pyro's param store, where SVI finds them
    svi = SVI(reference.model, reference.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    pyro.set_rng_seed(5)
    svi_losses = [svi.step(x_small) for _ in range(3)]

    torch.testing.assert_close(loss.item(), svi_losses[-1], rtol=1e-10, atol=1e-8)
    for (name, p), q in zip(ours.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-10, atol=1e-12, msg=name)
