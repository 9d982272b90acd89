"""An experiment's results belong to their settings: changed settings are refused or redone, never reused;
an existing zoo or prior is used as given; explicit case lists; scoring on the original grid."""
import json
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from bayesprior.errors import ConfigError
from bayesprior.experiment.config import parse_config
from bayesprior.experiment.pipeline import Experiment

TINY = {
    "source": {"synthetic": {"kind": "ms", "cases": 2, "shape": [16, 16, 16], "seed": 1}},
    "target": {"synthetic": {"kind": "tumour", "cases": 3, "shape": [16, 24, 16], "seed": 2}},
    "preprocess": {"crop_nonzero": False},
    "architecture": {"config": {"widths": [4, 4, 4, 4]}},
    "source_training": {"seeds": [0], "max_epochs": 1, "val_fraction": 0.0},
    "prior": {"max_epochs": 1},
    "target_training": {"max_epochs": 1, "forward_mode": "sample"},
    "protocol": {"train_sizes": [1], "test_size": 1, "splits": 1, "methods": ["ri"]},
}


def _config(**sections):
    raw = json.loads(json.dumps(TINY))
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


def _experiment(out, raw, config_path=None):
    return Experiment(parse_config(raw, Path(config_path or "<test>")), out, progress=False, log=lambda line: None)


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def _result(out, run_id="split0_n1_ri"):
    return json.loads((out / "results" / f"{run_id}.json").read_text())


def test_a_changed_target_setting_is_refused_naming_what_changed(tmp_path):
    out = tmp_path / "out"
    _experiment(out, _config()).run()
    before = (out / "results" / "split0_n1_ri.json").read_text()
    changed = _config(target_training={"max_epochs": 2, "kl_weight": 0.5})
    with pytest.raises(ConfigError, match=r"split0_n1_ri: .*kl_weight 1.0 -> 0.5; .*max_epochs 1 -> 2.*--rerun-changed"):
        _experiment(out, changed).run()
    assert (out / "results" / "split0_n1_ri.json").read_text() == before
    _experiment(out, _config()).run()  # the same settings again: nothing to redo, nothing refused
    assert (out / "results" / "split0_n1_ri.json").read_text() == before


def test_rerun_changed_redoes_the_run_and_keeps_the_old_result(tmp_path):
    out = tmp_path / "out"
    _experiment(out, _config()).run()
    old = _result(out)
    text = _experiment(out, _config(target_training={"kl_weight": 0.25})).run(rerun_changed=True)
    new = _result(out)
    assert new["settings"]["train_config"]["kl_weight"] == 0.25 and new["settings_sha256"] != old["settings_sha256"]
    kept = out / "superseded" / f"split0_n1_ri.{old['settings_sha256'][:12]}"
    assert json.loads((kept / "result.json").read_text()) == old and (kept / "run" / "model.pt").is_file()
    assert "preprocessed grid" in text and "KL weight" not in text  # RI records a KL weight it never used


def test_a_scoring_change_rescores_the_trained_network_without_training_it_again(tmp_path):
    out = tmp_path / "out"
    _experiment(out, _config()).run()
    old = _result(out)
    run = out / "runs" / "split0_n1_ri"
    trained = ((run / "log.jsonl").read_text(), (run / "checkpoint.pt").read_bytes(), _weights(run / "model.pt"))
    rescored = _config(protocol={"score_grid": "original"})
    with pytest.raises(ConfigError, match=r"scored.grid \"preprocessed\" -> \"original\".*--rerun-changed to rescore them"):
        _experiment(out, rescored).run()
    _experiment(out, rescored).run(rerun_changed=True)
    new = _result(out)
    log, checkpoint, weights = trained
    assert (run / "log.jsonl").read_text() == log and (run / "checkpoint.pt").read_bytes() == checkpoint
    assert all(torch.equal(weights[k], v) for k, v in _weights(run / "model.pt").items())  # not trained again
    assert new["score_grid"] == "original" and new["train_seconds"] == old["train_seconds"]
    assert new["settings"]["train_config"] == old["settings"]["train_config"]
    kept = out / "superseded" / f"split0_n1_ri.{old['settings_sha256'][:12]}"
    assert json.loads((kept / "result.json").read_text()) == old and not (kept / "run").exists()


def test_a_rescore_without_the_runs_checkpoint_trains_it_again_and_keeps_the_old_network(tmp_path):
    out = tmp_path / "out"
    _experiment(out, _config()).run()
    old = _result(out)
    (out / "runs" / "split0_n1_ri" / "checkpoint.pt").unlink()  # train() could not resume it: it would retrain
    _experiment(out, _config(protocol={"score_grid": "original"})).run(rerun_changed=True)
    kept = out / "superseded" / f"split0_n1_ri.{old['settings_sha256'][:12]}"
    assert (kept / "run" / "model.pt").is_file() and (out / "runs" / "split0_n1_ri" / "checkpoint.pt").is_file()


def test_an_interrupted_run_of_a_ct_experiment_resumes(tmp_path):
    out = tmp_path / "out"
    raw = _config(preprocess={"crop_nonzero": False, "intensity": "ct"})
    _experiment(out, raw).run()
    log = (out / "runs" / "split0_n1_ri" / "log.jsonl").read_text()
    first = _result(out)
    (out / "results" / "split0_n1_ri.json").unlink()  # killed between training and writing its result
    _experiment(out, raw).run()  # not refused as "other settings", and not trained again
    assert (out / "runs" / "split0_n1_ri" / "log.jsonl").read_text() == log
    assert _result(out)["dsc"] == first["dsc"] and _result(out)["settings_sha256"] == first["settings_sha256"]


def test_runs_trained_exactly_as_another_experiments_are_reused_and_only_scored(tmp_path):
    tuning, final = tmp_path / "tuning", tmp_path / "final"
    _experiment(tuning, _config(protocol={"score_on": "validation"})).run()
    _experiment(final, _config()).run(reuse_from=tuning)
    a, b = tuning / "runs" / "split0_n1_ri", final / "runs" / "split0_n1_ri"
    assert (b / "log.jsonl").read_text() == (a / "log.jsonl").read_text()  # not trained again
    assert (b / "checkpoint.pt").read_bytes() == (a / "checkpoint.pt").read_bytes()
    first, scored = _result(tuning), _result(final)
    assert (first["scored_on"], scored["scored_on"]) == ("validation", "test")
    assert scored["test_cases"] != first["test_cases"] and scored["train_seconds"] == first["train_seconds"]


def test_runs_are_reused_from_several_folders_each_from_the_one_that_has_it(tmp_path):
    variant = {"per_method": {"ri_lr": {"method": "ri", "lr": 0.01}}}
    first, second, final = tmp_path / "first", tmp_path / "second", tmp_path / "final"
    _experiment(first, _config(protocol={"score_on": "validation"})).run()
    _experiment(second, _config(target_training=variant, protocol={"score_on": "validation",
                                                                    "methods": ["ri_lr"]})).run()
    config = tmp_path / "final.toml"  # through the command, as a user gives the folders
    config.write_text(_toml(_config(target_training=variant, protocol={"methods": ["ri", "ri_lr"]})))
    from hostile import run

    result = run("experiment", config, "--out", final, "--quiet", "--reuse-runs-from", first,
                 "--reuse-runs-from", second)
    assert result.exit_code == 0, result.output
    for folder, run_id in ((first, "split0_n1_ri"), (second, "split0_n1_ri_lr")):
        assert (final / "runs" / run_id / "log.jsonl").read_text() == (folder / "runs" / run_id / "log.jsonl").read_text()
        assert (final / "runs" / run_id / "checkpoint.pt").read_bytes() == \
            (folder / "runs" / run_id / "checkpoint.pt").read_bytes()


def test_a_run_trained_otherwise_is_not_reused(tmp_path):
    tuning, final = tmp_path / "tuning", tmp_path / "final"
    _experiment(tuning, _config(protocol={"score_on": "validation"})).run()
    lines: list[str] = []
    Experiment(parse_config(_config(target_training={"max_epochs": 2}), Path("<test>")), final, progress=False,
               log=lines.append).run(reuse_from=tuning)
    log = (final / "runs" / "split0_n1_ri" / "log.jsonl").read_text().splitlines()
    assert len(log) == 2 and _result(final)["settings"]["train_config"]["max_epochs"] == 2
    told = f"{tuning}: none of its 1 finished run(s) was trained exactly as one of the 1 run(s) still to start here"
    assert any(told in line for line in lines)


def test_reusing_runs_needs_another_experiment_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: not an experiment folder"):
        _experiment(tmp_path / "out", _config()).run(reuse_from=tmp_path / "empty")
    _experiment(tmp_path / "out", _config()).run()
    with pytest.raises(ConfigError, match="another experiment folder, not this one"):
        _experiment(tmp_path / "out", _config()).run(reuse_from=tmp_path / "out")
    (tmp_path / "out" / "source" / "runs").mkdir(parents=True, exist_ok=True)  # as a source stage leaves it
    with pytest.raises(ConfigError, match="source: not an experiment folder"):  # its runs are source networks
        _experiment(tmp_path / "other", _config()).run(reuse_from=tmp_path / "out" / "source")


def test_a_setting_added_later_keeps_the_keys_of_results_made_before_it_while_at_its_default():
    from bayesprior.experiment.settings_record import LATER_SETTINGS, result_settings
    from bayesprior.training.config import TrainConfig

    before = {k: v for k, v in TrainConfig().to_dict().items() if k not in LATER_SETTINGS}  # an older version's
    assert result_settings(TrainConfig()) == result_settings(before)
    assert set(LATER_SETTINGS) <= set(TrainConfig().to_dict())  # each is a real setting, at the listed default
    assert all(TrainConfig().to_dict()[k] == v for k, v in LATER_SETTINGS.items())
    changed = result_settings(TrainConfig(method="gaussian", posterior_std_ratio=0.1))
    assert changed["posterior_std_ratio"] == 0.1  # once used, it is part of the key


def test_posterior_std_ratio_reaches_the_runs_of_an_experiment(tmp_path):
    out = tmp_path / "out"
    raw = _config(protocol={"methods": ["gaussian"]}, target_training={"posterior_std_ratio": 0.1})
    _experiment(out, raw).run()
    assert _result(out, "split0_n1_gaussian")["settings"]["train_config"]["posterior_std_ratio"] == 0.1


def test_a_changed_source_setting_is_refused(tmp_path):
    out = tmp_path / "out"
    raw = _config(protocol={"methods": ["pr"]})
    _experiment(out, raw).run(stage="source")
    raw["source_training"]["max_epochs"] = 2
    with pytest.raises(ConfigError, match=r"other source settings \(zoo.train_config.max_epochs 1 -> 2\)"):
        _experiment(out, raw).run(stage="source")
    _experiment(out, raw).run(stage="source", rerun_changed=True)
    assert json.loads((out / "source" / "settings.json").read_text())["zoo"]["train_config"]["max_epochs"] == 2
    assert len(list((out / "superseded").glob("source.*/runs/seed0/model.pt"))) == 1


def test_an_existing_zoo_and_prior_are_used_without_training_the_source(tmp_path):
    first = tmp_path / "first"
    _experiment(first, _config(protocol={"methods": ["corrnormal"]})).run(stage="source")
    models = [str(first / "source" / "runs" / "seed0" / "model.pt")]
    prior = str(first / "source" / "prior_corrnormal.pt")
    raw = _config(protocol={"methods": ["corrnormal", "pr"]}, prior={"file": prior})
    raw["source"] = {"models": models}
    out = tmp_path / "second"
    _experiment(out, raw).run()
    assert not (out / "source" / "runs").exists() and not (out / "source" / "bank.npz").exists()
    result = _result(out, "split0_n1_corrnormal")
    assert set(result["settings"]["inputs"]) == {"prior_path"}
    assert _result(out, "split0_n1_pr")["settings"]["inputs"]["source"] == json.loads(
        (out / "source" / "settings.json").read_text())["zoo"]["models"][0]


@pytest.mark.parametrize("change, fragment", [
    ({"source": {"models": ["missing.pt"]}}, "[source] models: "),
    ({"prior": {"file": "missing.pt"}}, "[prior] file: "),
    ({"protocol": {"test_cases": ["a", "a"]}}, "protocol.test_cases lists ['a'] more than once"),
    ({"protocol": {"test_cases": ["a"], "train_cases": ["a"]}}, "share ['a']"),
    ({"protocol": {"score_grid": "native"}}, "protocol.score_grid must be one of"),
])
def test_bad_reuse_and_case_settings_are_refused_naming_the_key(tmp_path, change, fragment):
    raw = _config()
    for section, values in change.items():
        raw[section] = values if section == "source" else {**raw.get(section, {}), **values}
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")):
        parse_config(raw, tmp_path / "x.toml")


def test_explicit_test_cases_are_every_splits_test_set_and_unknown_ones_are_refused(tmp_path):
    raw = _config(protocol={"test_cases": ["SynBraTS_0002"], "splits": 2})
    experiment = _experiment(tmp_path / "out", raw)
    experiment.run()
    assert [r["test_cases"] for r in experiment.store.read_all()] == [["SynBraTS_0002"]] * 2
    raw["protocol"]["test_cases"] = ["SynBraTS_0009"]
    with pytest.raises(ConfigError, match=r"protocol.test_cases: 1 case\(s\) not in the target dataset"):
        _experiment(tmp_path / "other", raw).run()


def test_scoring_on_the_original_grid_writes_predictions_shaped_and_placed_as_the_images(tmp_path):
    out = tmp_path / "out"
    raw = _config(preprocess={"crop_nonzero": False, "shape": [16, 16, 16]},
                  protocol={"score_grid": "original", "write_predictions": True})
    text = _experiment(out, raw).run()
    result = _result(out)
    case = result["test_cases"][0]
    written = nibabel.load(str(out / "predictions" / "split0_n1_ri" / f"{case}.nii.gz"))
    image = nibabel.load(str(out / "data" / "target" / "imagesTr" / f"{case}_0000.nii.gz"))
    assert written.shape == image.shape == (16, 24, 16) and np.allclose(written.affine, image.affine)
    assert result["score_grid"] == "original" and "original grid" in text


def test_a_result_that_records_no_settings_is_compared_by_what_its_run_folder_recorded(tmp_path):
    from bayesprior.atomic import atomic_write_json
    from bayesprior.experiment.runs import ResultStore, RunSpec

    store, run = ResultStore(tmp_path), RunSpec(0, 1, "ri")
    atomic_write_json({"split": 0, "train_size": 1, "method": "ri", "dsc": 0.5}, store.path(run))
    settings = {"train_config": {"kl_weight": 1.0}, "inputs": {}, "train_data": "abc", "scored": {"on": "test"}}
    assert store.changes(run, settings, None) == ["settings (not recorded)"]
    assert store.changes(run, settings, {"train_config": {"kl_weight": 1.0}, "inputs": {}, "train_data": "abc"}) == []
    assert store.changes(run, settings, {"train_config": {"kl_weight": 0.02}, "inputs": {}, "train_data": "abc"}) == [
        "train_config.kl_weight 0.02 -> 1.0"]


def test_the_command_refuses_changed_settings_in_one_line_and_reruns_them_when_asked(tmp_path):
    from hostile import assert_one_line_error, run

    def write(max_epochs):
        path = tmp_path / "experiment.toml"
        path.write_text(_toml(_config(target_training={"max_epochs": max_epochs})))
        return path

    out = tmp_path / "out"
    assert run("experiment", write(1), "--out", out, "--quiet").exit_code == 0
    assert_one_line_error(run("experiment", write(2), "--out", out, "--quiet"),
                          "train_config.max_epochs 1 -> 2); run again with --rerun-changed")
    result = run("experiment", write(2), "--out", out, "--quiet", "--rerun-changed")
    assert result.exit_code == 0 and "settings changed" in result.output
    assert _result(out)["settings"]["train_config"]["max_epochs"] == 2


def _toml(raw):
    """A config dict as TOML (JSON's strings, numbers, booleans and lists are TOML's)."""
    def value(v):
        return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }" if isinstance(v, dict) else json.dumps(v)

    return "\n".join(f"[{name}]\n" + "\n".join(f"{k} = {value(v)}" for k, v in table.items())
                     for name, table in raw.items())


@pytest.mark.parametrize("methods, source, fragment", [
    (["dwp", "corrnormal"], None, r"\[prior\] file serves the methods that learn one kind of prior; protocol.methods "
                                  r"has 2"),
    (["ri"], None, r"\[prior\] file serves the methods .* has 0"),
    (["dwp", "pr"], {}, r"\[source\] needs path, synthetic or models"),
])
def test_a_prior_file_must_serve_one_method_and_a_source_must_be_given_where_needed(tmp_path, methods, source,
                                                                                     fragment):
    prior = tmp_path / "prior.pt"
    prior.write_bytes(b"not read before the run")
    raw = _config(protocol={"methods": methods}, prior={"file": str(prior)})
    if source is not None:
        raw["source"] = source
    with pytest.raises(ConfigError, match=fragment):
        _experiment(tmp_path / "out", raw)
    assert not (tmp_path / "out").exists()


def test_a_source_model_that_is_no_model_file_is_refused_before_any_work(tmp_path):
    bad = tmp_path / "zoo.pt"
    bad.write_bytes(b"not a model")
    raw = _config(protocol={"methods": ["pr"]})
    raw["source"] = {"models": [str(bad)]}
    with pytest.raises(ConfigError, match=r"\[source\] models: .*zoo.pt"):
        _experiment(tmp_path / "out", raw)
    assert not (tmp_path / "out").exists()


def test_a_split_file_gives_the_case_lists_and_its_val_cases_are_refused(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["SynBraTS_0001"], "test": ["SynBraTS_0002"]}))
    config = parse_config(_config(protocol={"split_file": "split.json"}), tmp_path / "x.toml")
    assert config.train_cases == ("SynBraTS_0001",) and config.test_cases == ("SynBraTS_0002",)
    split.write_text(json.dumps({"train": ["SynBraTS_0001"], "val": ["SynBraTS_0003"]}))
    with pytest.raises(ConfigError, match=r"protocol.split_file: .*split.json lists 'val' cases"):
        parse_config(_config(protocol={"split_file": "split.json"}), tmp_path / "x.toml")
    split.write_text("[")
    with pytest.raises(ConfigError, match=r"protocol.split_file: .*not valid JSON"):
        parse_config(_config(protocol={"split_file": "split.json"}), tmp_path / "x.toml")


def test_the_report_leaves_out_results_of_runs_outside_its_config_and_counts_them(tmp_path):
    # e.g. a probe whose folder still holds another config's runs: they must not enter the table or the count
    out = tmp_path / "out"
    _experiment(out, _config()).run()
    extra = _result(out) | {"method": "pr", "dsc": 0.99}
    (out / "results" / "split0_n1_pr.json").write_text(json.dumps(extra))
    (out / "results" / "split3_n1_ri.json").write_text(json.dumps(_result(out) | {"split": 3, "dsc": 0.99}))
    text = _experiment(out, _config()).report()
    assert "0 run(s) not finished yet, 2 result(s) of runs outside this config left out." in text
    assert "UNet-PR" not in text and "0.990" not in text
