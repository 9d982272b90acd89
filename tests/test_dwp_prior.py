import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from bayesprior import GaussianPosterior
from bayesprior.errors import CheckpointError, ConfigError, PriorMismatchError
from bayesprior.kernels import KernelBank
from bayesprior.plugins import create_prior
from bayesprior_dwp import DeepWeightPrior, KernelVAE, save_prior_file
from bayesprior_dwp.vae import gaussian_log_prob

LOG_2PI = math.log(2 * math.pi)


def _random_vae(latent_dim=2, hidden=8, seed=0):
    """A VAE with random weights everywhere (a fresh one starts as a Gaussian, which tests too little)."""
    torch.manual_seed(seed)
    vae = KernelVAE((3, 3, 3), latent_dim=latent_dim, hidden=hidden)
    for head in (vae.encoder, vae.decoder):
        nn.init.normal_(head.net[-1].weight, std=0.3)
    return vae


def _posterior(n_out=4, n_in=3, scale=0.5, log_variance=-2.0, seed=1):
    torch.manual_seed(seed)
    return GaussianPosterior(scale * torch.randn(n_out, n_in, 3, 3, 3), log_variance)


def test_bound_is_above_an_importance_sampled_kl():
    # IWAE ordering: E[bound] >= KL estimated with a many-sample importance estimate of log p(w) >= true KL
    prior = DeepWeightPrior(_random_vae())
    q = _posterior(n_out=2, n_in=2)
    with torch.no_grad():
        bounds = torch.stack([prior.kl(q) for _ in range(400)])
        w = q.loc + q.stddev * torch.randn((64,) + q.shape)  # (M, 2, 2, 3, 3, 3)
        flat = w.reshape(-1, 27)
        mu_z, lv_z = prior.vae.encode(flat)
        eps = torch.randn(512, *mu_z.shape)
        z = mu_z + (0.5 * lv_z).exp() * eps
        log_w = (prior.vae.log_likelihood(flat.expand(512, -1, -1).reshape(-1, 27), z.reshape(-1, 2)).reshape(512, -1)
                 + gaussian_log_prob(z, torch.zeros(()), torch.zeros(())).sum(-1)
                 - gaussian_log_prob(z, mu_z, lv_z).sum(-1))
        log_p = torch.logsumexp(log_w, 0) - math.log(512)
        log_q = q.log_prob(w).reshape(64, -1, 27).sum(-1).reshape(-1)
        kl_samples = (log_q - log_p).reshape(64, -1).sum(-1)  # per weight draw, summed over kernels
    importance_kl, se_kl = kl_samples.mean(), kl_samples.std() / 8
    bound, se_bound = bounds.mean(), bounds.std() / 20
    assert bound >= importance_kl - 3 * (se_kl + se_bound)


class _LinearGaussianEncoder(nn.Module):
    """The exact posterior p(z | w) of the linear-Gaussian decoder below (diagonal by construction)."""

    def __init__(self, rows, gains, offset, noise_variance):
        super().__init__()
        self.rows, self.gains, self.offset, self.noise_variance = rows, gains, offset, noise_variance
        self.weight = nn.Parameter(torch.zeros(1))  # something for the optimiser to see
        self.post_variance = 1.0 / (1.0 + gains ** 2 / noise_variance)

    def forward(self, w):
        mean = self.post_variance * self.gains * (w[:, self.rows] - self.offset[self.rows]) / self.noise_variance
        return mean + 0 * self.weight, self.post_variance.log().expand_as(mean)


class _LinearGaussianDecoder(nn.Module):
    """p(w | z) = N(A z + b, s2 I) with A having one non-zero per column (orthogonal columns)."""

    def __init__(self, rows, gains, offset, noise_variance):
        super().__init__()
        self.matrix = nn.Parameter(torch.zeros(27, len(rows)))
        with torch.no_grad():
            self.matrix[rows, torch.arange(len(rows))] = gains
        self.offset, self.noise_variance = offset, noise_variance

    def forward(self, z):
        mean = z @ self.matrix.T + self.offset
        return mean, torch.full_like(mean, math.log(self.noise_variance))


def test_bound_equals_exact_kl_when_the_encoder_is_the_exact_posterior():
    # conjugate toy: p(w) = N(b, A A^T + s2 I) in closed form; with r = p(z|w) the bound is tight,
    # so its expectation is -H(q) - E_q log p(w) exactly
    torch.manual_seed(0)
    rows, gains, s2 = torch.tensor([0, 13]), torch.tensor([0.5, 0.3]), 0.04
    offset = 0.1 * torch.randn(27)
    vae = KernelVAE((3, 3, 3), latent_dim=2)
    vae.encoder = _LinearGaussianEncoder(rows, gains, offset, s2)
    vae.decoder = _LinearGaussianDecoder(rows, gains, offset, s2)
    prior = DeepWeightPrior(vae)
    q = GaussianPosterior(offset.reshape(1, 1, 3, 3, 3) + 0.3 * torch.randn(10, 5, 3, 3, 3), -4.0)

    cov = vae.decoder.matrix.detach() @ vae.decoder.matrix.detach().T + s2 * torch.eye(27)
    precision = torch.linalg.inv(cov.double())
    loc = q.loc.detach().reshape(-1, 27).double() - offset.double()
    variance = q.variance.detach().reshape(-1, 27).double()
    expected_log_p = -0.5 * (27 * LOG_2PI + torch.logdet(cov.double()) + variance @ precision.diagonal()
                             + ((loc @ precision) * loc).sum(-1))
    exact_kl = float(-q.entropy().detach().sum().double() - expected_log_p.sum())

    with torch.no_grad():
        bounds = torch.stack([prior.kl(q) for _ in range(300)]).double()
    standard_error = float(bounds.std() / math.sqrt(len(bounds)))
    assert abs(float(bounds.mean()) - exact_kl) < 4 * standard_error + 1e-3 * abs(exact_kl)


def test_gradients_reach_the_posterior_and_the_encoder_but_not_the_decoder():
    prior = DeepWeightPrior(_random_vae())
    q = _posterior()
    prior.kl(q).backward()
    assert q.loc.grad is not None and q.loc.grad.abs().sum() > 0
    assert q.log_variance.grad is not None and q.log_variance.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in prior.vae.encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in prior.vae.decoder.parameters())


def test_the_posterior_gradient_passes_through_the_decoder():
    # the pathwise gradient w -> z -> p(w|z) is kept (the reference code's no_grad cut it)
    prior = DeepWeightPrior(_random_vae())
    q = _posterior()
    w = q.rsample()
    noise = torch.randn(12, 2)
    full = torch.autograd.grad(prior.kl_upper_bound(q, w, noise), q.loc)[0]
    flat = w.reshape(12, 27)
    mu_z, lv_z = prior.vae.encode(flat)
    z = (mu_z + (0.5 * lv_z).exp() * noise).detach()
    cut = torch.autograd.grad(-prior.vae.log_likelihood(flat, z).sum() - q.entropy().sum(), q.loc)[0]
    assert not torch.allclose(full, cut)


def test_a_frozen_encoder_gets_no_gradient():
    prior = DeepWeightPrior(_random_vae(), fine_tune_encoder=False)
    q = _posterior()
    prior.kl(q).backward()
    assert q.loc.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in prior.parameters())


def test_chunked_bound_equals_unchunked_bound_given_the_same_draws():
    vae = _random_vae()
    whole, chunked = DeepWeightPrior(vae), DeepWeightPrior(copy.deepcopy(vae), chunk_size=5)
    q = _posterior(n_out=4, n_in=6)
    w = q.rsample()
    noise = torch.randn(24, 2)
    a = whole.kl_upper_bound(q, w, noise)
    b = chunked.kl_upper_bound(q, w, noise)
    assert torch.allclose(a, b, rtol=1e-5)
    grads_a = torch.autograd.grad(a, [q.loc, q.log_variance, *whole.vae.encoder.parameters()], retain_graph=True)
    grads_b = torch.autograd.grad(b, [q.loc, q.log_variance, *chunked.vae.encoder.parameters()])
    assert all(torch.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(grads_a, grads_b, strict=True))


def test_a_layer_with_another_kernel_size_is_rejected_by_name():
    prior = DeepWeightPrior(_random_vae())
    with pytest.raises(PriorMismatchError, match="'down.conv'.*5x5x5"):
        prior.check_compatible(torch.Size([4, 4, 5, 5, 5]), "down.conv")
    with pytest.raises(PriorMismatchError, match="'fc'"):
        prior.check_compatible(torch.Size([4, 4]), "fc")


def test_samples_have_the_weight_shape_and_the_fitted_scale():
    vae = _random_vae()
    vae.set_reference(torch.zeros(27), 0.01 ** 2 * torch.eye(27))
    sample = DeepWeightPrior(vae).sample(torch.Size([8, 4, 3, 3, 3]))
    assert sample.shape == (8, 4, 3, 3, 3)
    assert 1e-3 < float(sample.std()) < 0.1


@pytest.fixture
def prior_file(tmp_path):
    bank = KernelBank({"g1": np.zeros((4, 3, 3, 3), np.float32)},
                      {"kernel_size": [3, 3, 3], "groups": {"g1": {"layers": ["c"], "kept": 4, "dropped": 0}}})
    save_prior_file(tmp_path / "prior.pt", {"g1": (_random_vae(latent_dim=6), [-1.0, 0.0])}, bank)
    return tmp_path / "prior.pt"


def test_the_registry_factory_builds_the_prior_of_a_group_and_its_config_rebuilds_it(prior_file):
    prior = create_prior(("dwp", {"path": str(prior_file), "group": "g1", "fine_tune_encoder": False}))
    assert isinstance(prior, DeepWeightPrior) and prior.unit == "kernel"
    vae = {"kernel_size": [3, 3, 3], "latent_dim": 6, "hidden": 8, "depth": 2, "min_variance": 1e-6}
    # the config needs no file: a saved model's state fills the VAE of the prior it rebuilds
    assert prior.config() == {"group": "g1", "vae": vae, "fine_tune_encoder": False, "chunk_size": None}
    again = create_prior(("dwp", prior.config()))
    again.load_state_dict(prior.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), prior.state_dict().values(), strict=True))
    assert again.config() == prior.config()


def test_the_factory_rejects_a_group_not_in_the_file(prior_file):
    with pytest.raises(ConfigError, match="no group 'enc_full'.*g1"):
        create_prior(("dwp", {"path": str(prior_file), "group": "enc_full"}))


def test_the_factory_rejects_a_file_that_is_not_a_prior(tmp_path):
    torch.save({"format": "something else"}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="x.pt.*not a DWP prior"):
        create_prior(("dwp", {"path": str(tmp_path / "x.pt"), "group": "g1"}))
    with pytest.raises(ConfigError, match="path"):
        create_prior("dwp")


def test_batched_group_bound_has_the_same_expectation_as_layer_by_layer():
    prior = DeepWeightPrior(_random_vae())
    layers = [_posterior(n_out=2, n_in=3, seed=s) for s in (1, 2, 3)]
    with torch.no_grad():
        batched = torch.stack([prior.kl_layers(layers) for _ in range(300)])
        separate = torch.stack([sum(prior.kl(q) for q in layers) for _ in range(300)])
    tolerance = 4 * (batched.std() + separate.std()) / math.sqrt(300)
    assert abs(batched.mean() - separate.mean()) < tolerance


def test_batched_group_bound_sends_gradients_to_every_layer_and_the_encoder():
    prior = DeepWeightPrior(_random_vae())
    layers = [_posterior(n_out=2, n_in=2, seed=s) for s in (1, 2)]
    prior.kl_layers(layers).backward()
    assert all(q.loc.grad is not None and q.log_variance.grad is not None for q in layers)
    assert all(p.grad is not None for p in prior.vae.encoder.parameters())
    assert all(p.grad is None for p in prior.vae.decoder.parameters())


# -- the faster evaluation is the same estimator (issue 13)
def _whitened_random_vae():
    vae = _random_vae()
    generator = torch.Generator().manual_seed(5)
    factor = 0.1 * torch.randn(27, 27, generator=generator)
    vae.set_reference(0.01 * torch.randn(27, generator=generator), factor @ factor.T + 1e-3 * torch.eye(27))
    return vae


def _pre_speedup_negative_elbo(vae, w, noise):
    """The kernel VAE's per-kernel bound as written before the speed-up: whitened twice, no fused ops."""
    whiten = lambda v: (v - vae.data_mean) @ vae.data_whitening.T  # noqa: E731
    mu_z, lv_z = vae.encoder(whiten(w))
    z = mu_z + (0.5 * lv_z).exp() * noise
    mean, log_variance = vae.decoder(z)
    log_likelihood = gaussian_log_prob(whiten(w), mean, log_variance).sum(-1) - vae.data_log_det
    return 0.5 * (mu_z ** 2 + lv_z.exp() - 1.0 - lv_z).sum(-1) - log_likelihood


def test_the_vae_pass_equals_the_pre_speedup_formula_given_the_same_draws():
    vae = _whitened_random_vae()
    w = (0.05 * torch.randn(40, 27)).requires_grad_()
    noise = torch.randn(40, 2)
    new, old = vae.negative_elbo(w, noise), _pre_speedup_negative_elbo(vae, w, noise)
    assert torch.allclose(new, old, rtol=1e-5, atol=1e-4)
    params = [w, *vae.encoder.parameters()]
    for a, b in zip(torch.autograd.grad(new.sum(), params), torch.autograd.grad(old.sum(), params), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_the_mean_kl_over_many_steps_is_unchanged_by_scoring_the_forwards_weight_sample():
    # after: each step's KL scores the weight sample its forward drew; before: the KL drew its own
    import bayesprior as bp

    torch.manual_seed(3)
    prior = DeepWeightPrior(_whitened_random_vae())
    net = nn.Sequential(nn.Conv3d(2, 3, 3, padding=1), nn.Conv3d(3, 2, 3, padding=1))
    bm = bp.bayesianize(net, {nn.Conv3d: prior}, mode="sample", log_variance_init=-6.0)
    posteriors = [layer.posterior for _, layer in bm.bayesian_layers()]
    x = torch.randn(1, 2, 3, 3, 3)
    after, before = [], []
    for _ in range(200):
        bm(x)
        assert all(layer.__dict__.get("_weight_sample") is not None for _, layer in bm.bayesian_layers())
        after.append(float(bm.kl().detach()))
        with torch.no_grad():
            kernels = torch.cat([q.rsample().reshape(-1, 27) for q in posteriors])
            noise = torch.randn(len(kernels), prior.vae.latent_dim)
            before.append(float(-sum(q.entropy().sum() for q in posteriors)
                                + _pre_speedup_negative_elbo(prior.vae, kernels, noise).sum()))
    after, before = torch.tensor(after, dtype=torch.float64), torch.tensor(before, dtype=torch.float64)
    standard_error = math.sqrt(float(after.var() + before.var()) / 200)
    assert abs(float(after.mean() - before.mean())) < 4 * standard_error
