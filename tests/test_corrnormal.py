"""The correlated Gaussian kernel prior: closed-form KL against Monte Carlo, fit, file, and saved models."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bayesprior as bp
from bayesprior.errors import CheckpointError, ConfigError, PriorMismatchError
from bayesprior.kernels import KernelBank
from bayesprior.posteriors import GaussianPosterior
from bayesprior.priors import closed_form_kl
from bayesprior_corrnormal import CorrelatedNormalPrior, create_corrnormal_prior, fit_corrnormal_file


def _random_covariance(d, generator):
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return (a @ a.T / d + 0.5 * torch.eye(d, dtype=torch.float64)).float()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), kernel=st.sampled_from([(2, 2), (3,), (2, 2, 2)]))
def test_closed_form_kl_equals_a_monte_carlo_estimate(seed, kernel):
    g = torch.Generator().manual_seed(seed)
    d = int(np.prod(kernel))
    prior = CorrelatedNormalPrior(torch.randn(d, generator=g), _random_covariance(d, g), kernel)
    q = GaussianPosterior(torch.randn((2, 3) + kernel, generator=g), log_variance_init=-1.0)
    with torch.no_grad():
        q.log_variance.add_(0.3 * torch.randn(q.log_variance.shape, generator=g))
    closed = float(closed_form_kl(q, prior)(q, prior).detach())
    with torch.no_grad():  # KL = E_q[log q - log p], averaged over many samples
        draws = [float(q.log_prob(w).sum() - prior.log_prob(w)) for w in (q.rsample() for _ in range(4000))]
    mc, se = np.mean(draws), np.std(draws) / np.sqrt(len(draws))
    assert abs(closed - mc) < 5 * se + 1e-3


def test_kl_is_zero_when_every_kernel_posterior_is_the_prior_with_diagonal_covariance():
    variances = torch.tensor([0.5, 1.0, 2.0, 0.25])
    prior = CorrelatedNormalPrior(torch.tensor([0.1, -0.2, 0.3, 0.0]), torch.diag(variances), (2, 2))
    q = GaussianPosterior(prior.mean.reshape(1, 1, 2, 2).repeat(2, 3, 1, 1))
    with torch.no_grad():
        q.log_variance.copy_(variances.log().reshape(1, 1, 2, 2).expand_as(q.log_variance))
    assert abs(float(prior.kl(q).detach())) < 1e-4


def test_samples_have_the_prior_mean_and_covariance():
    g = torch.Generator().manual_seed(1)
    cov = _random_covariance(4, g)
    prior = CorrelatedNormalPrior(torch.tensor([1.0, 0.0, -1.0, 2.0]), cov, (2, 2))
    rows = prior.sample(torch.Size([200, 100, 2, 2])).reshape(-1, 4)
    assert torch.allclose(rows.mean(0), prior.mean, atol=0.03)
    assert torch.allclose(torch.cov(rows.T), cov, atol=0.05)


def test_fit_recovers_the_moments_of_a_bank_and_the_factory_reads_the_file(tmp_path):
    g = torch.Generator().manual_seed(2)
    cov = _random_covariance(27, g)
    kernels = (torch.randn(20_000, 27, generator=g) @ torch.linalg.cholesky(cov).T).reshape(-1, 3, 3, 3)
    bank = KernelBank({"g": kernels.numpy()}, {"kernel_size": [3, 3, 3], "groups": {"g": {"layers": ["a"]}}})
    bank.save(tmp_path / "bank.npz")
    fit_corrnormal_file(str(tmp_path / "bank.npz"), str(tmp_path / "prior.pt"), ridge=0.0)
    prior = create_corrnormal_prior(path=str(tmp_path / "prior.pt"), group="g")
    fitted = prior.cholesky @ prior.cholesky.T
    assert torch.allclose(fitted, cov, atol=0.06)
    assert prior.mean.abs().max() < 0.05
    torch.load(tmp_path / "prior.pt", weights_only=True)  # plain types only


def test_a_saved_model_predicts_without_the_prior_file(tmp_path):
    kernels = np.random.default_rng(0).normal(size=(500, 3, 3, 3)).astype(np.float32)
    KernelBank({"all": kernels}, {"kernel_size": [3, 3, 3], "groups": {"all": {"layers": []}}}).save(tmp_path / "b.npz")
    fit_corrnormal_file(str(tmp_path / "b.npz"), str(tmp_path / "prior.pt"))
    net = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 2, 1))
    bm = bp.bayesianize(net, {bp.by_kernel_size(3): ("corrnormal", {"path": str(tmp_path / "prior.pt"), "group": "all"})})
    kl = float(bm.kl().detach())
    bp.save_model(bm, tmp_path / "model.pt")
    (tmp_path / "prior.pt").unlink()
    again = bp.load_bayesian(tmp_path / "model.pt",
                             nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv3d(2, 2, 1)))
    assert float(again.kl().detach()) == pytest.approx(kl, rel=1e-6)


def test_bad_arguments_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match="positive definite"):
        CorrelatedNormalPrior(torch.zeros(4), -torch.eye(4), (2, 2))
    with pytest.raises(ConfigError, match="4 values"):
        CorrelatedNormalPrior(torch.zeros(3), torch.eye(4), (2, 2))
    with pytest.raises(ConfigError, match="group"):
        create_corrnormal_prior(path="x.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="junk.pt"):
        create_corrnormal_prior(path=str(tmp_path / "junk.pt"), group="g")
    prior = CorrelatedNormalPrior(torch.zeros(4), torch.eye(4), (2, 2))
    with pytest.raises(PriorMismatchError, match="fitted to 2x2"):
        prior.check_compatible(torch.Size([2, 2, 3, 3]), "conv")
