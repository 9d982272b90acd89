"""A BRATS-style folder through the README's real-data commands, end to end from the command line (issue 24):
each test is one friction a user met, and shows it gone. Tiny data: 24x24x16 patients at 1 mm, a tiny network."""
import json

import nibabel as nib
import numpy as np
import pytest

from hostile import assert_one_line_error, run
from test_real_data_cli import write_brats_folder

SHAPE = (24, 24, 16)


def _brats(tmp_path, n=4):
    """A BRATS folder of `n` patients and a split file: two training cases, one validation case, the rest test."""
    ids = write_brats_folder(tmp_path / "BRATS", n=n, shape=SHAPE)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:2], "val": ids[2:3], "test": ids[3:]}))
    return tmp_path / "BRATS", ids, split


def _train(data, run_dir, architecture, *options):
    result = run("train", data, run_dir, "--channel", "t2", "--architecture", architecture, "--epochs", "1",
                 "--no-progress", "--no-cache", *options)
    assert result.exit_code == 0, result.output
    return run_dir / "model.pt"


def _masks(folder):
    return sorted(p.name for p in folder.glob("*.nii.gz") if "_probability" not in p.name and "_entropy" not in p.name)


# ------------------------------------------------------------------------- 1. predict and evaluate on a split
def test_predict_and_evaluate_score_only_the_test_cases_of_the_split_file(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    model = _train(data, tmp_path / "run", tiny_architecture, "--split-file", split)

    predicted = run("predict", model, data, tmp_path / "preds", "--split-file", split, "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    assert _masks(tmp_path / "preds") == [f"{ids[3]}.nii.gz"]
    assert "'test' cases of" in predicted.output

    evaluated = run("evaluate", tmp_path / "preds", data, "--split-file", split, "--out-dir", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == 1 and summary["scored_cases"] == [ids[3]]
    assert summary["case_choice"]["split_file"] == str(split.resolve())
    assert summary["case_choice"]["subset"] == "test" and summary["case_choice"]["cases"] == [ids[3]]
    assert "1/1 cases of the 'test' cases of" in evaluated.output


def test_evaluate_leaves_out_predictions_of_cases_the_split_does_not_choose(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    model = _train(data, tmp_path / "run", tiny_architecture, "--split-file", split)
    assert run("predict", model, data, tmp_path / "preds", "--no-progress").exit_code == 0  # every case
    evaluated = run("evaluate", tmp_path / "preds", data, "--split-file", split, "--subset", "val")
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((tmp_path / "preds" / "summary.json").read_text())
    assert summary["scored_cases"] == [ids[2]] and summary["case_choice"]["subset"] == "val"


def test_predict_takes_cases_by_id_and_refuses_ids_outside_the_chosen_list(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    model = _train(data, tmp_path / "run", tiny_architecture, "--split-file", split)
    one = run("predict", model, data, tmp_path / "one", "--cases", ids[1], "--no-progress")
    assert one.exit_code == 0, one.output
    assert _masks(tmp_path / "one") == [f"{ids[1]}.nii.gz"]
    outside = run("predict", model, data, tmp_path / "p", "--split-file", split, "--cases", ids[0])
    assert_one_line_error(outside, "--cases", ids[0], "'test' list of")
    unknown = run("evaluate", tmp_path / "one", data, "--cases", "Brats18_nobody")
    assert_one_line_error(unknown, "'Brats18_nobody'", "--cases or --split-file")
    lonely = run("evaluate", tmp_path / "one", data, "--subset", "val")
    assert_one_line_error(lonely, "--subset", "without --split-file")


# ------------------------------------------------------------------------------------------ 4. a sense of time
def test_epoch_lines_show_seconds_per_epoch_and_the_time_left(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    result = run("train", data, tmp_path / "run", "--channel", "t2", "--architecture", tiny_architecture,
                 "--epochs", "3", "--split-file", split, "--no-progress", "--no-cache")
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and all(" s/epoch" in line for line in epochs)
    assert all("left" in line for line in epochs[:2]) and "left" not in epochs[2]  # nothing left after the last


def test_a_run_folder_keeps_every_command_that_trained_it_and_info_shows_them(tmp_path, tiny_architecture,
                                                                              monkeypatch):
    data, ids, split = _brats(tmp_path)
    for epochs in ("1", "2"):  # the second resumes the first and trains one more epoch
        monkeypatch.setattr("sys.argv", ["bayesprior", "train", "BRATS", "run", "--epochs", epochs])
        _train(data, tmp_path / "run", tiny_architecture, "--split-file", split, "--epochs", epochs)
    commands = json.loads((tmp_path / "run" / "config.json").read_text())["commands"]
    assert [(c["from_epoch"], c["max_epochs"]) for c in commands] == [(0, 1), (1, 2)]
    for name in ("model.pt", "checkpoint.pt"):
        info = run("info", tmp_path / "run" / name)
        assert info.exit_code == 0, info.output
        history = [line for line in info.output.splitlines() if line.strip().startswith("history")]
        assert len(history) == 2, info.output
        assert "1. from epoch 0, --epochs 1" in history[0] and "2. from epoch 1, --epochs 2" in history[1]
        assert "--epochs 2" in history[1].split(": ", 1)[1]  # the command line itself


# ------------------------------------------------------------------------ 6. probability maps of every model
def test_a_deterministic_model_writes_softmax_maps_and_evaluate_scores_their_calibration(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    model = _train(data, tmp_path / "run", tiny_architecture, "--split-file", split)  # RI: deterministic
    predicted = run("predict", model, data, tmp_path / "preds", "--split-file", split, "--probabilities",
                    "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    names = sorted(p.name for p in (tmp_path / "preds").glob("*.nii.gz"))
    assert names == sorted(f"{ids[3]}{suffix}.nii.gz" for suffix in ("", "_probability", "_entropy"))
    probability = np.asarray(nib.load(tmp_path / "preds" / f"{ids[3]}_probability.nii.gz").dataobj)
    mask = np.asarray(nib.load(tmp_path / "preds" / f"{ids[3]}.nii.gz").dataobj)
    assert 0 <= probability.min() and probability.max() <= 1
    assert ((probability > 0.5) == (mask > 0)).all()
    evaluated = run("evaluate", tmp_path / "preds", data, "--split-file", split, "--probabilities", tmp_path / "preds")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "preds" / "summary.json").read_text())["mean"]["brier"] is not None
    refused = run("predict", model, data, tmp_path / "p2", "--samples", "3")
    assert_one_line_error(refused, "--samples 3", "deterministic", "--probabilities")


# ---------------------------------------------------------------------------------------- 7. the small ones
def test_predict_lines_name_the_case_and_the_pace(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    model = _train(data, tmp_path / "run", tiny_architecture, "--split-file", split)
    predicted = run("predict", model, data, tmp_path / "preds", "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    lines = [line for line in predicted.stderr.splitlines() if line.startswith("predicting ")]
    assert [line.split(" (")[0] for line in lines] == [f"predicting {k}/4 case {i}" for k, i in enumerate(ids, 1)]
    assert all(" s/case" in line for line in lines)


# ------------------------------------------------------------------- 2. preprocessing provenance and checks
def _info_row(text, label):
    return [line.strip()[len(label):].strip() for line in text.splitlines() if line.strip().startswith(label + "  ")]


def _source_and_prior(tmp_path, data, architecture, split):
    """A source model trained as the demo's (min-max, no crop, no spacing), its kernels and a fitted prior file."""
    source = _train(data, tmp_path / "src", architecture, "--no-crop", "--intensity", "minmax", "--split-file", split)
    harvested = run("harvest", source, "--out", tmp_path / "kernels.npz", "--norm-threshold", "0")
    assert harvested.exit_code == 0, harvested.output
    fitted = run("fit-prior", tmp_path / "kernels.npz", "--out", tmp_path / "prior.pt", "--max-epochs", "2",
                 "--latent-dim", "2", "--hidden", "4", "--quiet")
    assert fitted.exit_code == 0, fitted.output
    return source, tmp_path / "prior.pt"


def test_model_and_prior_files_record_the_grid_and_preprocessing_and_info_shows_them(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    source, prior = _source_and_prior(tmp_path, data, tiny_architecture, split)
    model_info = run("info", source).output
    assert _info_row(model_info, "trained at") == ["spacing 1 mm (measured), shape 24x24x16 (measured)"]
    prior_info = run("info", prior).output
    assert _info_row(prior_info, "source preprocessing") == [
        "intensity=minmax, crop_nonzero=False, spacing=1 mm (measured), channel=t2"]
    resampled = _train(data, tmp_path / "t", tiny_architecture, "--spacing", "4.2", "--split-file", split)
    assert _info_row(run("info", resampled).output, "trained at") == [
        "spacing 4.2 mm (resampled), shape 8x8x8 (measured)"]


def test_train_from_a_source_and_prior_of_other_preprocessing_warns_naming_both_and_the_keys(tmp_path,
                                                                                              tiny_architecture):
    data, ids, split = _brats(tmp_path)
    source, prior = _source_and_prior(tmp_path, data, tiny_architecture, split)
    target = ("--intensity", "zscore", "--spacing", "4.2", "--split-file", split)
    for method, options in (("pr", ("--source", source)), ("gaussian", ("--source", source)),
                            ("dwp", ("--source", source, "--prior-file", prior))):
        result = run("train", data, tmp_path / f"run_{method}", "--channel", "t2", "--architecture",
                     tiny_architecture, "--epochs", "1", "--no-progress", "--no-cache", "--method", method,
                     *options, *target)
        assert result.exit_code == 0, result.output
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: preprocessing")]
        assert len(warnings) == (2 if method == "dwp" else 1), result.stderr
        assert "differs in intensity, crop_nonzero, spacing" in warnings[0] and str(source) in warnings[0]
        assert "intensity=minmax, crop_nonzero=False, spacing=1 mm" in warnings[0]
        assert "this run on intensity=zscore, crop_nonzero=True, spacing=4.2 mm (resampled)" in warnings[0]
        if method == "dwp":
            assert f"the source model {source} of the prior file {prior} was trained on" in warnings[1]
    same = run("train", data, tmp_path / "same", "--channel", "t2", "--architecture", tiny_architecture, "--epochs",
               "1", "--no-progress", "--no-cache", "--method", "pr", "--source", source, "--no-crop",
               "--split-file", split)
    assert same.exit_code == 0 and "warning: preprocessing" not in same.stderr, same.stderr


def test_an_old_source_file_without_a_record_still_loads_and_says_not_recorded(tmp_path, tiny_architecture):
    from bayesprior.checkpoints import save_model
    from bayesprior.plugins import build_architecture

    data, ids, split = _brats(tmp_path)
    save_model(build_architecture(tiny_architecture), tmp_path / "old.pt", extra={"preprocess": {"intensity": "minmax"}})
    assert _info_row(run("info", tmp_path / "old.pt").output, "trained at") == ["not recorded"]
    save_model(build_architecture(tiny_architecture), tmp_path / "older.pt")  # no preprocessing at all
    result = run("train", data, tmp_path / "run", "--channel", "t2", "--architecture", tiny_architecture, "--epochs",
                 "1", "--no-progress", "--no-cache", "--method", "pr", "--source", tmp_path / "older.pt")
    assert result.exit_code == 0, result.output
    assert f"the source model {tmp_path / 'older.pt'} records no preprocessing" in result.stderr


def test_a_source_network_with_other_input_channels_is_refused_in_one_line(tmp_path, tiny_architecture):
    from bayesprior.checkpoints import save_model
    from bayesprior.plugins import build_architecture

    data, ids, split = _brats(tmp_path)
    save_model(build_architecture(tiny_architecture, in_channels=2), tmp_path / "two.pt")
    result = run("train", data, tmp_path / "run", "--channel", "t2", "--architecture", tiny_architecture, "--epochs",
                 "1", "--no-progress", "--no-cache", "--method", "pr", "--source", tmp_path / "two.pt")
    assert_one_line_error(result, "two.pt", "in_channels 2 there, 1 here")


def test_dwp_without_a_prior_file_names_the_option(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    result = run("train", data, tmp_path / "run", "--channel", "t2", "--architecture", tiny_architecture,
                 "--method", "dwp")
    assert_one_line_error(result, "--prior-file")
    assert "path=" not in result.stderr


def test_an_experiment_from_an_existing_zoo_and_prior_warns_and_takes_a_float_spacing(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    source, prior = _source_and_prior(tmp_path, data, tiny_architecture, split)
    config = tmp_path / "experiment.toml"
    config.write_text(f"""
[source]
models = ["{source}"]
[prior]
file = "{prior}"
[target]
path = "{data}"
channel = "t2"
[preprocess]
spacing = 4.2
intensity = "zscore"
[architecture]
name = "{tiny_architecture}"
[target_training]
max_epochs = 1
[protocol]
train_sizes = [1]
splits = 1
methods = ["dwp", "pr"]
test_cases = ["{ids[3]}"]
score_grid = "original"
""")
    result = run("experiment", config, "--out", tmp_path / "exp", "--quiet")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "exp" / "experiment.json").read_text())["preprocess"]["spacing"] == [4.2] * 3
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: preprocessing differs")]
    assert len(warnings) == 2, result.output  # the source model (PR's start) and the prior's source model
    assert all("intensity, crop_nonzero, spacing" in line and "the target on intensity=zscore" in line
               for line in warnings)
