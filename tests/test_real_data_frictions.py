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
