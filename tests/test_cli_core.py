"""`bayesprior --version` and `bayesprior plugins`."""
import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import bayesprior as bp
from bayesprior import __version__, hookimpl
from bayesprior.cli import cli
from bayesprior.plugins import register_plugin, unregister_plugin

pytestmark = pytest.mark.usefixtures("fresh_plugins")


def test_version_prints_the_package_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output and "bayesprior" in result.output


def test_help_lists_the_plugins_command():
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "plugins" in result.output


def test_plugins_lists_every_plugin_what_it_registered_and_its_distribution():
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert f"gaussian  (bayesprior {__version__})" in result.output
    assert "prior: gaussian - N(loc, scale^2)" in result.output
    assert "prior: loguniform" in result.output


def test_plugins_json_is_machine_readable():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0
    by_name = {p["name"]: p for p in json.loads(result.output)}
    assert by_name["loguniform"]["registered"] == {"prior": ["loguniform"]}
    assert by_name["loguniform"]["error"] is None


def test_plugins_shows_a_broken_plugin_with_its_error():
    class Broken:
        @hookimpl
        def register_priors(self, register):
            raise ValueError("cannot register today")

    register_plugin(Broken(), "test-broken")
    try:
        with pytest.warns(RuntimeWarning):
            result = CliRunner().invoke(cli, ["plugins"])
        assert result.exit_code == 0
        assert "test-broken  (in-process)" in result.output
        assert "ERROR: raised in register_priors: ValueError: cannot register today" in result.output
        assert "prior: gaussian" in result.output  # the others still load
    finally:
        unregister_plugin("test-broken")


def test_the_example_third_party_laplace_plugin_is_listed_and_usable_by_name():
    result = CliRunner().invoke(cli, ["plugins"])
    assert "laplace  (bayesprior-laplace" in result.output
    assert "prior: laplace" in result.output
    bm = bp.bayesianize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(2)),
                        {nn.Conv2d: ("laplace", {"scale": 0.5})})
    assert bm.prior_of("0").describe() == "laplace(loc=0.0, scale=0.5)"
    kl = bm.kl()
    kl.backward()
    assert torch.isfinite(kl) and bm.net[0].posterior.log_variance.grad is not None


def test_the_wrap_any_model_example_trains_and_predicts(capsys):
    import runpy
    from pathlib import Path

    example = runpy.run_path(str(Path(__file__).parents[1] / "examples" / "wrap_any_model.py"))
    prediction = example["main"](steps=3)
    out = capsys.readouterr().out
    assert "Bayesian layer(s)" in out and "step   2" in out
    assert prediction.mean.shape == (2, 3, 16, 16) and prediction.uncertainty.shape == (2, 16, 16)
    assert torch.isfinite(prediction.uncertainty).all()
