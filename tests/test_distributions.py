import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovae.distributions import BernoulliImage


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
