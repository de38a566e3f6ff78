import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions import BernoulliImage, DiagonalNormalMixture, UnitNormal, _log_sum_exp


def test_bernoulli_image_is_bernoulli_to_event():
    g = torch.Generator().manual_seed(0)
    logits = 8 * torch.randn(7, 3, 10, generator=g, dtype=torch.float64)  # (particles, n, D)
    x = torch.bernoulli(torch.full((3, 10), 0.4, dtype=torch.float64), generator=g)  # (n, D)
    ours, reference = BernoulliImage(logits=logits), dist.Bernoulli(logits=logits).to_event(1)
    torch.testing.assert_close(ours.log_prob(x), reference.log_prob(x), rtol=1e-12, atol=1e-12)
    assert ours.batch_shape == (7, 3) and ours.event_shape == (10,)
    torch.testing.assert_close(ours.mean, reference.mean)
    assert ours.sample((5,)).shape == (5, 7, 3, 10)
    assert ours.expand((2, 7, 3)).log_prob(x).shape == (2, 7, 3)


def test_bernoulli_image_gradients_match():
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    x = torch.tensor([[0.0, 1.0] * 3] * 4, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(BernoulliImage(logits=logits).log_prob(x).sum(), logits)
    (g_ref,) = torch.autograd.grad(dist.Bernoulli(logits=logits).to_event(1).log_prob(x).sum(), logits)
    torch.testing.assert_close(g_ours, g_ref)


def test_bernoulli_image_rejects_grey_levels_under_validation():
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        BernoulliImage(logits=torch.zeros(2, 3)).log_prob(torch.full((2, 3), 0.5))


def _exact_bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 value of sum_d [x_d l_d - softplus(l_d)] and the sum of its terms' magnitudes."""
    logits, x = logits.double(), x.double()
    terms = torch.stack(torch.broadcast_tensors(x * logits, torch.nn.functional.softplus(logits)))
    return (terms[0] - terms[1]).sum(-1), terms.abs().sum((0, -1))


@pytest.mark.parametrize("scale", [1.0, 8.0, 40.0])
def test_float32_log_prob_is_within_rounding_of_the_exact_value(scale):
    # Each term is rounded once or twice (2^-24 relative, and 2^-24 nats for log sigmoid(|l|)), then
    # summed over D terms: a float32 sum's error is at most log2(D) roundings of the terms' magnitudes.
    g = torch.Generator().manual_seed(1)
    logits = scale * torch.randn(5, 64, 784, generator=g)
    x = torch.bernoulli(torch.full((64, 784), 0.3), generator=g)
    exact, magnitude = _exact_bernoulli_log_prob(logits, x)
    eps = 2.0**-24
    bound = eps * ((math.log2(784) + 3) * magnitude + 784)
    ours = BernoulliImage(logits=logits).log_prob(x).double()
    assert ((ours - exact).abs() <= bound).all()


def test_float32_gradient_is_the_binary_cross_entropys_bit_for_bit():
    g = torch.Generator().manual_seed(2)
    logits = (6 * torch.randn(3, 32, 784, generator=g)).requires_grad_()
    x = torch.bernoulli(torch.full((32, 784), 0.4), generator=g)
    weight = torch.randn(3, 32, generator=g)
    (ours,) = torch.autograd.grad((BernoulliImage(logits=logits).log_prob(x) * weight).sum(), logits)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
    (ref,) = torch.autograd.grad((-bce.sum(-1) * weight).sum(), logits)
    assert torch.equal(ours, ref)


def test_log_prob_broadcasts_both_ways_and_differentiates_in_float64():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)  # (n, D)
    x = torch.bernoulli(torch.full((3, 4, 6), 0.5, dtype=torch.float64), generator=g)  # (K, n, D)
    reference = dist.Bernoulli(logits=logits).to_event(1).log_prob(x)
    torch.testing.assert_close(BernoulliImage(logits=logits).log_prob(x), reference, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda lg: BernoulliImage(logits=lg).log_prob(x), (logits,))


def test_a_target_that_requires_grad_gets_its_gradient():
    logits = torch.randn(2, 5, dtype=torch.float64)
    x = torch.rand(2, 5, dtype=torch.float64, requires_grad=True)
    log_p = BernoulliImage(logits=logits, validate_args=False).log_prob(x)  # grey targets
    (g_ours,) = torch.autograd.grad(log_p.sum(), x)
    torch.testing.assert_close(g_ours, logits)  # d/dx [x l - softplus(l)] = l


@pytest.mark.parametrize("value_shape, batch_shape", [((4, 3), (3,)), ((3,), (2, 3)), ((5, 1, 3), (7, 3))])
def test_unit_normal_broadcasts_as_torchs_normal(value_shape, batch_shape):
    value = torch.randn(value_shape, generator=torch.Generator().manual_seed(4))
    ours = UnitNormal(torch.zeros(batch_shape), torch.ones(batch_shape)).log_prob(value)
    reference = torch.distributions.Normal(torch.zeros(batch_shape), torch.ones(batch_shape)).log_prob(value)
    assert ours.shape == reference.shape == torch.broadcast_shapes(value_shape, batch_shape)
    assert torch.equal(ours, reference)


def test_unit_normal_refuses_what_torch_refuses():
    # Without validation, which would refuse the value before either computes.
    loc, scale, value = torch.zeros(4, 3), torch.ones(4, 3), torch.zeros(2, 3)
    with pytest.raises(RuntimeError):
        torch.distributions.Normal(loc, scale, validate_args=False).log_prob(value)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        UnitNormal(loc, scale, validate_args=False).log_prob(value)


def _mixture_parameters(k=6, d=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=g, dtype=dtype)
    loc = 2 * torch.randn(k, d, generator=g, dtype=dtype)
    scale = 0.05 + torch.rand(k, d, generator=g, dtype=dtype)
    return logits, loc, scale


def _reference_mixture(logits, loc, scale):
    return dist.MixtureSameFamily(dist.Categorical(logits=logits), dist.Normal(loc, scale).to_event(1))


@pytest.mark.parametrize("value_shape", [(5,), (3, 5), (2, 4, 5)])
def test_diagonal_normal_mixture_is_mixture_same_family(value_shape):
    params = _mixture_parameters()
    z = 2 * torch.randn(value_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours, reference = DiagonalNormalMixture(*params), _reference_mixture(*params)
    assert ours.batch_shape == reference.batch_shape == () and ours.event_shape == (5,)
    torch.testing.assert_close(ours.log_prob(z), reference.log_prob(z), rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(ours.mean, reference.mean)
    assert ours.sample((7,)).shape == (7, 5)


def test_diagonal_normal_mixture_gradients():
    logits, loc, scale = (t.requires_grad_() for t in _mixture_parameters(k=3, d=2))
    z = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda *a: DiagonalNormalMixture(*a[:3]).log_prob(a[3]), (logits, loc, scale, z)
    )
    ours = torch.autograd.grad(
        DiagonalNormalMixture(logits, loc, scale).log_prob(z).sum(), (logits, loc, scale, z)
    )
    ref = torch.autograd.grad(
        _reference_mixture(logits, loc, scale).log_prob(z).sum(), (logits, loc, scale, z)
    )
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_diagonal_normal_mixture_float32_is_exact_near_a_narrow_component():
    # z within a few scales of a component whose scale is 1e-3: expanding the square in float32 would
    # cancel terms of ~z^2 / scale^2 = 1e6 and lose ~0.1 nats; summed in float64 the result is within
    # float32's rounding of the exact value (terms of at most ~|log p| ~ 300 here: 2^-24 * 300 ~ 2e-5).
    logits, loc, scale = _mixture_parameters(k=4, d=40, dtype=torch.float64)
    scale[0] = 1e-3
    z = loc[0] + scale[0] * torch.randn(40, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = _reference_mixture(logits, loc, scale).log_prob(z)
    ours = DiagonalNormalMixture(logits.float(), loc.float(), scale.float()).log_prob(z.float())
    assert ours.dtype == torch.float32
    magnitude = float(exact.abs()) + float(scale[0].log().abs().sum()) + 40
    assert abs(float(ours) - float(exact)) < 16 * 2**-24 * magnitude


def test_diagonal_normal_mixture_broadcasts_in_a_plate_without_copying_its_components():
    params = _mixture_parameters()
    prior = DiagonalNormalMixture(*params)
    with pyro.plate("particles", 3, dim=-2), pyro.plate("data", 4, dim=-1):
        trace = pyro.poutine.trace(lambda: pyro.sample("z", prior)).get_trace()
    site = trace.nodes["z"]
    assert isinstance(site["fn"], DiagonalNormalMixture) and site["fn"].batch_shape == (3, 4)
    assert site["fn"]._params[1] is params[1]  # the (K, D) locations, not a (3, 4, K, D) expansion
    expected = _reference_mixture(*params).expand((3, 4)).log_prob(site["value"])
    torch.testing.assert_close(site["fn"].log_prob(site["value"]), expected, rtol=1e-12, atol=1e-10)
    assert site["fn"].log_prob(site["value"][0, 0]).shape == (3, 4)  # one z scored under every point


def test_diagonal_normal_mixture_refuses_other_shapes():
    logits, loc, scale = _mixture_parameters()
    with pytest.raises(ValueError, match="logits must be"):
        DiagonalNormalMixture(logits.expand(2, 6), loc, scale)


def test_log_sum_exp_is_torchs_to_rounding():
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(50, 30, generator=g) * 100 - 50, torch.full((1, 30), -math.inf)])
    x[1, :29] = -math.inf
    x[2, 0] = math.inf
    ours, theirs = _log_sum_exp(x), torch.logsumexp(x, -1)
    torch.testing.assert_close(ours, theirs, rtol=2**-22, atol=0)  # -inf, inf and a lone term included
    x = torch.randn(8, 30, generator=g, requires_grad=True)
    (g_ours,) = torch.autograd.grad(_log_sum_exp(3 * x).sum(), x)
    (g_ref,) = torch.autograd.grad(torch.logsumexp(3 * x, -1).sum(), x)
    torch.testing.assert_close(g_ours, g_ref)
