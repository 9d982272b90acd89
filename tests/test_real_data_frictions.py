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
