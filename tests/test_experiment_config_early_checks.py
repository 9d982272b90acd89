"""Settings of the target and source runs that a run would only refuse mid-experiment (a penalty_weight for a
method without a penalty, a misspelt prior option, SWAG settings) are refused when the config is read, in one
line naming the file, the table and the key."""
import types

import pytest
from torch import nn

from bayesprior import hookimpl
from bayesprior.errors import ConfigError
from bayesprior.experiment.config import load_config
from bayesprior.plugins import register_plugin, unregister_plugin
from bayesprior.training.config import TrainConfig

from hostile import TINY_EXPERIMENT, assert_one_line_error, run

GOOD = TINY_EXPERIMENT


def _config(tmp_path, methods=None, per_method=None, **extra):
    """GOOD with `extra` lines added to their sections, ``[target_training.per_method.NAME]`` tables (name -> lines)
    and another protocol.methods."""
    sections = dict(GOOD)
    for section, lines in extra.items():
        sections[section] = sections[section] + "\n" + lines
    if methods is not None:
        sections["protocol"] = sections["protocol"].replace('["dwp", "ri"]', str(list(methods)).replace("'", '"'))
    for name, lines in (per_method or {}).items():
        sections["target_training"] += f"\n[target_training.per_method.{name}]\n{lines}"
    path = tmp_path / "experiment.toml"
    path.write_text("\n".join(f"[{name}]\n{body}" for name, body in sections.items()))
    return path


def _refused(path) -> str:
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message


# --- penalty_weight: only for runs whose method adds a penalty ---


def test_a_shared_penalty_weight_is_refused_when_a_listed_method_adds_no_penalty(tmp_path):
    message = _refused(_config(tmp_path, methods=["l2sp", "ri"], target_training="penalty_weight = 0.1"))
    assert "target_training.penalty_weight has no effect on method 'ri', which adds no penalty" in message
    assert "[target_training.per_method.l2sp]" in message  # where to put it instead


def test_a_per_method_penalty_weight_is_refused_for_a_method_without_a_penalty(tmp_path):
    message = _refused(_config(tmp_path, methods=["l2sp", "gaussian"], per_method={"gaussian": "penalty_weight = 0.5"}))
    assert "target_training.per_method.gaussian.penalty_weight has no effect on method 'gaussian'" in message


def test_the_experiment_command_refuses_a_misplaced_penalty_weight_before_any_data_are_made(tmp_path):
    out = tmp_path / "out"
    result = run("experiment", _config(tmp_path, methods=["l2sp", "ri"], target_training="penalty_weight = 0.1"),
                 "--out", out, "--quiet")
    assert_one_line_error(result, "experiment.toml: target_training.penalty_weight has no effect on method 'ri'")
    assert not out.exists()


class _Pull(nn.Module):
    def __init__(self, net):
        super().__init__()

    def forward(self, net):
        return sum(p.square().sum() for p in net.parameters())


def test_a_penalty_weight_is_accepted_where_every_run_adds_a_penalty_of_any_registered_method(tmp_path):
    def register_methods(register):
        register("test-pull", _Pull, default_weight=0.5)

    register_plugin(types.SimpleNamespace(register_methods=hookimpl(register_methods)), "test-pull")
    try:  # the registry decides, not the name l2sp
        load_config(_config(tmp_path, methods=["l2sp", "test-pull"], target_training="penalty_weight = 0.1"))
    finally:
        unregister_plugin("test-pull")
    config = load_config(_config(tmp_path, methods=["l2sp", "l2sp_a", "ri"],
                                 per_method={"l2sp_a": 'method = "l2sp"\npenalty_weight = 0.1'}))
    assert config.target_method_options["l2sp_a"]["penalty_weight"] == 0.1
    message = _refused(_config(tmp_path, methods=["l2sp", "ri_b"],  # a variant: its base method decides
                               per_method={"ri_b": 'method = "ri"\npenalty_weight = 0.1'}))
    assert "target_training.per_method.ri_b.penalty_weight has no effect on method 'ri_b'" in message


# --- prior_options: the names the prior takes, and the values of a prior that reads no file ---


def test_a_misspelt_prior_option_is_refused_naming_the_table_the_key_and_the_accepted_options(tmp_path):
    message = _refused(_config(tmp_path, methods=["gaussian", "ri"],
                               per_method={"gaussian": "prior_options = { sigmaa = 1.0 }"}))
    assert "target_training.per_method.gaussian.prior_options: prior 'gaussian'" in message
    assert "'sigmaa'" in message and "accepted options: loc, scale" in message


def test_a_misspelt_option_of_a_prior_that_reads_a_file_is_refused_without_reading_one(tmp_path):
    message = _refused(_config(tmp_path, per_method={"dwp": "prior_options = { chunksize = 4 }"}))
    assert "target_training.per_method.dwp.prior_options: prior 'dwp'" in message and "'chunksize'" in message
    assert load_config(_config(tmp_path, per_method={"dwp": "prior_options = { chunk_size = 4 }"}))


def test_a_bad_value_of_a_prior_that_reads_no_file_is_refused(tmp_path):
    message = _refused(_config(tmp_path, methods=["gaussian", "ri"],
                               per_method={"gaussian": 'prior_options = { scale = "x" }'}))
    assert "target_training.per_method.gaussian.prior_options: gaussian prior: scale must be" in message
    assert load_config(_config(tmp_path, methods=["gaussian", "ri"],
                               per_method={"gaussian": "prior_options = { scale = 0.5 }"}))


def test_shared_prior_options_are_checked_against_every_listed_prior(tmp_path):
    message = _refused(_config(tmp_path, methods=["gaussian", "loguniform", "ri"],
                               target_training="prior_options = { scale = 0.5 }"))
    assert "target_training.prior_options: prior 'loguniform'" in message and "'scale'" in message
    assert "[target_training.per_method.NAME]" in message


# --- SWAG settings: messages name the values given ---


def test_a_swag_rank_too_small_is_named_with_its_own_value_not_the_default(tmp_path):
    message = _refused(_config(tmp_path, source_training="swag_epochs = 2\nswag_rank = 1"))
    assert "swag_rank must be between 2 and swag_epochs (2)" in message and message.endswith("got swag_rank 1 (default 5)")


@pytest.mark.parametrize("line", ["swag_rank = 3", "swag_lr = 0.01", "swag_epochs = 0\nswag_rank = 3"])
def test_a_swag_setting_without_swag_epochs_is_refused_as_train_refuses_it(tmp_path, line):
    key = line.splitlines()[-1].split(" =")[0]
    message = _refused(_config(tmp_path, source_training=line))
    assert f"source_training.{key} has no effect without swag_epochs" in message


def test_a_per_method_swag_rank_may_use_the_shared_swag_epochs(tmp_path):
    assert load_config(_config(tmp_path, methods=["ri", "pr"], target_training="swag_epochs = 5",
                               per_method={"ri": "swag_rank = 3"}))
    message = _refused(_config(tmp_path, per_method={"ri": "swag_rank = 3"}))
    assert "target_training.per_method.ri.swag_rank has no effect without swag_epochs (method 'ri'" in message


def test_too_few_swag_epochs_are_named_not_the_rank_nobody_set():
    with pytest.raises(ConfigError, match=r"swag_epochs must be 0 \(no SWAG\) or at least 2.*got 1$"):
        TrainConfig(swag_epochs=1)  # as `train --swag-epochs 1`, whose --swag-rank defaults to 5
    with pytest.raises(ConfigError, match=r"swag_epochs \(3\).*got swag_rank 5 \(default 5\)$"):
        TrainConfig(swag_epochs=3)


def test_swag_epochs_for_a_bayesian_target_method_are_refused_before_any_run(tmp_path):
    # the run would train in full, then refuse to collect SWAG moments of a Bayesian network
    message = _refused(_config(tmp_path, target_training="swag_epochs = 5"))
    assert "target_training.swag_epochs: SWAG collects the moments of a plain network; method 'dwp'" in message


def test_a_prior_file_in_prior_options_is_refused_where_the_experiment_gives_it(tmp_path):
    message = _refused(_config(tmp_path, per_method={"dwp": 'prior_options = { path = "mine.pt" }'}))
    assert "target_training.per_method.dwp.prior_options.path: the experiment gives prior 'dwp' its file" in message


def test_a_penalty_weight_with_no_penalty_method_listed_gets_no_hint_to_move_it(tmp_path):
    message = _refused(_config(tmp_path, methods=["ri", "pr"], target_training="penalty_weight = 0.1"))
    assert "listed here: none)" in message and "per_method" not in message


# --- the target's size against the protocol: before the source stage, which takes hours ---


def test_a_target_too_small_for_schedule_cases_is_refused_before_the_source_stage(tmp_path):
    out = tmp_path / "out"
    result = run("experiment", _config(tmp_path, protocol="schedule_cases = 2"), "--out", out, "--quiet")
    assert_one_line_error(result, "the target dataset has 3 cases", "schedule_cases 2 needs 4")
    assert not (out / "source").exists() and not (out / "data").exists()  # nothing was trained or made


# --- option values of priors that read a file: checked by the plugin's check_options, without the file ---


@pytest.mark.parametrize("method, option, message", [
    ("dwp", 'chunk_size = "x"', "chunk_size must be a positive integer or None, got 'x'"),
    ("dwp_anchored", "anchor_scale = -1.0", "anchor_scale must be a positive finite number, got -1.0"),
    ("dwp", 'fine_tune_encoder = "no"', "fine_tune_encoder must be true or false, got 'no'"),
    ("dwp", 'anchored = "no"', "anchored must be true or false, got 'no'"),
    ("swag", 'scale = "big"', "scale must be a positive finite number, got 'big'"),
])
def test_a_bad_value_of_a_file_reading_priors_option_is_refused_when_the_config_is_read(tmp_path, method, option,
                                                                                        message):
    extra = {"source_training": "swag_epochs = 2\nswag_rank = 2"} if method == "swag" else {}
    path = _config(tmp_path, methods=[method, "ri"], per_method={method: f"prior_options = {{ {option} }}"}, **extra)
    refused = _refused(path)
    assert f"target_training.per_method.{method}.prior_options" in refused and message in refused


def test_good_values_of_a_file_reading_priors_options_pass(tmp_path):
    load_config(_config(tmp_path, methods=["dwp_anchored", "ri"],
                        per_method={"dwp_anchored": "prior_options = { chunk_size = 64, anchor_scale = 2.0 }"}))


# --- a method's settings together: [target_training]'s and its own table's ---


def test_a_setting_its_method_refuses_is_refused_when_the_config_is_read(tmp_path):
    message = _refused(_config(tmp_path, per_method={"dwp": "weight_decay = 0.1"}))
    assert "target_training.per_method.dwp.weight_decay: weight_decay applies to the plain methods" in message
    shared = _refused(_config(tmp_path, target_training="weight_decay = 0.1"))  # ri takes it; dwp does not
    assert "target_training.weight_decay: weight_decay applies to the plain methods ri, pr and prf" in shared
    assert "method 'dwp' is regularised otherwise" in shared
    penalty = _refused(_config(tmp_path, methods=["l2sp", "ri"], per_method={"l2sp": "weight_decay = 0.1"}))
    assert "method 'l2sp' is regularised otherwise" in penalty and "Bayesian" not in penalty.split("otherwise")[0]


def test_a_per_method_setting_is_judged_with_the_shared_ones_it_completes(tmp_path):
    # swag_epochs = 2 alone would be refused against the default swag_rank 5; with the shared swag_rank 2 it is valid
    load_config(_config(tmp_path, target_training="swag_epochs = 4\nswag_rank = 2",
                        per_method={"ri": "swag_epochs = 2"}, methods=["ri"]))


def test_a_setting_for_the_methods_that_take_it_passes(tmp_path):
    load_config(_config(tmp_path, per_method={"ri": "weight_decay = 0.1"}))
    # a variant is judged by its base method, not by its own name, which no TrainConfig knows
    load_config(_config(tmp_path, methods=["ri_wd"], target_training="weight_decay = 0.1",
                        per_method={"ri_wd": 'method = "ri"'}))
    message = _refused(_config(tmp_path, methods=["dwp_b", "ri"], target_training="weight_decay = 0.1",
                               per_method={"dwp_b": 'method = "dwp"'}))
    assert "target_training.weight_decay" in message and "method 'dwp' is regularised otherwise" in message


def test_a_target_with_no_case_left_to_validate_on_is_refused_before_the_source_stage(tmp_path):
    out = tmp_path / "out"  # 3 cases: 1 to test, 2 to train, none left to score on
    path = _config(tmp_path, protocol='score_on = "validation"')
    path.write_text(path.read_text().replace("train_sizes = [1]", "train_sizes = [2]"))
    result = run("experiment", path, "--out", out, "--quiet")
    assert_one_line_error(result, "the target dataset has 3 cases", "1 to score on (protocol.score_on = 'validation')",
                          "needs 4")
    assert not (out / "source").exists()


# --- prior_layers = "all": only for a prior that is not fitted per layer group ---


def test_prior_layers_all_is_refused_for_a_dwp_and_taken_for_a_source_centred_gaussian(tmp_path):
    message = _refused(_config(tmp_path, methods=["dwp", "l2sp_bayes"], target_training='prior_layers = "all"'))
    assert ("target_training.prior_layers (method 'dwp'): prior 'dwp' is fitted per layer group" in message
            and "prior_layers = 'all' needs a prior that is not" in message)
    config = load_config(_config(tmp_path, methods=["dwp", "l2sp_bayes"],
                                 per_method={"l2sp_bayes": 'prior_layers = "all"'}))
    assert config.target_method_options["l2sp_bayes"]["prior_layers"] == "all"
    message = _refused(_config(tmp_path, methods=["l2sp_bayes"], target_training='prior_layers = "every"'))
    assert "prior_layers must be one of 'groups', 'all', got 'every'" in message
