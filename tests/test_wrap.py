"""bayesianize() and the BayesianModel handle."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bayesprior as bp
from bayesprior import Prior, hookimpl
from bayesprior.checkpoints import deterministic_state, load_model, read_model_file
from bayesprior.errors import CheckpointError, ConfigError, PriorMismatchError
from bayesprior.layers import BayesianLayer
from bayesprior.plugins import register_plugin, unregister_plugin
from bayesprior_gaussian import GaussianPrior


class Net(nn.Module):
    """conv3 -> bn -> conv1 (stride) -> transposed conv -> linear head: every kind of layer a rule may pick."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4),
                                     nn.ReLU(), nn.Conv2d(4, 4, 1, stride=2))
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.up(self.encoder(x)).movedim(1, -1)).movedim(-1, 1)


def _x():
    return torch.randn(2, 1, 6, 6)


class ScaledLaplace(Prior):
    """A third prior type (Monte-Carlo KL through log_prob) with a learnable parameter in its state."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))

    def log_prob(self, w):
        scale = self.log_scale.exp()
        return (-w.abs() / scale - torch.log(2 * scale)).sum()

    def config(self):
        return {"scale": 1.0}


class _TestPriors:
    @hookimpl
    def register_priors(self, register):
        register("test-scaled-laplace", ScaledLaplace, description="test prior")


@pytest.fixture
def scaled_laplace_plugin():
    register_plugin(_TestPriors(), "test-wrap-priors")
    yield "test-scaled-laplace"
    unregister_plugin("test-wrap-priors")


# ------------------------------------------------------------------------------------- selection
def test_rules_select_by_name_type_kernel_size_and_group_and_first_rule_wins():
    net = Net()
    bm = bp.bayesianize(net, [
        (bp.by_group("decoder"), ("gaussian", {"scale": 0.5})),
        (bp.by_kernel_size(3), "gaussian"),
        ("encoder.[03]", "loguniform"),
        (nn.Linear, "gaussian"),
    ], groups={"decoder": ["up"]})
    assert bm.net is net  # wrapped in place
    assert set(bm.assignment) == {"up", "encoder.0", "encoder.3", "head"}
    assert isinstance(bm.prior_of("up"), GaussianPrior) and bm.prior_of("up").scale.item() == 0.5
    assert bm.prior_of("encoder.0").registry_name == "gaussian"
    assert bm.prior_of("encoder.3").registry_name == "loguniform"  # kernel 1 falls through to the glob
    assert isinstance(net.encoder[1], nn.BatchNorm2d)  # unselected: deterministic
    assert [name for name, _ in bm.bayesian_layers()] == ["encoder.0", "encoder.3", "up", "head"]


def test_one_prior_object_per_rule_is_shared_by_its_layers():
    bm = bp.bayesianize(Net(), {(nn.Conv2d, nn.ConvTranspose2d): "gaussian", nn.Linear: "gaussian"})
    assert len(bm.priors) == 2
    assert bm.prior_of("encoder.0") is bm.prior_of("up")
    assert bm.prior_of("head") is not bm.prior_of("up")


def test_wrapped_model_starts_at_the_original_output():
    net = Net().eval()
    x = _x()
    expected = net(x)
    bm = bp.bayesianize(net, {"*": "gaussian"}, strict=False)
    with bm.sampling("mean"):
        assert torch.equal(bm(x), expected)


def test_rule_that_selects_nothing_is_an_error_when_strict():
    with pytest.raises(ConfigError, match="decoder"):
        bp.bayesianize(Net(), {"decoder.*": "gaussian"})
    bm = bp.bayesianize(Net(), {"decoder.*": "gaussian", nn.Linear: "gaussian"}, strict=False)
    assert list(bm.assignment) == ["head"]


def test_rule_selecting_an_unwrappable_layer_is_an_error_when_strict():
    with pytest.raises(ConfigError, match="encoder.1"):
        bp.bayesianize(Net(), {nn.BatchNorm2d: "gaussian"})


def test_unknown_group_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="'middle'"):
        bp.bayesianize(Net(), {bp.by_group("middle"): "gaussian"}, groups={"decoder": ["up"]})


def test_group_naming_a_missing_module_is_an_error():
    with pytest.raises(ConfigError, match="nowhere"):
        bp.bayesianize(Net(), {bp.by_group("g"): "gaussian"}, groups={"g": ["nowhere"]})


def test_kernel_prior_on_a_linear_layer_is_a_mismatch_and_leaves_the_model_untouched():
    class KernelPrior(Prior):
        unit = "kernel"

        def kl_upper_bound(self, posterior, w):
            return w.sum()

    net = Net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(PriorMismatchError, match="head"):
        bp.bayesianize(net, {"*": KernelPrior()}, strict=False)
    assert not any(isinstance(m, BayesianLayer) for m in net.modules())
    assert net.state_dict().keys() == before.keys()


def test_unknown_prior_name_is_reported_with_the_known_ones():
    with pytest.raises(bp.PluginError, match="gaussian"):
        bp.bayesianize(Net(), {nn.Linear: "no-such-prior"})


def test_wrapping_twice_is_refused():
    bm = bp.bayesianize(Net(), {nn.Linear: "gaussian"})
    with pytest.raises(ConfigError, match="already"):
        bp.bayesianize(bm, {nn.Linear: "gaussian"})


def test_init_from_prior_starts_means_at_prior_samples():
    bm = bp.bayesianize(Net(), {nn.Linear: ("gaussian", {"loc": 5.0, "scale": 0.01})}, init_from_prior=True)
    assert abs(bm.net.head.posterior.loc.mean().item() - 5.0) < 0.05


def test_init_from_a_prior_that_cannot_sample_fails_before_touching_the_model():
    net = Net()
    with pytest.raises(NotImplementedError):
        bp.bayesianize(net, {nn.Conv2d: "gaussian", nn.Linear: "loguniform"}, init_from_prior=True)
    assert not any(isinstance(m, BayesianLayer) for m in net.modules())


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(1e-5, 1e2), ratio=st.floats(1e-3, 2.0))
def test_posterior_std_ratio_gives_the_same_signal_to_noise_ratio_at_any_weight_scale(scale, ratio):
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for m in (net.encoder[0], net.head):
            m.weight.mul_(scale)
    bm = bp.bayesianize(net, {nn.Conv2d: "gaussian", nn.Linear: "gaussian"}, posterior_std_ratio=ratio)
    for layer in (bm.net.encoder[0], bm.net.encoder[3], bm.net.head):
        std = layer.posterior.log_variance.detach().mul(0.5).exp()
        rms = layer.posterior.loc.detach().pow(2).mean().sqrt()
        assert torch.allclose(std, ratio * rms, rtol=1e-4)


def test_posterior_std_ratio_is_relative_to_the_prior_samples_the_means_start_at():
    bm = bp.bayesianize(Net(), {nn.Linear: ("gaussian", {"loc": 0.0, "scale": 0.01})}, init_from_prior=True,
                        posterior_std_ratio=0.1)
    std = bm.net.head.posterior.log_variance.detach().mul(0.5).exp()
    assert torch.allclose(std, 0.1 * bm.net.head.posterior.loc.detach().pow(2).mean().sqrt(), rtol=1e-4)
    assert 2e-4 < std[0, 0].item() < 2e-3  # about 0.1 x 0.01, not the absolute default's 6.7e-3


@pytest.mark.parametrize("ratio", [0.0, -0.1, float("nan"), float("inf")])
def test_a_bad_posterior_std_ratio_is_refused(ratio):
    with pytest.raises(ConfigError, match="posterior_std_ratio must be a finite number > 0"):
        bp.bayesianize(Net(), {nn.Linear: "gaussian"}, posterior_std_ratio=ratio)


def test_posterior_std_ratio_on_all_zero_weights_is_refused_before_touching_the_model():
    net = Net()
    with torch.no_grad():
        net.head.weight.zero_()
    with pytest.raises(ConfigError, match="layer 'head'.*non-zero scale.*log_variance_init"):
        bp.bayesianize(net, {nn.Conv2d: "gaussian", nn.Linear: "gaussian"}, posterior_std_ratio=0.1)
    assert not any(isinstance(m, BayesianLayer) for m in net.modules())


# ------------------------------------------------------------------------------------ the table
def test_layer_table_lists_every_layer_with_its_prior_including_deterministic_ones():
    bm = bp.bayesianize(Net(), {nn.Conv2d: ("gaussian", {"scale": 0.1})}, groups={"dec": ["up", "head"]})
    rows = {r["layer"]: r for r in bm.layer_table()}
    assert set(rows) == {"encoder.0", "encoder.1", "encoder.3", "up", "head"}
    assert rows["encoder.0"]["prior"] == "gaussian(loc=0.0, scale=0.1)"
    assert rows["encoder.0"]["shape"] == (4, 1, 3, 3) and rows["encoder.0"]["type"] == "Conv2d"
    assert rows["encoder.1"]["prior"] == "deterministic" and rows["encoder.1"]["type"] == "BatchNorm2d"
    assert rows["up"]["prior"] == "deterministic" and rows["up"]["group"] == "dec"
    text = bm.summary()
    assert "encoder.3" in text and "2 Bayesian layer(s), 3 deterministic" in text


# ------------------------------------------------------------------------------------ modes
def test_set_mode_and_sampling_context_are_independent_of_train_and_eval():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False, log_variance_init=0.0)
    bm.eval()
    assert bm.mode == "lrt"
    x = _x()
    assert not torch.equal(bm(x), bm(x))
    with bm.sampling("mean"):
        assert bm.mode == "mean"
        bm.train()
        assert bm.mode == "mean"
    assert bm.mode == "lrt"
    bm.set_mode("sample")
    assert all(layer.mode == "sample" for _, layer in bm.bayesian_layers())
    with pytest.raises(ConfigError):
        bm.set_mode("deterministic")


def test_sampling_context_restores_modes_after_an_error():
    bm = bp.bayesianize(Net(), {nn.Linear: "gaussian"})
    with pytest.raises(RuntimeError):
        with bm.sampling("mean"):
            raise RuntimeError("boom")
    assert bm.mode == "lrt"


# ------------------------------------------------------------------------------------ objective
def test_kl_is_the_sum_of_the_layer_kls():
    bm = bp.bayesianize(Net(), {nn.Conv2d: ("gaussian", {"scale": 0.3}), nn.Linear: "gaussian"},
                        log_variance_init=-4.0)
    expected = sum(torch.distributions.kl_divergence(
        layer.posterior.distribution(),
        torch.distributions.Normal(0.0, 0.3 if name.startswith("encoder") else 1.0)).sum()
        for name, layer in bm.bayesian_layers())
    assert torch.allclose(bm.kl(), expected, rtol=1e-5)


def test_elbo_loss_scales_the_mean_nll_by_n_train_and_weights_the_kl():
    bm = bp.bayesianize(Net(), {nn.Linear: "gaussian"})
    nll = torch.tensor(0.25)
    elbo = bm.elbo_loss(nll, n_train=40, kl_weight=0.5)
    assert elbo.data.item() == 10.0
    assert torch.allclose(elbo.kl, bm.kl())
    assert torch.allclose(elbo.loss, elbo.data + 0.5 * elbo.kl)
    loss, data, kl = bm.elbo_loss(nll, n_train=1)  # a plain named tuple
    assert torch.allclose(loss, data + kl)
    with pytest.raises(ConfigError, match="n_train"):
        bm.elbo_loss(nll, n_train=0)
    with pytest.raises(ConfigError, match="kl_weight"):
        bm.elbo_loss(nll, n_train=1, kl_weight=-1)


@pytest.mark.parametrize("prior", ["gaussian", "loguniform", "third"])
@pytest.mark.parametrize("mode", ["lrt", "sample"])
def test_kl_and_data_terms_give_gradients_to_every_posterior_parameter(prior, mode, scaled_laplace_plugin):
    spec = scaled_laplace_plugin if prior == "third" else prior
    bm = bp.bayesianize(Net(), {"*": spec}, strict=False, mode=mode)
    elbo = bm.elbo_loss(bm(_x()).square().mean(), n_train=10)
    posterior_params = {n: p for n, p in bm.named_parameters() if ".posterior." in n}
    assert len(posterior_params) == 8
    for term in (elbo.kl, elbo.data):
        grads = torch.autograd.grad(term, list(posterior_params.values()), allow_unused=True)
        for (name, _), g in zip(posterior_params.items(), grads, strict=True):
            assert g is not None and torch.isfinite(g).all(), name
            if term is elbo.data or not name.endswith("loc") or prior != "loguniform":
                assert g.abs().sum() > 0, name


def test_prior_parameters_are_exposed_to_the_optimiser(scaled_laplace_plugin):
    bm = bp.bayesianize(Net(), {nn.Linear: scaled_laplace_plugin})
    names = [n for n, _ in bm.named_parameters()]
    assert "priors.prior0.log_scale" in names
    bm.kl().backward()
    assert bm.priors["prior0"].log_scale.grad is not None


def test_kl_of_a_model_without_bayesian_layers_is_zero():
    bm = bp.bayesianize(Net(), {"nothing": "gaussian"}, strict=False)
    assert bm.kl().item() == 0.0


# ------------------------------------------------------------------------------------ prediction
def test_predict_gives_mean_and_std_of_the_shape_of_the_output():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False, log_variance_init=-2.0).eval()
    x = _x()
    mean, std = bm.predict(x, samples=50)
    assert mean.shape == std.shape == bm(x).shape
    assert (std > 0).all()
    with bm.sampling("sample"):
        outs = torch.stack([bm(x) for _ in range(400)])
    assert torch.allclose(mean, outs.mean(0), atol=4 * outs.std(0).max().item() / math.sqrt(50))
    assert bm.mode == "lrt" and torch.is_grad_enabled()  # predict restores both


def test_predict_welford_statistics_equal_the_two_pass_ones():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False, log_variance_init=-1.0).eval()
    x = _x()
    torch.manual_seed(5)
    mean, std = bm.predict(x, samples=7)
    torch.manual_seed(5)
    with bm.sampling("sample"), torch.no_grad():
        outs = torch.stack([bm(x) for _ in range(7)])
    assert torch.allclose(mean, outs.mean(0), atol=1e-5)
    assert torch.allclose(std, outs.std(0), atol=1e-5)


def test_predict_entropy_is_computed_over_classes():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False, log_variance_init=-2.0).eval()
    x = _x()
    mean, entropy = bm.predict(x, samples=5, transform=lambda y: y.softmax(1), uncertainty="entropy")
    assert mean.shape == (2, 3, 6, 6) and entropy.shape == (2, 6, 6)
    assert torch.allclose(mean.sum(1), torch.ones(2, 6, 6), atol=1e-5)
    assert (entropy >= 0).all() and (entropy <= math.log(3) + 1e-5).all()


def test_predict_with_zero_samples_uses_the_mean_and_no_uncertainty():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False).eval()
    x = _x()
    mean, std = bm.predict(x, samples=0)
    with bm.sampling("mean"):
        assert torch.equal(mean, bm(x))
    assert (std == 0).all()
    with pytest.raises(ConfigError):
        bm.predict(x, uncertainty="variance")


# ------------------------------------------------------------------------------------ export, copies, files
def test_mean_model_is_a_plain_copy_equal_to_the_mean_forward():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False, log_variance_init=0.0).eval()
    with torch.no_grad():
        bm.net.head.posterior.loc.add_(1.0)
    plain = bm.mean_model()
    assert not any(isinstance(m, BayesianLayer) for m in plain.modules())
    assert type(plain.encoder[0]) is nn.Conv2d and plain.encoder[0].padding_mode == "reflect"
    assert set(plain.state_dict()) == set(Net().state_dict())
    x = _x()
    with bm.sampling("mean"):
        assert torch.equal(plain(x), bm(x))
    assert bm.mode == "lrt"  # the handle is unchanged


def test_state_dict_round_trips_between_two_wrapped_models():
    a = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False)
    with torch.no_grad():
        for _, layer in a.bayesian_layers():
            layer.posterior.log_variance.uniform_(-6, -2)
    b = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False)
    b.load_state_dict(a.state_dict())
    x = _x()
    a.eval(), b.eval()
    with a.sampling("mean"), b.sampling("mean"):
        assert torch.equal(a(x), b(x))
    assert torch.equal(a.kl(), b.kl())


def test_deepcopy_is_a_working_independent_model():
    a = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False).eval()
    b = copy.deepcopy(a)
    x = _x()
    with a.sampling("mean"), b.sampling("mean"):
        assert torch.equal(a(x), b(x))
    with torch.no_grad():
        b.net.head.posterior.loc.zero_()
    b.set_mode("sample")
    assert a.mode == "lrt"
    assert a.net.head.posterior.loc.abs().sum() > 0
    assert b.priors["prior0"] is not a.priors["prior0"]
    assert torch.isfinite(b.kl())


def test_save_and_load_round_trip_three_prior_types_through_the_registry(tmp_path, scaled_laplace_plugin):
    a = bp.bayesianize(Net(), [(bp.by_kernel_size(3), ("gaussian", {"scale": 0.2})),
                               ("encoder.[03]", "loguniform"), (nn.Linear, scaled_laplace_plugin)],
                       mode="sample", log_variance_init=-5.0)
    with torch.no_grad():
        a.priors["prior2"].log_scale.fill_(-1.5)  # trained prior state must survive too
        a.net.head.posterior.log_variance.fill_(-3.0)
    a.net.head.mode = "mean"
    bp.save_model(a, tmp_path / "m.pt", extra={"epoch": 3})
    b = bp.load_bayesian(tmp_path / "m.pt", model=Net())
    assert b.assignment == a.assignment
    assert [type(p) for p in b.priors.values()] == [type(p) for p in a.priors.values()]
    assert b.priors["prior0"].scale.item() == pytest.approx(0.2)
    assert b.priors["prior2"].log_scale.item() == -1.5
    assert {n: layer.mode for n, layer in b.bayesian_layers()} == {"encoder.0": "sample", "encoder.3": "sample",
                                                                  "head": "mean"}
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    assert read_model_file(tmp_path / "m.pt")["extra"] == {"epoch": 3}
    assert isinstance(load_model(tmp_path / "m.pt", model=Net()), bp.BayesianModel)


def test_a_prior_instance_not_from_the_registry_cannot_be_saved(tmp_path):
    bm = bp.bayesianize(Net(), {nn.Linear: GaussianPrior()})
    with pytest.raises(ConfigError, match="registry"):
        bp.save_model(bm, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_loading_into_a_different_network_is_a_checkpoint_error(tmp_path):
    bp.save_model(bp.bayesianize(Net(), {nn.Linear: "gaussian"}), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="m.pt"):
        bp.load_bayesian(tmp_path / "m.pt", model=nn.Sequential(nn.Linear(2, 3)))


def test_loading_without_a_network_or_architecture_is_a_checkpoint_error(tmp_path):
    bp.save_model(bp.bayesianize(Net(), {nn.Linear: "gaussian"}), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="architecture"):
        bp.load_bayesian(tmp_path / "m.pt")


def test_deterministic_state_maps_a_wrapped_model_back_to_plain_keys_even_with_a_module_named_module(tmp_path):
    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = Net()  # the DataParallel-style name must not confuse the key mapping

        def forward(self, x):
            return self.module(x)

    bm = bp.bayesianize(Outer(), {"*": "gaussian"}, strict=False).eval()
    bp.save_model(bm, tmp_path / "m.pt")
    plain = Outer().eval()
    plain.load_state_dict(deterministic_state(read_model_file(tmp_path / "m.pt")))
    x = _x()
    with bm.sampling("mean"):
        assert torch.equal(plain(x), bm(x))


def test_kl_asks_each_shared_prior_once_for_all_its_layers():
    from torch import nn

    import bayesprior as bp

    calls = []

    class CountingGaussian(bp.create_prior("gaussian").__class__):
        def kl_layers(self, posteriors, weight_samples=None):
            calls.append(len(posteriors))
            return super().kl_layers(posteriors, weight_samples)

    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Conv3d(2, 2, 3), nn.Conv3d(2, 2, 1))
    bm = bp.bayesianize(net, {bp.by_kernel_size(3): CountingGaussian(), bp.by_kernel_size(1): "gaussian"})
    total = bm.kl()
    assert calls == [2]
    expected = sum(bm.prior_of(n).kl(layer.posterior) for n, layer in bm.bayesian_layers())
    assert torch.allclose(total, expected)


def test_batched_prediction_has_the_statistics_of_one_forward_per_sample():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False, log_variance_init=-2.0).eval()
    x = _x()
    mean, std = bm.predict(x, samples=60, samples_per_forward=20)
    with bm.sampling("sample"), torch.no_grad():
        outs = torch.stack([bm(x) for _ in range(400)])
    assert torch.allclose(mean, outs.mean(0), atol=4 * outs.std(0).max().item() / math.sqrt(60))
    assert float(((std - outs.std(0)).abs() / outs.std(0)).median()) < 0.3
    assert all(layer.stacked_samples == 1 for _, layer in bm.bayesian_layers())  # restored


def test_batched_prediction_runs_one_forward_per_stack_of_samples():
    bm = bp.bayesianize(Net(), {"*": "gaussian"}, strict=False).eval()
    batches = []
    bm.net.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    bm.predict(_x(), samples=10, samples_per_forward=4)
    assert batches == [8, 8, 4]
    with pytest.raises(ConfigError, match="samples_per_forward"):
        bm.predict(_x(), samples=2, samples_per_forward=0)
