
import pytest
import torch

from bayesprior import hookimpl
from bayesprior.checkpoints import save_model
from bayesprior.errors import ConfigError
from bayesprior.plugins import build_architecture, create_prior, register_plugin, unregister_plugin
from bayesprior.training.methods import build_model, prior_rules
from bayesprior.wrap import BayesianModel
from training_fixtures import tiny_architecture  # noqa: F401

CFG = {"in_channels": 1, "n_classes": 2, "width": 8}


def test_ri_uses_he_normal_for_relu(tiny_architecture):
    torch.manual_seed(0)
    net = build_model(tiny_architecture, {"in_channels": 1, "n_classes": 2, "width": 64}, "ri")
    w = net.down.weight
    fan_in = w.shape[1] * 27
    assert w.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert torch.count_nonzero(net.down.bias) == 0


def _source(arch, tmp_path):
    net = build_architecture(arch, **CFG)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    save_model(net, tmp_path / "source.pt")
    return tmp_path / "source.pt"


def test_pr_starts_from_the_source_and_trains_everything(tiny_architecture, tmp_path):
    net = build_model(tiny_architecture, CFG, "pr", source=_source(tiny_architecture, tmp_path))
    assert all(torch.all(p == 0.5) for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters())


def test_prf_keeps_only_the_declared_finetune_layers_trainable(tiny_architecture, tmp_path):
    net = build_model(tiny_architecture, CFG, "prf", source=_source(tiny_architecture, tmp_path))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"init_conv.weight", "init_conv.bias", "out_conv.weight", "out_conv.bias"}


def test_pr_without_source_is_refused(tiny_architecture):
    with pytest.raises(ConfigError, match="source"):
        build_model(tiny_architecture, CFG, "pr")


def test_unknown_method_names_the_known_ones(tiny_architecture):
    with pytest.raises(ConfigError, match="gaussian"):
        build_model(tiny_architecture, CFG, "nope")


def test_prior_method_makes_each_group_bayesian(tiny_architecture):
    bm = build_model(tiny_architecture, CFG, "gaussian", prior_options={"scale": 0.5})
    assert isinstance(bm, BayesianModel)
    assert set(bm.assignment) == {"init_conv", "down"}
    assert all(p.config()["scale"] == 0.5 for p in bm.priors.values())


def test_prior_method_starts_posterior_means_from_source(tiny_architecture, tmp_path):
    bm = build_model(tiny_architecture, CFG, "gaussian", source=_source(tiny_architecture, tmp_path))
    assert torch.all(bm.net.down.posterior.loc == 0.5)


class _GroupAwarePrior:
    calls = []

    @hookimpl
    def register_priors(self, register):
        def factory(path, group, scale=1.0):
            _GroupAwarePrior.calls.append((path, group, scale))
            return create_prior(("gaussian", {"scale": scale}))
        register("groupaware", factory)


def test_prior_factory_gets_path_options_and_group():
    register_plugin(_GroupAwarePrior(), "groupaware-test")
    try:
        rules = prior_rules("groupaware", {"a": ["x"], "b": ["y"]}, prior_path="p.pt",
                            prior_options={"scale": 2.0})
        assert [r.prior for r in rules] == [("groupaware", {"path": "p.pt", "scale": 2.0, "group": "a"}),
                                            ("groupaware", {"path": "p.pt", "scale": 2.0, "group": "b"})]
    finally:
        unregister_plugin("groupaware-test")


def test_prior_without_groups_covers_convolutions_larger_than_one():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Conv3d(2, 2, 1))
    rule, = prior_rules("gaussian", {})
    assert rule.select("0", net[0], {}) and not rule.select("1", net[1], {})
