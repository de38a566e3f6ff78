import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions import BernoulliImage, UnitNormal


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
