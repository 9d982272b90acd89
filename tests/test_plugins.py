"""Plugin discovery by entry point, the registries, and reporting of broken plugins."""
import importlib.metadata
import sys
import types

import click
import pytest
import torch
from torch import nn

import bayesprior as bp
from bayesprior import Prior, hookimpl
from bayesprior import plugins as plugins_module
from bayesprior.errors import PluginError
from bayesprior.plugins import (
    add_plugin_commands,
    create_prior,
    parse_spec,
    plugin_report,
    prior_registry,
    register_plugin,
    reset_plugins,
    unregister_plugin,
)


class HalfNormalish(Prior):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def log_prob(self, w):
        return (-0.5 * (w / self.scale) ** 2).sum()

    def config(self):
        return {"scale": self.scale}


def _module(name, **hooks):
    """An importable plugin module holding the given hook implementations."""
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def _registers(*names):
    def register_priors(register):
        for name in names:
            register(name, HalfNormalish, description=f"{name} for tests")
    return register_priors


def _raises(register):
    raise RuntimeError("hook exploded")


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Install extra entry points (name -> module or import path) beside the real ones."""
    real = importlib.metadata.entry_points

    def install(**plugins):
        extra = []
        for ep_name, target in plugins.items():
            if isinstance(target, types.ModuleType):
                monkeypatch.setitem(sys.modules, target.__name__, target)
                target = target.__name__
            extra.append(importlib.metadata.EntryPoint(ep_name, target, "bayesprior"))

        def entry_points(**kwargs):
            found = list(real(**kwargs))
            return found + extra if kwargs.get("group") == "bayesprior" else found

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        reset_plugins()

    yield install
    reset_plugins()


pytestmark = pytest.mark.usefixtures("fresh_plugins")


def _report():
    return {p.name: p for p in plugin_report()}


def test_builtin_plugins_are_found_by_entry_point_with_their_distribution():
    report = _report()
    assert report["gaussian"].registered == {"prior": ["gaussian"]}
    assert report["loguniform"].registered == {"prior": ["loguniform"]}
    assert report["gaussian"].distribution == "bayesprior" and report["gaussian"].error is None
    assert {"gaussian", "loguniform"} <= set(prior_registry().names())


def test_in_process_plugin_prior_is_listed_and_usable_by_name():
    register_plugin(_module("inproc", register_priors=_registers("test-halfnormal")), "inproc")
    try:
        assert "test-halfnormal" in prior_registry()
        assert _report()["inproc"].registered == {"prior": ["test-halfnormal"]}
        assert _report()["inproc"].distribution is None
        bm = bp.bayesianize(nn.Sequential(nn.Linear(3, 2)), {nn.Linear: ("test-halfnormal", {"scale": 2.0})})
        prior = bm.prior_of("0")
        assert isinstance(prior, HalfNormalish) and prior.scale == 2.0 and prior.registry_name == "test-halfnormal"
        assert torch.isfinite(bm.kl())
    finally:
        unregister_plugin("inproc")
    assert "test-halfnormal" not in prior_registry()


def test_plugin_that_fails_to_import_is_reported_by_name_and_the_others_still_load(fake_entry_points):
    fake_entry_points(broken="bayesprior_no_such_module_xyz",
                      good=_module("good_plugin_mod", register_priors=_registers("test-good")))
    with pytest.warns(RuntimeWarning, match="broken"):
        report = _report()
    assert "failed to import" in report["broken"].error
    assert "bayesprior_no_such_module_xyz" in report["broken"].error
    assert report["good"].registered == {"prior": ["test-good"]} and report["good"].error is None
    assert {"gaussian", "loguniform", "test-good"} <= set(prior_registry().names())


def test_plugin_whose_hook_raises_is_reported_and_the_others_still_register(fake_entry_points):
    fake_entry_points(exploding=_module("exploding_mod", register_priors=_raises),
                      good=_module("good_plugin_mod2", register_priors=_registers("test-good2")))
    with pytest.warns(RuntimeWarning, match="exploding"):
        report = _report()
    assert "raised in register_priors" in report["exploding"].error
    assert "hook exploded" in report["exploding"].error
    assert "test-good2" in prior_registry()


def test_plugin_with_an_invalid_hook_is_reported(fake_entry_points):
    bad = types.ModuleType("typo_mod")
    bad.register_prios = hookimpl(_registers("x"))  # a typo: no such hook
    fake_entry_points(typo=bad)
    with pytest.warns(RuntimeWarning, match="typo"):
        report = _report()
    assert "invalid hooks" in report["typo"].error


def test_duplicate_names_are_reported_and_the_first_registration_kept(fake_entry_points):
    fake_entry_points(copycat=_module("copycat_mod", register_priors=_registers("gaussian")))
    with pytest.warns(RuntimeWarning, match="gaussian"):
        report = _report()
    assert "copycat" in report["copycat"].error and "gaussian" in report["copycat"].error
    assert prior_registry().get("gaussian").plugin == "gaussian"


def test_register_rejects_unknown_extras_and_empty_names():
    def register_priors(register):
        register("test-extra", HalfNormalish, groups=lambda m: {})

    register_plugin(_module("extras", register_priors=register_priors), "extras")
    try:
        with pytest.warns(RuntimeWarning, match="extras"):
            report = _report()
        assert "groups" in report["extras"].error
    finally:
        unregister_plugin("extras")


def test_disabled_plugins_are_skipped(monkeypatch):
    monkeypatch.setenv("BAYESPRIOR_DISABLE_PLUGINS", "loguniform")
    reset_plugins()
    assert "loguniform" not in prior_registry()
    assert "gaussian" in prior_registry()


def test_unknown_prior_name_lists_the_known_ones():
    with pytest.raises(PluginError, match="known: .*gaussian"):
        create_prior("no-such-prior")


@pytest.mark.parametrize("spec, expected", [
    ("gaussian", ("gaussian", {})),
    (("gaussian", {"scale": 0.1}), ("gaussian", {"scale": 0.1})),
    ({"name": "gaussian", "scale": 0.1}, ("gaussian", {"scale": 0.1})),
    ({"name": "gaussian", "config": {"scale": 0.1}, "loc": 1.0}, ("gaussian", {"scale": 0.1, "loc": 1.0})),
])
def test_parse_spec_accepts_the_three_spellings(spec, expected):
    assert parse_spec(spec) == expected


def test_parse_spec_refuses_anything_else():
    with pytest.raises(TypeError):
        parse_spec(42)


def test_architecture_plugin_builds_by_name_with_groups_and_finetune_layers():
    def register_architectures(register):
        register("test-tiny", lambda width=2: nn.Sequential(nn.Conv1d(1, width, 3), nn.Conv1d(width, 1, 1)),
                 groups=lambda model: {"first": ["0"]}, finetune_layers=["1"])

    register_plugin(_module("arch", register_architectures=register_architectures), "arch")
    try:
        model = bp.build_architecture("test-tiny", width=3)
        assert model.architecture_spec == {"name": "test-tiny", "config": {"width": 3}}
        assert plugins_module.architecture_groups("test-tiny", model) == {"first": ["0"]}
        assert plugins_module.architecture_finetune_layers("test-tiny") == ["1"]
    finally:
        unregister_plugin("arch")


def test_load_rebuilds_the_architecture_recorded_in_the_file(tmp_path):
    def register_architectures(register):
        register("test-tiny2", lambda: nn.Sequential(nn.Conv1d(1, 2, 3), nn.Conv1d(2, 1, 1)))

    register_plugin(_module("arch2", register_architectures=register_architectures), "arch2")
    try:
        bm = bp.bayesianize(bp.build_architecture("test-tiny2"), {nn.Conv1d: "gaussian"})
        bp.save_model(bm, tmp_path / "m.pt")
        loaded = bp.load_bayesian(tmp_path / "m.pt")
        assert loaded.assignment == bm.assignment
        x = torch.randn(1, 1, 8)
        with bm.sampling("mean"), loaded.sampling("mean"):
            assert torch.equal(loaded(x), bm(x))
    finally:
        unregister_plugin("arch2")


def test_plugin_commands_are_added_and_a_broken_one_is_reported():
    @click.command("test-hello")
    def hello():
        click.echo("hello")

    def register_commands(cli):
        cli.add_command(hello)

    def broken_commands(cli):
        raise RuntimeError("no commands today")

    register_plugin(_module("cmds", register_commands=register_commands), "cmds")
    register_plugin(_module("badcmds", register_commands=broken_commands), "badcmds")
    try:
        group = click.Group("test")
        with pytest.warns(RuntimeWarning, match="badcmds"):
            add_plugin_commands(group)
        assert "test-hello" in group.commands
    finally:
        unregister_plugin("cmds")
        unregister_plugin("badcmds")


def test_a_misspelt_prior_option_is_a_config_error_naming_the_prior_and_the_accepted_options():
    from bayesprior.errors import ConfigError

    with pytest.raises(ConfigError, match=r"prior 'gaussian'.*sigma.*accepted options: loc, scale"):
        create_prior(("gaussian", {"sigma": 0.1}))


def test_tables_name_a_method_by_the_label_its_plugin_registered():
    from bayesprior.experiment.report import label

    def register_priors(register):
        register("test-labelled", HalfNormalish, label="UNet-HalfNormal")
        register("test-unlabelled", HalfNormalish)

    register_plugin(_module("labels", register_priors=register_priors), "labels")
    try:
        assert label("test-labelled") == "UNet-HalfNormal"
        assert label("test-unlabelled") == "UNet-test-unlabelled"
    finally:
        unregister_plugin("labels")
    assert label("pr") == "UNet-PR" and label("dwp") == "UNet-DWP" and label("l2sp") == "UNet-L2SP"  # core; plugins
    assert label("l2sp_a1") == "UNet-l2sp_a1"  # an experiment's own variant of a method
