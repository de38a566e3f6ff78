"""Flow guides and the hierarchical VAE against independent computations: log-determinants by autograd,
moments of a long independent run, a two-layer linear-Gaussian model in closed form, a hand-written
two-layer ELBO; and both from the CLI."""

import json
import math
import subprocess
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyrovae.config import ModelConfig
from pyrovae.importance import importance_estimate
from pyrovae.model import VAE
from tests.conftest import invoke
from tests.test_cli import ROOT, assert_one_line_error
from tests.test_protocol import TINY

FLOWS = ["iaf", "planar", "spline"]


def _flow_vae(guide: str) -> VAE:
    vae = VAE(ModelConfig(z_dim=3, hidden_dims=(16,), guide=guide, num_flows=2)).double()
    with torch.no_grad():  # move the flows away from their near-identity start
        for p in vae.guide.flows.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vae


@pytest.mark.parametrize("guide", FLOWS)
def test_flow_log_density_is_base_density_minus_log_det_jacobian(guide, x_small):
    vae = _flow_vae(guide)
    x = x_small[:3]
    loc, scale, h = vae.guide.encoder.with_context(x)
    base = dist.Normal(loc, scale).to_event(1)
    z0 = base.sample()  # (3, z_dim)
    expected = []
    for n in range(len(x)):

        def push(z, n=n):
            for flow in vae.guide.flows:
                z = flow.condition(h[n])(z)
            return z

        jacobian = torch.autograd.functional.jacobian(push, z0[n])  # (z_dim, z_dim)
        log_det = torch.linalg.slogdet(jacobian).logabsdet
        expected.append((push(z0[n]), base.log_prob(z0)[n] - log_det))
    q = vae.guide.posterior(x)
    z = z0
    for transform in q.transforms:  # the distribution's own transforms, which remember (x, y) pairs
        z = transform(z)  # planar flows have no inverse: log_prob reads the draw back from them
    torch.testing.assert_close(z, torch.stack([e[0] for e in expected]), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(q.log_prob(z), torch.stack([e[1] for e in expected]), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("guide", FLOWS)
def test_flow_samples_match_an_independent_run_in_mean_and_variance(guide, x_small):
    """Pyro's guide trace against the flows applied by hand to base draws: the means and variances of
    each coordinate agree within 4 standard errors (M draws each)."""
    vae, x, m = _flow_vae(guide), x_small[:1], 4000
    with pyro.plate("particles", m, dim=-2):
        ours = pyro.poutine.trace(vae.guide).get_trace(x).nodes["z"]["value"].detach().reshape(m, -1)
    loc, scale, h = vae.guide.encoder.with_context(x)
    z = dist.Normal(loc, scale).sample((m,)).reshape(m, -1)
    with torch.no_grad():
        for flow in vae.guide.flows:
            z = flow.condition(h[0])(z)
    mean_se = (ours.var(0) / m + z.var(0) / m).sqrt()
    assert ((ours.mean(0) - z.mean(0)).abs() < 4 * mean_se).all()

    def var_of_var(draws):  # the sampling variance of a sample variance: (mu_4 - sigma^4) / m
        return (((draws - draws.mean(0)) ** 4).mean(0) - draws.var(0) ** 2) / m

    var_se = (var_of_var(ours) + var_of_var(z)).sqrt()
    assert ((ours.var(0) - z.var(0)).abs() < 4 * var_se).all()


W2 = torch.tensor([[0.8, -0.3], [0.2, 0.5], [-0.4, 0.1]], dtype=torch.float64)  # z2 (2) -> z1 (3)
W1 = torch.tensor([[1.0, 0.0, 0.5], [-0.5, 0.7, 0.0], [0.3, 0.3, -0.8], [0.0, -0.6, 0.4]],
                  dtype=torch.float64)  # z1 (3) -> x (4)  # fmt: skip
S1, SX = 0.6, 0.4


def two_layer_model(x):
    """``z2 ~ N(0, I_2)``, ``z1 | z2 ~ N(W2 z2, S1^2 I_3)``, ``x | z1 ~ N(W1 z1, SX^2 I_4)``."""
    with pyro.plate("data", len(x)):
        z2 = pyro.sample("z2", dist.Normal(torch.zeros(len(x), 2, dtype=x.dtype), 1.0).to_event(1))
        z1 = pyro.sample("z1", dist.Normal(z2 @ W2.T, S1).to_event(1))
        pyro.sample("x", dist.Normal(z1 @ W1.T, SX).to_event(1), obs=x)


def two_layer_guide(x):
    """A poor guide on purpose: q(z2 | x) a fixed wide Gaussian, q(z1 | x, z2) a shifted conditional."""
    with pyro.plate("data", len(x)):
        z2 = pyro.sample("z2", dist.Normal(0.1 * x[:, :2], 1.2).to_event(1))
        pyro.sample("z1", dist.Normal(z2 @ W2.T + 0.2 * x[:, 1:], 0.8).to_event(1))


def test_importance_sampling_of_a_two_layer_linear_gaussian_matches_its_closed_form():
    eye = torch.eye(4, dtype=torch.float64)
    cov_z1 = W2 @ W2.T + S1**2 * torch.eye(3, dtype=torch.float64)
    marginal = dist.MultivariateNormal(torch.zeros(4, dtype=torch.float64), W1 @ cov_z1 @ W1.T + SX**2 * eye)
    x = marginal.sample((12,))
    estimate = importance_estimate(two_layer_model, two_layer_guide, x, num_samples=20000, chunk_size=5000)
    assert (estimate.ess < 15000).all()  # not the exact posterior: the test is not trivial
    z = (estimate.log_px - marginal.log_prob(x)) / estimate.stderr
    assert (z.abs() < 4).all(), z


def test_hvae_trace_elbo_equals_a_hand_written_two_layer_elbo(x_small):
    vae = VAE(ModelConfig(z_dim=3, hidden_dims=(16,), family="hvae")).double()
    model, guide = vae.model, vae.guide
    pyro.set_rng_seed(5)
    loss = Trace_ELBO().differentiable_loss(model, guide, x_small)
    pyro.set_rng_seed(5)
    loc2, scale2 = guide.encoder(x_small)
    z2 = loc2 + scale2 * torch.randn_like(loc2)
    loc1, scale1 = guide.encoder_z1(x_small, z2)
    z1 = loc1 + scale1 * torch.randn_like(loc1)
    ploc1, pscale1 = model.p_z1(z2)

    def normal(z, loc, scale):
        return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    logits = model.decoder(z1, z2)
    log_px = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x_small, reduction="none").sum(-1)
    elbo = (log_px + normal(z1, ploc1, pscale1) + normal(z2, torch.zeros_like(z2), torch.ones_like(z2))
            - normal(z2, loc2, scale2) - normal(z1, loc1, scale1))  # fmt: skip
    torch.testing.assert_close(-loss, elbo.sum(), rtol=1e-12, atol=1e-9)


def test_hvae_layer_locations_average_the_lower_layers_mean_over_draws_of_the_top(x_small):
    """E_q[z1 | x] = E_{q(z2|x)} E[z1 | x, z2]: the 100-draw mean against 20,000 draws, within five
    standard errors of the 100-draw mean (computed from the draws' own spread)."""
    vae = VAE(ModelConfig(z_dim=3, hidden_dims=(16,), family="hvae")).double()
    guide = vae.guide
    with torch.no_grad():
        layers = guide.layer_locations(x_small, torch.Generator().manual_seed(1))
        loc2, scale2 = guide.encoder(x_small)
        z2 = loc2 + scale2 * torch.randn(20000, *loc2.shape, dtype=torch.float64)  # (20000, 16, 3)
        means1 = guide.encoder_z1(x_small, z2)[0]  # E[z1 | x, z2] at each draw
    assert list(layers) == ["z2", "z1"]  # the top layer first
    torch.testing.assert_close(layers["z2"], loc2)
    stderr = means1.std(0) / math.sqrt(guide.LOCATION_DRAWS)
    assert (stderr > 1e-3).all()  # E[z1 | x, z2] does vary with z2: the average is not trivial
    z = (layers["z1"] - means1.mean(0)) / stderr
    assert (z.abs() < 5).all(), z


def test_active_units_are_counted_in_each_layer_without_touching_the_global_random_stream(x_small):
    from pyrovae.evaluate import ACTIVE_UNIT_THRESHOLD, posterior_usage

    vae = VAE(ModelConfig(z_dim=3, hidden_dims=(16,), family="hvae")).double()
    last = vae.guide.encoder_z1.joint[-1]
    with torch.no_grad():  # q(z1 | x, z2)'s mean a constant: no unit of z1 is active
        last.weight.zero_()
        last.bias.normal_()
        vae.guide.encoder.net[-1].weight.mul_(30)  # q(z2 | x)'s mean far apart across images: active
    state = torch.get_rng_state()
    usage = posterior_usage(vae, x_small, batch_size=5)
    assert torch.equal(torch.get_rng_state(), state)
    z2_active = int((vae.guide.encoder(x_small)[0].var(0) > ACTIVE_UNIT_THRESHOLD).sum())
    assert usage["active_units_by_layer"] == {"z2": z2_active, "z1": 0} and z2_active > 0
    assert usage["active_units"] == z2_active and usage["z_dim"] == 3
    one_layer = posterior_usage(VAE(ModelConfig(z_dim=3, hidden_dims=(16,))).double(), x_small, 5)
    assert one_layer["active_units_by_layer"] == {"z": one_layer["active_units"]}


def test_bounded_scales_hold_a_collapsing_conditional_prior_at_the_reference_floor(x_small):
    """p(z1 | z2) driven as narrow as its network can make it: softplus scales fall to their 1e-4
    floor and one draw's bound to about -(z1 - loc)^2 / 2e-8; the bounded log-variance stops at
    sigma = e^-3, where log p(z1 | z2) >= -(z1 - loc)^2 e^6 / 2 + 3 - log(2 pi) / 2 per unit."""
    bounds = {}
    for scale in ("softplus", "bounded"):
        torch.manual_seed(0)
        vae = VAE(ModelConfig(z_dim=3, hidden_dims=(16,), family="hvae", scale=scale)).double()
        last = vae.model.p_z1.net[-1]
        with torch.no_grad():
            last.bias[3:] = -1e3  # the raw scales of the 3 units of z1
        pyro.set_rng_seed(5)
        z2 = vae.guide.posterior(x_small).sample()
        z1 = vae.guide.lower(x_small, z2).sample()
        prior = vae.model.conditional_prior(z2)
        p_z1 = prior.base_dist
        floor = {"softplus": 1e-4, "bounded": math.exp(-3)}[scale]
        torch.testing.assert_close(p_z1.scale, torch.full_like(p_z1.scale, floor), rtol=1e-6, atol=0)
        worst = (-((z1 - p_z1.loc) ** 2) * math.exp(6) / 2 + 3 - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_p = prior.log_prob(z1)
        bounds[scale] = log_p
        if scale == "bounded":
            torch.testing.assert_close(log_p, worst)  # at the floor, the bound is met exactly
    assert (bounds["softplus"] < 1e3 * bounds["bounded"]).all()  # the floor is what kept it finite


def test_bounded_scale_is_the_reference_log_variance_clamped_to_minus_six_and_two():
    from pyrovae.networks import SCALES

    raw = torch.tensor([-50.0, -6.0, -1.0, 0.0, 2.0, 50.0], requires_grad=True)
    sigma = SCALES["bounded"].sigma(raw)
    torch.testing.assert_close(sigma, torch.exp(0.5 * torch.tensor([-6.0, -6.0, -1.0, 0.0, 2.0, 2.0])))
    sigma.sum().backward()
    assert raw.grad[0] == 0 and raw.grad[-1] == 0 and (raw.grad[2:4] > 0).all()  # Hardtanh's gradient
    assert ModelConfig().scale == "softplus"  # earlier runs' config.json, without the key, load unchanged


@pytest.mark.parametrize(
    "args",
    [
        ["--guide", "iaf", "--num-flows", "2"],
        ["--guide", "planar", "--num-flows", "4"],
        ["--guide", "spline", "--num-flows", "1", "--elbo", "iwae-dreg", "--num-particles", "2"],
        ["--model", "hvae", "--prior", "vamp", "--num-components", "5"],
        ["--model", "hvae", "--elbo", "iwae", "--num-particles", "3"],
        ["--arch", "gated", "--hidden-dims", "32,32", "--model", "hvae", "--scale", "bounded"],
        ["--arch", "gated", "--guide", "iaf"],
        ["--arch", "conv", "--likelihood", "discretized-logistic"],
        ["--arch", "conv", "--model", "hvae", "--prior", "vamp", "--num-components", "3"],
    ],
)
def test_guides_and_models_fit_evaluate_and_draw_from_the_cli(tmp_path, args):
    out = tmp_path / "run"
    result = invoke("fit", *TINY, "--epochs", "2", *args, "--out", str(out))
    assert result.exit_code == 0, result.output
    result = invoke("evaluate", str(out), "--num-samples", "20", "--no-compile", "--json")
    scored = json.loads(result.output)
    assert scored["log_px"] >= scored["elbo"]
    for command in ("sample", "reconstruct", "latent", "interpolate"):
        assert invoke(command, str(out)).exit_code == 0


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--guide", "iaf", "--elbo", "meanfield"], "needs KL(q || p) in closed form"),
        (["--guide", "planar", "--elbo", "iwae-dreg"], "needs the inverse of every transform"),
        (["--model", "hvae", "--guide", "iaf"], "its own two-layer Gaussian guide"),
        (["--guide", "realnvp"], "'--guide'"),
        (["--num-flows", "0"], "'--num-flows'"),
        (["--arch", "transformer"], "'--arch'"),
        (["--scale", "exp"], "'--scale'"),
    ],
)
def test_bad_guide_or_model_is_a_one_line_error(tmp_path, args, fragment):
    out = tmp_path / "run"
    assert_one_line_error(invoke("fit", *TINY, "--out", str(out), *args), fragment)
    assert not out.exists()


def test_a_run_with_a_prior_of_your_own_comes_back_with_import(tmp_path):
    out = tmp_path / "run"
    result = invoke("--import", "examples/swap_prior.py", "fit", *TINY, "--epochs", "1", "--prior",
                    "learned-normal", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    # In a process of its own: this one has the prior registered now.
    alone = subprocess.run([sys.executable, "cli.py", "sample", str(out)], cwd=ROOT, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert alone.returncode != 0 and "Traceback" not in alone.stderr
    assert "prior 'learned-normal' is not registered" in alone.stderr and "--import" in alone.stderr
    result = invoke("--import", "examples/swap_prior.py", "sample", str(out))
    assert result.exit_code == 0, result.output
    assert_one_line_error(invoke("--import", "no/such/parts.py", "sample", str(out)), "cannot import")


def test_convolutions_need_sides_divisible_by_four_and_handle_colour():
    with pytest.raises(ValueError, match="divisible by 4"):
        ModelConfig(arch="conv", image_shape=(30, 30))
    vae = VAE(ModelConfig(arch="conv", image_shape=(3, 32, 32), likelihood="discretized-logistic", z_dim=3))
    x = vae.model.p_x.data(torch.randint(0, 256, (5, 3 * 32 * 32), dtype=torch.uint8))
    estimate = importance_estimate(vae.model, vae.guide, x, num_samples=4)
    assert estimate.log_px.shape == (5,) and estimate.log_px.isfinite().all()
    assert vae.sample(2).shape == (2, 3 * 32 * 32)
