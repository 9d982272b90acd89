"""`bayesprior train` and the experiment's source stage hold out the same validation cases for one seed."""
import json

import pytest
from click.testing import CliRunner

from bayesprior.cli import cli
from bayesprior.errors import ConfigError
from bayesprior.experiment.config import parse_config
from bayesprior.experiment.pipeline import Experiment
from bayesprior.training.splits import validation_split

from training_fixtures import write_nnunet_dataset


def test_the_split_is_seeded_disjoint_and_holds_out_the_rounded_fraction():
    cases = [f"case{i}" for i in range(10)]
    train, val = validation_split(cases, 0.25, seed=4)
    assert len(val) == 2 and len(train) == 8 and sorted(train + val) == cases
    assert validation_split(cases, 0.25, seed=4) == (train, val)
    assert validation_split(cases, 0.0, seed=4)[1] == []
    with pytest.raises(ConfigError, match="validation fraction"):
        validation_split(cases, 1.0, seed=4)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_a_fraction_of_a_single_case_suggests_zero_not_another_fraction(fraction):
    with pytest.raises(ConfigError, match="cannot split a single case") as info:
        validation_split(["case0"], fraction, seed=0)
    assert "give 0 to monitor the training loss" in str(info.value) and "more than" not in str(info.value)


def test_train_and_experiment_hold_out_the_same_cases_for_the_same_seed(tiny_architecture, tmp_path):
    data = tmp_path / "Dataset009_Split"
    write_nnunet_dataset(data, n=8, size=8)
    seed, fraction = 3, 0.25  # the old torch and numpy splits differed for this seed: [2, 4] against [6, 7]
    result = CliRunner().invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                      "--epochs", "1", "--seeds", str(seed), "--val-fraction", str(fraction),
                                      "--no-progress", "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    by_train = json.loads((tmp_path / "run" / "config.json").read_text())

    config = parse_config({
        "source": {"path": str(data)}, "target": {"path": str(data)},
        "architecture": {"name": tiny_architecture, "config": {"in_channels": 1, "n_classes": 2}},
        "source_training": {"seeds": [0], "max_epochs": 1, "val_fraction": fraction},
        "protocol": {"methods": ["pr"], "first_split_seed": seed, "train_sizes": [1], "test_size": 1},
    })
    Experiment(config, tmp_path / "experiment", progress=False, log=lambda message: None).source.source_models()
    by_experiment = json.loads((tmp_path / "experiment" / "source" / "runs" / "seed0" / "config.json").read_text())

    assert len(by_train["val_cases"]) == 2
    assert by_experiment["val_cases"] == by_train["val_cases"]
    assert by_experiment["train_cases"] == by_train["train_cases"]
