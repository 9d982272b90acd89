"""Experiment settings that reach the runs: training options, validation scoring, structure report, comparisons."""
import json

import pytest

from bayesprior.errors import ConfigError
from bayesprior.experiment.config import parse_config
from bayesprior.experiment.pipeline import Experiment
from bayesprior.experiment.runs import all_runs
from bayesprior.safe_load import load_plain

BASE = {
    "source": {"synthetic": {"kind": "ms", "cases": 4, "shape": [16, 24, 16], "seed": 1}},
    "target": {"synthetic": {"kind": "tumour", "cases": 6, "shape": [16, 24, 16], "seed": 2}},
    "preprocess": {"crop_nonzero": False},
    "source_training": {"seeds": [0], "max_epochs": 1, "val_fraction": 0.0, "init_scale": 0.1,
                        "patch": [8, 16, 8], "augment": True, "steps_per_epoch": 2},
    "prior": {"max_epochs": 2},
    "target_training": {"max_epochs": 2, "steps_per_epoch": 3, "kl_warmup": 2, "forward_mode": "sample",
                        "per_method": {"corrnormal": {"kl_weight": 0.5, "log_variance_init": -12.0},
                                       "ri_lr": {"method": "ri", "lr": 0.01}}},
    "protocol": {"train_sizes": [1], "test_size": 2, "splits": 2, "methods": ["corrnormal", "ri", "ri_lr"],
                 "score_on": "validation"},
}


def test_training_options_reach_the_runs_and_validation_scoring_never_sees_the_test_set(tmp_path):
    config = parse_config(json.loads(json.dumps(BASE)))
    assert config.source_train_options == {"init_scale": 0.1, "patch": (8, 16, 8), "augment": True,
                                           "steps_per_epoch": 2}
    lines = []
    experiment = Experiment(config, tmp_path / "out", progress=False, log=lines.append)
    text = experiment.run()
    scored = [line.split(":")[0].strip() for line in lines if ": DSC " in line]  # shards share a log: named lines
    assert sorted(scored) == sorted(r.run_id for r in all_runs(config))
    source = load_plain(tmp_path / "out" / "source" / "runs" / "seed0" / "model.pt", "model")["extra"]
    assert source["train_config"]["init_scale"] == 0.1 and source["train_config"]["patch"] == [8, 16, 8]
    log = (tmp_path / "out" / "source" / "runs" / "seed0" / "log.jsonl").read_text().splitlines()
    assert len(log) == 1
    target = load_plain(tmp_path / "out" / "runs" / "split0_n1_ri" / "model.pt", "model")["extra"]["train_config"]
    assert target["steps_per_epoch"] == 3 and target["kl_warmup"] == 2 and target["init_scale"] == 1.0
    own = load_plain(tmp_path / "out" / "runs" / "split0_n1_corrnormal" / "model.pt", "model")["extra"]["train_config"]
    assert own["kl_weight"] == 0.5 and own["log_variance_init"] == -12.0 and target["kl_weight"] == 1.0
    variant = load_plain(tmp_path / "out" / "runs" / "split0_n1_ri_lr" / "model.pt", "model")["extra"]["train_config"]
    assert variant["method"] == "ri" and variant["lr"] == 0.01 and target["lr"] == 0.001
    for result in experiment.store.read_all():
        split = {s.index: s for s in experiment_splits(experiment)}[result["split"]]
        assert result["scored_on"] == "validation"
        assert set(result["test_cases"]).isdisjoint(split.test)
        assert set(result["test_cases"]).isdisjoint(result["train_cases"])
        assert len(result["test_cases"]) == 3
    assert (tmp_path / "out" / "source" / "prior_corrnormal.pt").is_file()
    assert "Paired comparisons" in text and "UNet-CorrNormal vs UNet-RI" in text
    assert "KL weight 0.5;" in text  # corrnormal's; RI's runs record one too, but never use it
    assert (tmp_path / "out" / "comparisons.csv").read_text().startswith("method,baseline,train_size")


def test_schedule_cases_steer_every_run_and_are_never_trained_on_or_scored(tmp_path):
    raw = json.loads(json.dumps(BASE))
    raw["protocol"].update({"splits": 1, "methods": ["ri"], "schedule_cases": 1})
    del raw["target_training"]["per_method"]
    config = parse_config(raw)
    experiment = Experiment(config, tmp_path / "out", progress=False, log=lambda line: None)
    text = experiment.run()
    (result,) = experiment.store.read_all()
    (split,) = experiment_splits(experiment)
    assert result["schedule_cases"] == list(split.schedule) and len(split.schedule) == 1
    assert not set(split.schedule) & (set(result["train_cases"]) | set(result["test_cases"]) | set(split.test))
    assert len(result["test_cases"]) == 6 - 2 - 1 - 1  # the validation cases: the pool less training and schedule
    run = tmp_path / "out" / "runs" / "split0_n1_ri"
    assert json.loads((run / "config.json").read_text())["monitor"] == "validation loss"
    assert all("val_loss" in json.loads(line) for line in (run / "log.jsonl").read_text().splitlines())
    assert "learning rate steered by the loss of 1 held-out pool case(s) per split" in text
    # the same runs without schedule cases were made otherwise: refused, naming what changed
    raw["protocol"]["schedule_cases"] = 0
    with pytest.raises(ConfigError, match="schedule_data"):
        Experiment(parse_config(raw), tmp_path / "out", progress=False, log=lambda line: None).run()


def experiment_splits(experiment):
    from bayesprior.experiment.runs import make_splits

    ids = [c.case_id for c in experiment.data.cases(experiment.config.target, "target")]
    return make_splits(ids, experiment.config)


@pytest.mark.parametrize("section, key, value, message", [
    ("source_training", "init_scal", 0.1, "unknown key"),
    ("source_training", "init_scale", -1.0, "source_training.init_scale"),
    ("target_training", "steps_per_epoch", 0, "target_training.steps_per_epoch"),
    ("target_training", "method", "dwp", "unknown key"),
    ("target_training", "patch", "big", "target_training.patch"),
    ("protocol", "score_on", "train", "score_on"),
    ("target_training", "per_method", {"dwp": {"kl_weight": 0.1}}, "not in protocol.methods"),
    ("target_training", "per_method", {"ri": {"init_scal": 1}}, "unknown key"),
    ("target_training", "per_method", {"ri": {"kl_weight": -1.0}}, "kl_weight"),
])
def test_bad_training_settings_are_refused_naming_the_key(section, key, value, message):
    raw = json.loads(json.dumps(BASE))
    raw[section][key] = value
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


@pytest.mark.parametrize("method, options", [("ri", {"kl_weight": 0.1}), ("ri_lr", {"posterior_std_ratio": 0.5}),
                                             ("ri", {"prior_init": "source", "kl_warmup": 3})])
def test_a_bayesian_setting_given_to_a_deterministic_method_alone_is_refused(tmp_path, method, options):
    raw = json.loads(json.dumps(BASE))
    if method == "ri":  # a method with its own table cannot also be a variant's base
        raw["target_training"]["per_method"].pop("ri_lr")
        raw["protocol"]["methods"].remove("ri_lr")
    raw["target_training"]["per_method"].setdefault(method, {}).update(options)
    with pytest.raises(ConfigError, match=rf"per_method\.{method}\] sets .*never reads") as refused:
        Experiment(parse_config(raw), tmp_path / "out", progress=False, log=lambda line: None)
    assert all(key in str(refused.value) for key in options)
    assert not (tmp_path / "out").exists()  # refused before any data were made


def test_source_networks_train_in_shards_and_the_priors_wait_for_all_of_them(tmp_path):
    raw = json.loads(json.dumps(BASE))
    raw["source_training"]["seeds"] = [0, 1]
    raw["target_training"].pop("per_method")
    raw["protocol"]["methods"] = ["corrnormal", "ri"]
    config = parse_config(raw)
    lines = []
    first = Experiment(config, tmp_path / "out", progress=False, log=lines.append)
    assert first.run(shard=(1, 2), stage="source") is None
    runs = tmp_path / "out" / "source" / "runs"
    assert (runs / "seed1" / "model.pt").is_file() and not (runs / "seed0").exists()
    assert any("not finished yet" in line for line in lines) and not first.source.source_done()
    with pytest.raises(ConfigError, match="source stage is not finished"):
        first.run(shard=(0, 2), stage="target")
    Experiment(config, tmp_path / "out", progress=False, log=lines.append).run(shard=(0, 2), stage="source")
    assert (runs / "seed0" / "model.pt").is_file() and (tmp_path / "out" / "source" / "prior_corrnormal.pt").is_file()
    assert first.source.source_done()


def test_source_networks_start_small_unless_the_config_says_otherwise():
    base = {"source": {"synthetic": {"kind": "ms"}}, "target": {"synthetic": {"kind": "tumour"}}}
    assert parse_config(base).source_train_options["init_scale"] == 0.03
    he = parse_config({**base, "source_training": {"init_scale": 1.0}})
    assert he.source_train_options["init_scale"] == 1.0
    assert "init_scale" not in parse_config(base).target_train_options  # target runs keep He init


def test_the_report_says_what_steered_each_runs_learning_rate():
    from bayesprior.experiment.report_stage import _schedule_note

    loss = {"method": "pr", "settings": {"train_config": {}}}  # lr_monitor at its default: not in the settings
    data = {"method": "l2sp_bayes", "settings": {"train_config": {"lr_monitor": "data"}}}
    held_out = {"schedule_cases": ["a", "b"], "settings": {"train_config": {"lr_monitor": "data"}}}
    assert _schedule_note([loss, loss]) == "learning rate steered by the training loss"
    assert _schedule_note([loss, data]) == ("learning rate steered by the training loss (pr); the training data term "
                                            "(l2sp_bayes)")
    assert _schedule_note([held_out]) == "learning rate steered by the loss of 2 held-out pool case(s) per split"
    assert _schedule_note([{}]) == "learning rate steered by the training loss"  # a result of an older version
