"""``prior_layers``: a Bayesian method's prior on the architecture's layer groups only (the default), or on every
convolution and linear layer (``all``): the 1x1x1 convolutions that the groups leave plain and unpenalised."""
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bayesprior.checkpoints import load_model, save_model
from bayesprior.cli import cli
from bayesprior.errors import ConfigError
from bayesprior.experiment.settings_record import result_settings
from bayesprior.plugins import architecture_groups, build_architecture
from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_model, layers_outside, prior_rules

TINY_UNET = {"in_channels": 1, "n_classes": 2, "widths": [4, 4, 4, 4]}


def _source(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "source.pt"
    save_model(build_architecture("unet3d", **TINY_UNET), path)
    return path


def _bayesian_layers(bm):
    return set(bm.assignment)


def test_all_puts_the_prior_on_the_1x1x1_convolutions_that_the_groups_leave_plain(tmp_path):
    source = _source(tmp_path)
    config = TrainConfig(method="l2sp_bayes", source=str(source), architecture="unet3d", architecture_config=TINY_UNET,
                         prior_options={"relative_scale": 0.5})
    grouped = build_model(config)
    every = build_model(TrainConfig(**{**config.to_dict(), "patch": None, "prior_layers": "all"}))
    plain = build_architecture("unet3d", **TINY_UNET)
    pointwise = {name for name, m in plain.named_modules()
                 if isinstance(m, nn.Conv3d) and max(m.kernel_size) == 1}
    convolutions = {name for name, m in plain.named_modules() if isinstance(m, nn.Conv3d)}
    held = {name for members in architecture_groups("unet3d", plain).values() for name in members}
    assert pointwise and "out_conv" in pointwise and held == convolutions - pointwise
    assert _bayesian_layers(grouped) == held
    assert _bayesian_layers(every) == convolutions
    # each 1x1x1 layer is centred at its own source weight, and adds its KL
    state = torch.load(source, weights_only=True)["state_dict"]
    for name in pointwise:
        assert torch.equal(every.prior_of(name).centre, state[f"{name}.weight"])
    with torch.no_grad():
        every.net.get_submodule("out_conv").posterior.loc.add_(0.1)
    assert float(every.kl()) > float(build_model(TrainConfig(**{**config.to_dict(), "patch": None,
                                                                "prior_layers": "all"})).kl())
    # a saved model predicts without the source, its 1x1x1 layers Bayesian again
    save_model(every, tmp_path / "model.pt", extra={"train_config": config.to_dict()})
    loaded = load_model(tmp_path / "model.pt")
    assert _bayesian_layers(loaded) == convolutions
    x = torch.randn(1, 1, 16, 16, 16)
    assert torch.allclose(loaded.mean_model()(x), every.mean_model()(x))


def test_a_prior_fitted_per_group_has_nothing_for_the_other_layers():
    with pytest.raises(ConfigError, match=r"prior 'dwp' is fitted per layer group and has no prior for the layers "
                                          r"outside them; prior_layers = 'all' needs a prior that is not"):
        prior_rules("dwp", {"g": ["a"]}, "prior.pt", None, other_layers=["out_conv"])


def test_without_groups_the_other_layers_are_those_without_a_kernel_larger_than_one():
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Conv3d(4, 4, 1), nn.Flatten(), nn.Linear(4, 2))
    assert layers_outside(net, {}) == ["1", "3"]
    assert layers_outside(net, {"first": ["0"], "last": ["3"]}) == ["1"]


def test_prior_layers_is_checked_and_kept_out_of_old_results_keys():
    with pytest.raises(ConfigError, match="prior_layers must be one of 'groups', 'all', got 'every'"):
        TrainConfig(prior_layers="every")
    assert "prior_layers" not in result_settings(TrainConfig(method="l2sp_bayes"))  # results made before stay valid
    assert result_settings(TrainConfig(method="l2sp_bayes", prior_layers="all"))["prior_layers"] == "all"


def test_train_refuses_prior_layers_for_a_deterministic_method(tmp_path):
    result = CliRunner().invoke(cli, ["train", str(tmp_path), str(tmp_path / "run"), "--method", "pr", "--source",
                                       str(_source(tmp_path)), "--prior-layers", "all"])
    assert result.exit_code == 2 and "prior-layers has no effect with --method pr" in result.output, result.output
