"""The fully factorised Gaussian posterior."""
import math

import pytest
import torch

from bayesprior import GaussianPosterior, Posterior
from bayesprior.errors import ConfigError


def test_mean_starts_at_the_weight_and_log_variance_at_the_constant():
    w = torch.randn(3, 4)
    q = GaussianPosterior(w, log_variance_init=-7.0)
    assert torch.equal(q.mean, w)
    assert q.mean.data_ptr() != w.data_ptr()  # a copy: the posterior owns its parameter
    assert torch.equal(q.log_variance, torch.full((3, 4), -7.0))
    assert torch.allclose(q.variance, torch.full((3, 4), math.exp(-7.0)))
    assert torch.allclose(q.stddev, torch.full((3, 4), math.exp(-3.5)))


def test_default_log_variance_is_minus_ten():
    assert GaussianPosterior(torch.zeros(2)).log_variance[0].item() == -10.0


def test_non_finite_log_variance_init_is_refused():
    with pytest.raises(ConfigError, match="log_variance_init"):
        GaussianPosterior(torch.zeros(2), log_variance_init=float("inf"))


def test_entropy_and_log_prob_match_torch_normal_element_wise():
    q = GaussianPosterior(torch.randn(5, 2), log_variance_init=-1.0)
    with torch.no_grad():
        q.log_variance.add_(torch.randn(5, 2))
    w = torch.randn(5, 2)
    assert torch.allclose(q.entropy(), q.distribution().entropy(), atol=1e-6)
    assert torch.allclose(q.log_prob(w), q.distribution().log_prob(w), atol=1e-5)


def test_the_entropy_of_the_whole_tensor_is_the_sum_of_the_element_wise_one_with_its_gradient():
    q = GaussianPosterior(torch.randn(5, 2), log_variance_init=-1.0)
    with torch.no_grad():
        q.log_variance.add_(torch.randn(5, 2))
    total, summed = q.entropy_sum(), q.entropy().sum()
    assert torch.allclose(total, summed) and total.shape == ()
    assert torch.allclose(torch.autograd.grad(total, q.log_variance)[0], torch.autograd.grad(summed, q.log_variance)[0])


def test_rsample_has_the_posterior_moments_and_reaches_both_parameters():
    q = GaussianPosterior(torch.full((20000,), 0.5), log_variance_init=math.log(0.09))
    w = q.rsample()
    assert abs(w.mean().item() - 0.5) < 0.01
    assert abs(w.std().item() - 0.3) < 0.01
    w.sum().backward()
    assert q.loc.grad is not None and q.log_variance.grad is not None
    assert torch.isfinite(q.log_variance.grad).all()


def test_two_samples_differ():
    q = GaussianPosterior(torch.zeros(10), log_variance_init=0.0)
    assert not torch.equal(q.rsample(), q.rsample())


def test_the_gaussian_posterior_is_a_posterior_as_priors_see_it():
    q = GaussianPosterior(torch.randn(2, 3))
    assert isinstance(q, Posterior)
    assert not isinstance(torch.randn(2, 3), Posterior)



def test_rsample_gradients_match_the_reparameterisation_formula():
    torch.manual_seed(0)
    q = GaussianPosterior(torch.randn(4, 3), -1.0)
    torch.manual_seed(1)
    w = q.rsample()
    torch.manual_seed(1)
    noise = torch.randn(4, 3)
    reference = q.loc + (0.5 * q.log_variance).exp() * noise
    assert torch.allclose(w, reference)
    grads = torch.autograd.grad((w * torch.arange(12.0).reshape(4, 3)).sum(), [q.loc, q.log_variance])
    expected = torch.autograd.grad((reference * torch.arange(12.0).reshape(4, 3)).sum(), [q.loc, q.log_variance])
    assert all(torch.allclose(a, b) for a, b in zip(grads, expected, strict=True))
