"""Old import paths, methods, options and config keys keep working for one release, each with a DeprecationWarning."""
import importlib
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import bayesprior as bp
from bayesprior import checkpoints, selectors
from bayesprior.cli import cli
from bayesprior.data import naming
from bayesprior.evaluation import folders, metrics
from bayesprior.experiment.config import parse_config
from bayesprior.inference import postprocess, prediction, sliding_window_prediction
from bayesprior.training import methods
from training_fixtures import write_nnunet_dataset

MOVED_MODULES = {
    "bayesprior.training.prediction": {"predict_folder": prediction.predict_folder,
                                       "PredictionSettings": prediction.PredictionSettings,
                                       "nifti_inputs": naming.nifti_inputs, "case_ids": naming.case_ids},
    "bayesprior.training.inference": {"sliding_window": sliding_window_prediction.sliding_window,
                                      "predict_probabilities": sliding_window_prediction.predict_probabilities},
    "bayesprior.training.postprocess": {"largest_connected_component": postprocess.largest_connected_component},
    "bayesprior.training.evaluation": {"evaluate_folders": folders.evaluate_folders},
    "bayesprior.training.metrics": {"dice_score": metrics.dice_score, "confusion_counts": metrics.confusion_counts},
    "bayesprior.commands.errors_cmd": {},
}

MOVED_NAMES = {
    ("bayesprior.wrap", "load_bayesian"): checkpoints.load_bayesian,
    ("bayesprior.wrap", "by_name"): selectors.by_name,
    ("bayesprior.wrap", "by_type"): selectors.by_type,
    ("bayesprior.wrap", "by_kernel_size"): selectors.by_kernel_size,
    ("bayesprior.wrap", "by_group"): selectors.by_group,
    ("bayesprior.wrap", "SAVE_FORMAT"): checkpoints.MODEL_FORMAT,
    ("bayesprior.training", "dice_score"): metrics.dice_score,
    ("bayesprior.training", "iou_score"): metrics.iou_score,
    ("bayesprior.experiment.config", "BASELINE_METHODS"): methods.DETERMINISTIC_METHODS,
}


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_a_moved_module_still_imports_with_a_warning(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} has moved to"):
        module = importlib.import_module(old)
    for name, new in MOVED_MODULES[old].items():
        assert getattr(module, name) is new


@pytest.mark.parametrize("module, name", sorted(MOVED_NAMES))
def test_a_moved_name_still_resolves_with_a_warning(module, name):
    with pytest.warns(DeprecationWarning, match=f"{module}.{name} has moved to"):
        value = getattr(importlib.import_module(module), name)
    assert value is MOVED_NAMES[(module, name)]


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        importlib.import_module("bayesprior.wrap").no_such_name


def test_bayesian_model_save_and_payload_forward_to_the_checkpoints_module(tmp_path):
    bm = bp.bayesianize(nn.Sequential(nn.Linear(2, 3)), {nn.Linear: "gaussian"})
    with pytest.warns(DeprecationWarning, match="save_model"):
        bm.save(tmp_path / "m.pt", extra={"epoch": 1})
    with pytest.warns(DeprecationWarning, match="model_payload"):
        assert bm.payload()["kind"] == "bayesian"
    loaded = bp.load_bayesian(tmp_path / "m.pt", nn.Sequential(nn.Linear(2, 3)))
    assert torch.equal(loaded.net[0].posterior.loc, bm.net[0].posterior.loc)


def _experiment_config(prior):
    return {"source": {"synthetic": {"kind": "ms"}}, "target": {"synthetic": {"kind": "tumour"}}, "prior": prior}


def test_prior_latent_dim_in_an_experiment_config_becomes_a_prior_option():
    with pytest.warns(DeprecationWarning, match=r"\[prior\] latent_dim"):
        config = parse_config(_experiment_config({"latent_dim": 4, "options": {"hidden": 16}}))
    assert config.prior_options == {"latent_dim": 4, "hidden": 16}
    assert not hasattr(config, "latent_dim")
    assert parse_config(_experiment_config({"options": {"latent_dim": 4}})).prior_options == {"latent_dim": 4}


def test_train_prior_is_a_deprecated_spelling_of_prior_file(tiny_architecture, tmp_path):
    data = tmp_path / "Dataset010_Alias"
    write_nnunet_dataset(data, n=2, size=8)
    prior_file = tmp_path / "anything.pt"
    prior_file.write_bytes(b"")
    base = ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture, "--epochs", "1",
            "--no-progress", "--no-cache", "--method", "gaussian"]
    # gaussian takes no `path`, so the file is refused by name: it reached the prior either way
    for option in ("--prior-file", "--prior"):
        result = CliRunner().invoke(cli, base + [option, str(prior_file)])
        assert result.exit_code == 1 and "path" in result.stderr, result.output
        assert ("--prior is deprecated" in result.stderr) == (option == "--prior")
    result = CliRunner().invoke(cli, base + ["--prior", str(prior_file), "--prior-file", str(prior_file)])
    assert result.exit_code == 2 and "once" in result.stderr
