
import pytest
import torch

from bayesprior import hookimpl
from bayesprior.checkpoints import save_model
from bayesprior.errors import ConfigError
from bayesprior.plugins import build_architecture, create_prior, register_plugin, unregister_plugin
from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_model, prior_rules, training_method, training_methods
from bayesprior.wrap import BayesianModel

CFG = {"in_channels": 1, "n_classes": 2, "width": 8}


def _build(arch, method, architecture_config=CFG, **settings):
    return build_model(TrainConfig(architecture=arch, architecture_config=architecture_config, method=method,
                                   **settings))


def test_ri_uses_he_normal_for_relu(tiny_architecture):
    torch.manual_seed(0)
    net = _build(tiny_architecture, "ri", {"in_channels": 1, "n_classes": 2, "width": 64})
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
    net = _build(tiny_architecture, "pr", source=str(_source(tiny_architecture, tmp_path)))
    assert all(torch.all(p == 0.5) for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters())


def test_prf_keeps_only_the_declared_finetune_layers_trainable(tiny_architecture, tmp_path):
    net = _build(tiny_architecture, "prf", source=str(_source(tiny_architecture, tmp_path)))
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == {"init_conv.weight", "init_conv.bias", "out_conv.weight", "out_conv.bias"}


def test_pr_without_source_is_refused(tiny_architecture):
    with pytest.raises(ConfigError, match="source"):
        _build(tiny_architecture, "pr")


def test_unknown_method_names_the_known_ones(tiny_architecture):
    with pytest.raises(ConfigError, match="gaussian"):
        _build(tiny_architecture, "nope")


def test_prior_method_makes_each_group_bayesian(tiny_architecture):
    bm = _build(tiny_architecture, "gaussian", prior_options={"scale": 0.5})
    assert isinstance(bm, BayesianModel)
    assert set(bm.assignment) == {"init_conv", "down"}
    assert all(p.config()["scale"] == 0.5 for p in bm.priors.values())


def test_prior_method_starts_posterior_means_from_source(tiny_architecture, tmp_path):
    bm = _build(tiny_architecture, "gaussian", source=str(_source(tiny_architecture, tmp_path)))
    assert torch.all(bm.net.down.posterior.loc == 0.5)


class _GroupAwarePrior:
    calls = []

    @hookimpl
    def register_priors(self, register):
        def factory(path, group, scale=1.0):
            _GroupAwarePrior.calls.append((path, group, scale))
            return create_prior(("gaussian", {"scale": scale}))
        register("groupaware", factory, per_group=True)
        register("onefits-all", factory)


def test_a_prior_registered_per_group_gets_path_options_and_its_group():
    register_plugin(_GroupAwarePrior(), "groupaware-test")
    try:
        rules = prior_rules("groupaware", {"a": ["x"], "b": ["y"]}, prior_path="p.pt",
                            prior_options={"scale": 2.0})
        assert [r.prior for r in rules] == [("groupaware", {"path": "p.pt", "scale": 2.0, "group": "a"}),
                                            ("groupaware", {"path": "p.pt", "scale": 2.0, "group": "b"})]
        # the same factory registered without per_group is not given a group, whatever its signature
        rules = prior_rules("onefits-all", {"a": ["x"]}, prior_path="p.pt")
        assert [r.prior for r in rules] == [("onefits-all", {"path": "p.pt"})]
    finally:
        unregister_plugin("groupaware-test")


def test_prior_without_groups_covers_convolutions_larger_than_one():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.Conv3d(2, 2, 1))
    rule, = prior_rules("gaussian", {})
    assert rule.select("0", net[0], {}) and not rule.select("1", net[1], {})


def test_the_method_table_says_what_each_method_needs_and_trains():
    ri, pr, prf = (training_method(m) for m in ("ri", "pr", "prf"))
    assert (ri.source, ri.bayesian, ri.trains) == ("unused", False, "all")
    assert (pr.source, pr.bayesian, pr.trains) == ("required", False, "all")
    assert (prf.source, prf.bayesian, prf.trains) == ("required", False, "finetune_layers")
    dwp, gaussian = training_method("dwp"), training_method("gaussian")
    assert dwp.bayesian and dwp.learned_prior and dwp.source == "optional" and not dwp.needs_source
    assert gaussian.bayesian and not gaussian.learned_prior
    assert [m.name for m in training_methods()][:3] == ["ri", "pr", "prf"]


def test_an_unknown_method_in_the_table_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown method 'nope'.*ri, pr, prf.*gaussian"):
        training_method("nope")
