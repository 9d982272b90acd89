"""Hostile and bad experiment configurations: every value is checked before any data are made, and the
message names the key (`bayesprior experiment`)."""
import pytest

from bayesprior.locks import folder_lock

from hostile import TINY_EXPERIMENT, assert_one_line_error, run

GOOD = TINY_EXPERIMENT


def _config(tmp_path, **changes):
    """GOOD with each change's ``key = value`` replacing (or adding) that key in its section."""
    sections = dict(GOOD)
    for section, line in changes.items():
        key = line.split("=")[0].strip()
        kept = [old for old in sections.get(section, "").splitlines() if old.split("=")[0].strip() != key]
        sections[section] = "\n".join(kept + [line])
    path = tmp_path / "experiment.toml"
    path.write_text("\n".join(f"[{name}]\n{body}" for name, body in sections.items()))
    return path


@pytest.mark.parametrize("changes, fragment", [
    ({"target_training": 'max_epochs = "ten"'}, "target_training.max_epochs must be an integer, got 'ten'"),
    ({"target_training": 'lr = "fast"'}, "target_training.lr must be a number, got 'fast'"),
    ({"protocol": "splits = 1.5"}, "protocol.splits must be an integer, got 1.5"),
    ({"protocol": "test_size = 0"}, "protocol.test_size must be >= 1"),
    ({"protocol": 'methods = "dwp"'}, "protocol.methods must be a list of strings"),
    ({"protocol": 'methods = ["dwp", "nonsense"]'}, "unknown method 'nonsense'"),
    ({"preprocess": "crop_nonzer = true"}, "unknown key(s) ['crop_nonzer'] in preprocess"),
    ({"preprocess": 'intensity = "loud"'}, "intensity must be one of"),
    ({"prior": "options = { latent_dim = -1 }"}, "options.latent_dim must be >= 1"),
    ({"prior": "options = { latnt_dim = 6 }"}, "unknown key(s) ['latnt_dim']"),
    ({"source_training": 'seeds = ["a"]'}, "source_training.seeds[0] must be an integer"),
    ({"source_training": 'init_scale = "small"'}, "source_training.init_scale must be a number"),
    ({"target_training": "weight_decay = 0.1"}, "weight_decay applies to the plain methods ri, pr and prf"),
    ({"source": "allow_outside_paths = 1"}, "[source].allow_outside_paths must be a boolean"),
    ({"target": "channel = [0]"}, "[target].channel must be a string"),
    ({"architecture": "config = { widths = [4, 4] }"}, "[architecture]: unet3d: widths must be four channel counts"),
])
def test_a_bad_setting_is_refused_naming_the_key_before_any_data_are_made(tmp_path, changes, fragment):
    out = tmp_path / "out"
    result = run("experiment", _config(tmp_path, **changes), "--out", out, "--quiet")
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_a_bad_synthetic_shape_is_refused_naming_the_key(tmp_path):
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("shape = [16, 16, 16], seed = 1", "shape = [16, 16], seed = 1"))
    assert_one_line_error(run("experiment", path, "--out", tmp_path / "out"), "source.synthetic.shape must list 3 values")


def test_a_file_that_is_not_toml_is_refused(tmp_path):
    (tmp_path / "x.toml").write_text("[source\npath = ")
    assert_one_line_error(run("experiment", tmp_path / "x.toml", "--out", tmp_path / "out"), "not valid TOML")


def test_an_experiment_folder_in_use_is_refused(tmp_path):
    with folder_lock(tmp_path / "out", "experiment folder"):
        assert_one_line_error(run("experiment", _config(tmp_path), "--out", tmp_path / "out", "--quiet"),
                              "experiment folder is in use by another bayesprior process")
    assert not (tmp_path / "out" / "data").exists()


def test_shards_share_the_experiment_folder_but_not_with_a_whole_run(tmp_path):
    with folder_lock(tmp_path / "out", "experiment folder", shared=True):  # another shard at work
        assert_one_line_error(run("experiment", _config(tmp_path), "--out", tmp_path / "out", "--quiet"),
                              "in use")
        with folder_lock(tmp_path / "out", "experiment folder", shared=True):
            pass  # a second shard may join


def test_a_figure_slice_with_a_pickle_payload_is_refused_when_the_report_is_made(tmp_path):
    import json

    import numpy as np

    from bayesprior.experiment.config import load_config
    from bayesprior.experiment.pipeline import Experiment

    from hostile import Payload

    out = tmp_path / "out"
    (out / "results" / "figures").mkdir(parents=True)
    (out / "results" / "split0_n1_ri.json").write_text(json.dumps({"split": 0, "train_size": 1, "method": "ri",
                                                                   "dsc": 0.5, "iou": 0.4, "per_case": {}}))
    marker = tmp_path / "ran"
    with open(out / "results" / "figures" / "split0_n1_ri.npz", "wb") as f:
        np.savez(f, image=np.array([Payload(marker)], dtype=object))
    experiment = Experiment(load_config(_config(tmp_path)), out, progress=False, log=lambda line: None)
    result = run("experiment", _config(tmp_path), "--out", out, "--stage", "report", "--quiet")
    assert_one_line_error(result, "split0_n1_ri.npz", "not a figure slice")
    assert not marker.exists() and experiment.store.read_all()[0]["dsc"] == 0.5


def test_a_damaged_run_result_is_named(tmp_path):
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / "split0_n1_ri.json").write_text('{"split": 0, "trai')
    assert_one_line_error(run("experiment", _config(tmp_path), "--out", out, "--stage", "report", "--quiet"),
                          "split0_n1_ri.json", "is not a run result")


def test_a_source_model_with_a_pickle_payload_is_refused_without_advising_an_option_experiment_lacks(tmp_path):
    import torch

    from hostile import Payload

    marker = tmp_path / "ran"
    torch.save({"format": "bayesprior.model/1", "kind": "deterministic", "architecture": None, "state_dict": {},
                "extra": {"note": Payload(marker)}}, tmp_path / "zoo.pt")
    config = _config(tmp_path)
    source = 'synthetic = { kind = "ms", cases = 3, shape = [16, 16, 16], seed = 1 }'
    config.write_text(config.read_text().replace(source, f'models = ["{tmp_path / "zoo.pt"}"]'))
    line = assert_one_line_error(run("experiment", config, "--out", tmp_path / "out", "--quiet"),
                                 "[source] models", "zoo.pt", "plain types", "trust=True")
    assert "--trust-file" not in line and not marker.exists()


def test_unknown_ids_of_a_split_file_are_named_before_any_data_are_made(tmp_path):
    import json

    (tmp_path / "split.json").write_text(json.dumps({"train": ["SynBraTS_0001"], "test": ["nope"]}))
    config = _config(tmp_path, protocol='split_file = "split.json"')
    config.write_text(config.read_text().replace("train_sizes = [1]\n", ""))  # the default sizes: up to 20
    line = assert_one_line_error(run("experiment", config, "--out", tmp_path / "out", "--quiet"),
                                 "split.json (test list): 1 case(s) not in the target dataset: ['nope']")
    assert "train size" not in line
    assert not (tmp_path / "out" / "data").exists() and not (tmp_path / "out" / "source").exists()


def test_a_split_file_too_short_for_the_train_sizes_names_both_before_any_data_are_made(tmp_path):
    import json

    (tmp_path / "split.json").write_text(json.dumps({"train": ["SynBraTS_0001"], "test": ["SynBraTS_0002"]}))
    config = _config(tmp_path, protocol='split_file = "split.json"')
    config.write_text(config.read_text().replace("train_sizes = [1]\n", ""))
    assert_one_line_error(run("experiment", config, "--out", tmp_path / "out", "--quiet"),
                          "split.json (train list) lists 1 case(s) to train on",
                          "the largest of protocol.train_sizes [5, 10, 15, 20] is 20")
    assert not (tmp_path / "out" / "data").exists()
