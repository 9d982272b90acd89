"""Priors centred at the source network: L2-SP (prior and penalty), the SWAG prior, and how bayesianize binds them."""
import dataclasses
import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bayesprior as bp
from bayesprior.checkpoints import load_model, save_model
from bayesprior.errors import ConfigError
from bayesprior.plugins import create_prior
from bayesprior.posteriors import GaussianPosterior
from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_penalty, training_method
from bayesprior_l2sp import L2SPPenalty, LayerSourceGaussian, SourceGaussianPrior
from bayesprior_swag import LayerSwagPrior


def _posterior(shape=(3, 2, 3, 3, 3), seed=0, log_variance=-3.0):
    g = torch.Generator().manual_seed(seed)
    q = GaussianPosterior(torch.randn(shape, generator=g) * 0.3, log_variance)
    with torch.no_grad():
        q.log_variance.add_(torch.rand(shape, generator=g) - 0.5)
    return q


def _monte_carlo_kl(q, prior, n=4000):
    samples = q.rsample_n(n).detach()
    with torch.no_grad():
        log_q = torch.stack([q.log_prob(w).sum() for w in samples])
        log_p = torch.stack([prior.log_prob(w) for w in samples])
    return float((log_q - log_p).mean()), float((log_q - log_p).std() / math.sqrt(n))


def _source_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 3, padding=1))


# --------------------------------------------------------------------------------------------- l2sp_bayes
def test_l2sp_bayes_closed_form_kl_matches_monte_carlo():
    q = _posterior()
    centre = torch.randn(q.shape) * 0.3
    prior = LayerSourceGaussian(centre, 0.7, {})
    closed = float(prior.kl(q).detach())
    mc, se = _monte_carlo_kl(q, prior)
    assert abs(closed - mc) < 4 * se + 1e-3 * abs(closed)


@settings(deadline=None, max_examples=25)
@given(st.floats(0.05, 5.0), st.integers(0, 10_000))
def test_empirical_bayes_kl_is_the_minimum_over_the_prior_scale(scale, seed):
    q = _posterior(seed=seed)
    centre = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1)) * 0.3
    empirical = float(LayerSourceGaussian(centre, None, {}).kl(q))
    fixed = float(LayerSourceGaussian(centre, scale, {}).kl(q))
    assert empirical <= fixed + 1e-4 * abs(fixed) + 1e-6
    # and it is attained at s^2 = E_q ||w - w0||^2 / D
    best = math.sqrt(float(((q.loc - centre) ** 2).sum() + q.variance.sum()) / q.loc.numel())
    assert empirical == pytest.approx(float(LayerSourceGaussian(centre, best, {}).kl(q)), rel=1e-5, abs=1e-5)


def test_bayesianize_binds_each_layer_to_its_own_source_weight():
    net = _source_net()
    source = {name: p.detach().clone() for name, p in net.named_parameters()}
    bm = bp.bayesianize(net, {"*": ("l2sp_bayes", {"relative_scale": 0.5})}, log_variance_init=-12)
    assert len(bm.priors) == 2  # one per layer, each centred at that layer's weight
    for layer in ("0", "2"):
        prior = bm.prior_of(layer)
        assert torch.equal(prior.centre, source[f"{layer}.weight"])
        rms = float(source[f"{layer}.weight"].double().pow(2).mean().sqrt())
        assert float(prior.scale) == pytest.approx(0.5 * rms, rel=1e-6)
    # at the start the posterior mean is the centre: only the variance terms remain, and moving away costs more
    start = float(bm.kl())
    with torch.no_grad():
        bm.net[0].posterior.loc.add_(0.1)
    assert float(bm.kl()) > start


def test_l2sp_bayes_takes_exactly_one_way_of_setting_its_scale():
    assert SourceGaussianPrior().empirical_bayes
    assert not SourceGaussianPrior(scale=0.1).empirical_bayes
    with pytest.raises(ConfigError, match="one of scale, relative_scale"):
        SourceGaussianPrior(scale=0.1, relative_scale=0.2)
    with pytest.raises(ConfigError, match="scale must be a positive"):
        SourceGaussianPrior(scale=-1.0)
    with pytest.raises(ConfigError, match="RMS is 0"):
        bp.bayesianize(nn.Sequential(nn.Conv3d(1, 1, 3, bias=False).requires_grad_(False).apply(
            lambda m: nn.init.zeros_(m.weight) if isinstance(m, nn.Conv3d) else None)),
            {"*": ("l2sp_bayes", {"relative_scale": 0.1})})


@pytest.mark.parametrize("options", [{}, {"scale": 0.05}, {"relative_scale": 0.2}])
def test_a_saved_l2sp_bayes_model_predicts_without_its_source(tmp_path, options):
    net = _source_net(1)
    bm = bp.bayesianize(net, {"*": ("l2sp_bayes", options)}, log_variance_init=-9)
    with torch.no_grad():
        bm.net[0].posterior.loc.mul_(1.5)  # the posterior has moved away from the source
    x = torch.randn(1, 1, 6, 6, 6)
    kl, expected = float(bm.kl()), bm.mean_model()(x)
    save_model(bm, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", _source_net(7))  # another network's weights: the file's state wins
    assert float(loaded.kl()) == pytest.approx(kl, rel=1e-6)
    assert torch.allclose(loaded.mean_model()(x), expected)
    assert torch.equal(loaded.prior_of("2").centre, bm.prior_of("2").centre)


# ---------------------------------------------------------------------------------------------- L2-SP method
def test_l2sp_penalty_is_zero_at_the_source_and_half_the_squared_distance_elsewhere():
    net = _source_net()
    penalty = L2SPPenalty(net)
    assert float(penalty(net)) == 0.0
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)
    n = sum(p.numel() for p in net.parameters())
    assert float(penalty(net)) == pytest.approx(0.5 * n * 0.25, rel=1e-6)


def test_l2sp_is_a_deterministic_method_that_needs_a_source_and_reads_penalty_weight(tmp_path):
    method = training_method("l2sp")
    assert not method.bayesian and method.needs_source and method.penalty
    assert training_method("l2sp_bayes").needs_source and training_method("swag").needs_source
    assert training_method("dwp_anchored").needs_source and not training_method("dwp").needs_source
    net = _source_net()
    assert build_penalty(TrainConfig(method="l2sp"), net).weight == 1.0  # the plugin's default alpha
    assert build_penalty(TrainConfig(method="l2sp", penalty_weight=2.0), net).weight == 2.0
    with pytest.raises(ConfigError, match="penalty_weight has no effect"):
        build_penalty(TrainConfig(method="pr", penalty_weight=1.0), net)


def test_a_run_records_the_penalty_weight_it_trained_with_and_another_default_does_not_resume_it(
        tiny_architecture, tmp_path, monkeypatch):
    from bayesprior.plugins import build_architecture, method_registry
    from bayesprior.training.methods import with_penalty_weight
    from bayesprior.training.trainer import train

    from training_fixtures import make_cases

    assert with_penalty_weight(TrainConfig(method="l2sp")).penalty_weight == 1.0  # written out
    assert with_penalty_weight(TrainConfig(method="pr")).penalty_weight is None  # no penalty, nothing to write
    source = tmp_path / "source.pt"
    save_model(build_architecture(tiny_architecture, in_channels=1, n_classes=2), source)
    cases = make_cases(2)
    config = TrainConfig(method="l2sp", source=str(source), architecture=tiny_architecture,
                         architecture_config={"in_channels": 1, "n_classes": 2}, max_epochs=1, progress=False)
    train(config, cases, run_dir=tmp_path / "run")
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]["penalty_weight"]
    assert recorded == 1.0
    # as if an older version had trained it under another default: resuming it is refused, not done at alpha 1
    entry = method_registry().get("l2sp")
    monkeypatch.setitem(entry.extras, "default_weight", 0.01)
    with pytest.raises(ConfigError, match="different settings.*penalty_weight"):
        train(dataclasses.replace(config, max_epochs=2), cases, run_dir=tmp_path / "run")
    # a run of an older version recorded no weight: no setting can resume it, and the message says so
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["train_config"]["penalty_weight"] = None
    torch.save(state, checkpoint)
    with pytest.raises(ConfigError, match="trained at the default penalty weight of an earlier bayesprior .*"
                                          "cannot be resumed at 0.01: use another run folder"):
        train(dataclasses.replace(config, max_epochs=2, penalty_weight=0.01), cases, run_dir=tmp_path / "run")


# ---------------------------------------------------------------------------------------------------- swag
def _swag_prior(shape=(2, 2, 3, 3, 3), rank=4, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g) * 0.3
    variance = torch.rand(shape, generator=g) * 0.2 + 0.01
    deviations = torch.randn((rank, *shape), generator=g) * 0.3
    return LayerSwagPrior(mean, variance, deviations, scale, 1e-3, {}), (mean, variance, deviations)


def _dense_covariance(prior: LayerSwagPrior) -> torch.Tensor:
    u = prior.factor.double().T
    return torch.diag(prior.diagonal.double()) + u @ u.T


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_swag_covariance_is_maddox_et_als_from_the_raw_moments(scale):
    # lambda (1/2 diag(sigma^2 + floor) + 1/2 D^T D / (K - 1)), floor = relative_floor x the layer's mean variance:
    # built here from the moments themselves, not from the prior's own buffers
    prior, (mean, variance, deviations) = _swag_prior(rank=4, scale=scale)
    v, d = variance.double().reshape(-1), deviations.double().reshape(4, -1)
    floor = 1e-3 * v.mean()
    expected = scale * (0.5 * torch.diag(v + floor) + 0.5 * d.T @ d / (4 - 1))
    assert torch.allclose(_dense_covariance(prior), expected, rtol=1e-5, atol=1e-8)
    assert torch.equal(prior.mean, mean)


def test_swag_kl_equals_the_dense_gaussian_kl_and_monte_carlo():
    prior, (mean, _, _) = _swag_prior()
    q = _posterior(shape=mean.shape, seed=3, log_variance=-2.0)
    closed = float(prior.kl(q).detach())
    dense = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(q.loc.double().reshape(-1), torch.diag(q.variance.double().reshape(-1))),
        torch.distributions.MultivariateNormal(mean.double().reshape(-1), _dense_covariance(prior)))
    assert closed == pytest.approx(float(dense), rel=1e-5)
    mc, se = _monte_carlo_kl(q, prior, n=600)
    assert abs(closed - mc) < 4 * se + 1e-3 * abs(closed)


def test_swag_scale_multiplies_the_whole_covariance():
    # both the diagonal and the low-rank part grow as lambda (not the low-rank part as lambda^2)
    one, _ = _swag_prior(scale=1.0)
    ten, _ = _swag_prior(scale=10.0)
    assert torch.allclose(_dense_covariance(ten), 10 * _dense_covariance(one), rtol=1e-5, atol=1e-6)


def test_swag_log_prob_is_the_dense_gaussian_density():
    prior, (mean, _, _) = _swag_prior(seed=5)
    w = mean + 0.1 * torch.randn(mean.shape)
    dense = torch.distributions.MultivariateNormal(mean.double().reshape(-1), _dense_covariance(prior))
    assert float(prior.log_prob(w)) == pytest.approx(float(dense.log_prob(w.double().reshape(-1))), rel=1e-5)


def test_swag_prior_refuses_a_file_of_another_network(tmp_path):
    from bayesprior.training.swag import SwagMoments, write_swag_file

    net = _source_net()
    moments = SwagMoments(net, 2)
    for _ in range(3):
        moments.add(net)
    save_model(net, tmp_path / "model.pt")
    write_swag_file(moments, tmp_path / "swag.pt", lr=1e-3, source_model=tmp_path / "model.pt", architecture=None,
                    preprocess=None)
    other = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 3, 3, padding=1))
    with pytest.raises(ConfigError, match="holds .* for it"):
        bp.bayesianize(other, {"*": ("swag", {"path": str(tmp_path / "swag.pt")})})
    renamed = nn.Sequential(nn.Identity(), nn.Conv3d(1, 4, 3, padding=1))
    with pytest.raises(ConfigError, match="has no weight '0.weight'|has no weight '1.weight'"):
        bp.bayesianize(renamed, {"*": ("swag", {"path": str(tmp_path / "swag.pt")})})


def test_swag_prior_needs_a_file_or_a_rank():
    with pytest.raises(ConfigError, match="swag prior needs its SWAG file: path="):
        create_prior("swag")
    with pytest.raises(ConfigError, match="scale must be a positive"):
        create_prior(("swag", {"rank": 3, "scale": 0.0}))
