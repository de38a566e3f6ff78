"""Every likelihood and prior: its density checked independently, one SVI step, one log p(x) call."""

import math
import re
import sys

import pyro.distributions as dist
import pytest
import torch

from pyrovae.config import ModelConfig
from pyrovae.distributions import DiscretizedLogistic
from pyrovae.importance import importance_estimate
from pyrovae.likelihoods import LIKELIHOODS
from pyrovae.model import VAE
from pyrovae.priors import PRIORS, has_closed_form_kl
from pyrovae.train import adam, elbo_loss
from tests.conftest import invoke
from tests.test_cli import assert_one_line_error


def components(prior: str, k: int) -> dict[str, int]:
    """``num_components=k`` for a prior that has components; nothing for one that has none (refused)."""
    return {"num_components": k} if "num_components" in PRIORS[prior].reads else {}


X_UINT8 = torch.randint(0, 256, (6, 784), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize(
    "arch, family, k",
    [
        ("mlp", "vae", 1),
        ("gated", "vae", 3),
        ("gated", "hvae", 2),
        ("conv", "vae", 2),
        ("conv", "hvae", 1),
        ("tanh", "vae", 2),
    ],
)
@pytest.mark.parametrize("image_shape", [(28, 28), (3, 8, 8)], ids=["grey", "colour"])
def test_every_pair_takes_an_svi_step_and_gives_log_px(likelihood, prior, arch, family, k, image_shape):
    """Every architecture, likelihood and prior, on grey and colour images, with and without particle
    dimensions."""
    options = dict(z_dim=3, hidden_dims=(16, 8), likelihood=likelihood, prior=prior, arch=arch, family=family,
                   image_shape=image_shape, **components(prior, 4))  # fmt: skip
    if likelihood == "bernoulli" and len(image_shape) == 3:
        with pytest.raises(ValueError, match="colour"):
            ModelConfig(**options)
        return
    config = ModelConfig(**options)
    _step_then_log_px(VAE(config), k, num_samples=8)


def _step_then_log_px(vae: VAE, k: int, num_samples: int) -> None:
    """One SVI step (IWAE for K > 1) moves every parameter, the prior's and the likelihood's included;
    then a finite log p(x) above the ELBO for each of the six images."""
    x = vae.model.p_x.data(X_UINT8[:, : vae.config.x_dim])
    loss_fn = elbo_loss(vae, "iwae" if k > 1 else "trace", num_particles=k)
    optimizer = adam(loss_fn.parameters(), 1e-2)
    before = {n: p.detach().clone() for n, p in vae.named_parameters()}
    loss = loss_fn(x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert loss.isfinite()
    moved = {n for n, p in vae.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(before), set(before) - moved
    estimate = importance_estimate(vae.model, vae.guide, x, num_samples=num_samples)
    assert estimate.log_px.shape == (6,) and estimate.log_px.isfinite().all()
    assert (estimate.log_px >= estimate.elbo - 1e-3).all()


@pytest.mark.parametrize(
    "family, likelihood, image_shape",
    [("hvae", "bernoulli", (28, 28)), ("vae", "discretized-logistic", (3, 8, 8))],
)
def test_gated_convolutions_take_an_svi_step_and_give_log_px(family, likelihood, image_shape):
    """The ConvHVAE's networks (their full-resolution convolutions are too slow for every pair above)."""
    config = ModelConfig(z_dim=3, hidden_dims=(16,), arch="gated-conv", family=family, likelihood=likelihood,
                         image_shape=image_shape)  # fmt: skip
    _step_then_log_px(VAE(config), k=2, num_samples=4)


def test_likelihood_representations():
    g = torch.Generator().manual_seed(1)
    x = X_UINT8
    assert set(LIKELIHOODS["bernoulli"](784).data(x, g).unique().tolist()) <= {0.0, 1.0}
    for name in ("continuous-bernoulli", "gaussian"):
        y = LIKELIHOODS[name](784).data(x, g)
        assert ((y * 256).floor() == x.float()).all()  # dequantized within its own bin
        assert LIKELIHOODS[name](784).log_px_offset() == pytest.approx(-784 * math.log(256))
    levels = LIKELIHOODS["discretized-logistic"](784).data(x)
    torch.testing.assert_close(levels * 255, x.float())
    assert LIKELIHOODS["discretized-logistic"](784).log_px_offset() == 0


def test_continuous_bernoulli_integrates_to_one_near_and_far_from_a_half():
    lam = torch.tensor([0.02, 0.3, 0.4999, 0.5, 0.5001, 0.7, 0.98], dtype=torch.float64)
    likelihood = LIKELIHOODS["continuous-bernoulli"](len(lam))
    density = likelihood(torch.logit(lam))
    y = torch.linspace(0, 1, 20001, dtype=torch.float64)[:, None].expand(-1, len(lam))  # (G, 7)
    p = density.base_dist.log_prob(y).exp()
    integral = torch.trapezoid(p, y, dim=0)
    torch.testing.assert_close(integral, torch.ones_like(lam), rtol=0, atol=1e-6)
    # the closed form, away from 1/2: log C = log(2 atanh(1 - 2 lam) / (1 - 2 lam))
    far = torch.tensor([0, 1, 5, 6])
    expected = torch.log(2 * torch.atanh(1 - 2 * lam[far]) / (1 - 2 * lam[far]))
    torch.testing.assert_close(density.base_dist.log_prob(torch.zeros(7, dtype=torch.float64))[far],
                               expected + torch.log1p(-lam[far]))  # fmt: skip


def test_gaussian_is_normal_with_its_learned_scale():
    likelihood = LIKELIHOODS["gaussian"](4)
    out = torch.tensor([0.1, 0.5, 0.9, 0.3])
    y = torch.tensor([0.2, 0.4, 0.8, 0.3])
    scale = torch.nn.functional.softplus(likelihood.raw_scale) + 1e-3
    expected = (-0.5 * ((y - out) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum()
    torch.testing.assert_close(likelihood(out).log_prob(y), expected)


@pytest.mark.parametrize("loc, scale", [(0.5, 0.01), (0.0, 0.2), (1.0, 0.003), (0.3, 5.0), (0.73, 1e-4)])
def test_discretized_logistic_sums_to_one_over_the_256_levels(loc, scale):
    d = DiscretizedLogistic(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    k = torch.arange(256, dtype=torch.float64) / 255
    p = d.log_prob(k).exp()
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=torch.float64), rtol=0, atol=1e-9)
    # against the logistic CDF directly, in float64, for an inner level
    cdf = torch.distributions.TransformedDistribution(
        dist.Uniform(0.0, 1.0),
        [dist.transforms.SigmoidTransform().inv, dist.transforms.AffineTransform(loc, scale)],
    ).cdf
    j = 128
    edges = torch.tensor([(j - 0.5) / 255, (j + 0.5) / 255], dtype=torch.float64)
    expected = cdf(edges[1]) - cdf(edges[0])
    torch.testing.assert_close(p[j], expected.double(), rtol=1e-6, atol=1e-12)
    assert (d.sample((1000,)) * 255 % 1 == 0).all()


def test_vamp_prior_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
    vae = VAE(ModelConfig(z_dim=3, hidden_dims=(16,), prior="vamp", num_components=5))
    prior = vae.model.prior()
    z = torch.randn(7, 3)
    loc, scale = vae.guide.encoder(vae.model.p_z.pseudo_inputs)  # (5, 3)
    components = torch.distributions.Normal(loc, scale).log_prob(z[:, None, :]).sum(-1)  # (7, 5)
    torch.testing.assert_close(prior.log_prob(z), components.logsumexp(-1) - math.log(5))
    assert vae.model.p_z.encoder is vae.guide.encoder


def test_mixture_of_gaussians_is_its_explicit_mixture():
    vae = VAE(ModelConfig(z_dim=2, hidden_dims=(8,), prior="mog", num_components=3))
    p_z = vae.model.p_z
    z = torch.randn(9, 2)
    scale = torch.nn.functional.softplus(p_z.raw_scale) + 1e-4
    log_w = torch.log_softmax(p_z.logits, 0)
    explicit = (torch.distributions.Normal(p_z.loc, scale).log_prob(z[:, None]).sum(-1) + log_w).logsumexp(-1)
    torch.testing.assert_close(vae.model.prior().log_prob(z), explicit)


def test_student_t_has_heavier_tails_than_normal():
    vae_t = VAE(ModelConfig(z_dim=2, hidden_dims=(8,), prior="studentt"))
    vae_n = VAE(ModelConfig(z_dim=2, hidden_dims=(8,)))
    far = torch.full((1, 2), 6.0)
    assert vae_t.model.prior().log_prob(far) > vae_n.model.prior().log_prob(far) + 10


@pytest.mark.parametrize(
    "prior, closed", [("normal", True), ("mog", False), ("vamp", False), ("studentt", False)]
)
def test_closed_form_kl_is_known_only_for_the_normal_prior(prior, closed):
    vae = VAE(ModelConfig(z_dim=2, hidden_dims=(8,), prior=prior, **components(prior, 2)))
    assert has_closed_form_kl(vae.model.prior(), vae.guide.posterior(torch.zeros(1, 784))) is closed


def test_meanfield_refuses_a_prior_without_closed_form_kl(tmp_path):
    result = invoke("fit", "--dataset", "synthetic", "--prior", "vamp", "--elbo", "meanfield",
                    "--out", str(tmp_path / "r"))  # fmt: skip
    assert_one_line_error(result, "--elbo meanfield needs KL", "at site 'z'", "DiagonalNormalMixture")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
@pytest.mark.parametrize("prior", sorted(PRIORS))
def test_every_pair_fits_and_evaluates_from_the_cli(tmp_path, likelihood, prior):
    out = tmp_path / "run"
    few = ["--num-components", "3"] if "num_components" in PRIORS[prior].reads else []
    result = invoke("fit", "--dataset", "synthetic", "--epochs", "1", "--likelihood", likelihood, "--prior",
                    prior, *few, "--hidden-dims", "32", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    result = invoke(
        "evaluate", str(out), "--num-samples", "4", "--num-points", "20", "--no-compile", "--json"
    )
    assert result.exit_code == 0, result.output
    import json

    evaluation = json.loads(result.stdout)
    assert evaluation["likelihood"] == likelihood and evaluation["prior"] == prior
    assert math.isfinite(evaluation["bits_per_dim"]) and evaluation["bits_per_dim"] > 0
    assert evaluation["log_px"] >= evaluation["elbo"]
    result = invoke("sample", str(out), "-n", "4", "--out", str(tmp_path / "s.png"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"num_components": 7}, "num_components is for mog, vamp; the normal prior and the gaussian guide"),
        ({"num_flows": 3, "prior": "studentt"}, "num_flows is for iaf, planar, spline; the studentt prior"),
    ],
)
def test_an_option_that_none_of_the_parts_reads_is_refused(options, fragment):
    """It would be kept in config.json as if it had shaped the model; one that a part reads is not."""
    with pytest.raises(ValueError, match=re.escape(fragment)):
        ModelConfig(**options)
    ModelConfig(**{**options, "prior": "mog", "guide": "iaf"})
    ModelConfig(**{k: v for k, v in options.items() if k == "prior"})  # the option's default: anything


def test_a_name_taken_by_another_part_is_refused_and_the_same_part_may_register_again(tmp_path):
    """A prior of your own under ``normal`` would change what every saved run with the standard normal
    loads: refused, where it is registered and, through ``--import``, in one line; the table keeps the
    built-in. A module imported again (reloaded, or under another name) registers its class again."""
    import importlib.util

    from pyrovae.priors import StandardNormal

    part = tmp_path / "my_parts.py"
    part.write_text(
        "from pyrovae.priors import StandardNormal, register\n\n\n"
        "@register('{name}')\nclass Mine(StandardNormal):\n    pass\n".replace("{name}", "normal")
    )
    result = invoke("--import", str(part), "sample", str(tmp_path))
    assert_one_line_error(result, "the name 'normal' is taken already", "priors.py:StandardNormal")
    assert PRIORS["normal"] is StandardNormal
    part.write_text(part.read_text().replace("'normal'", "'mine-again'"))
    try:
        invoke("--import", str(part), "sample", str(tmp_path))  # registers it as pyrovae_parts_my_parts
        assert PRIORS["mine-again"].__module__ == "pyrovae_parts_my_parts"
        for module_name in ("my_parts", "my_parts_again", "my_parts"):  # as the import system does it
            spec = importlib.util.spec_from_file_location(module_name, part)
            sys.modules[module_name] = module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            assert PRIORS["mine-again"] is module.Mine
    finally:
        PRIORS.pop("mine-again", None)
        for module_name in ("my_parts", "my_parts_again", "pyrovae_parts_my_parts"):
            sys.modules.pop(module_name, None)
