"""Hostile and bad inputs to `bayesprior evaluate`: strict by default, as nnU-Net's evaluator. A missing
prediction, another grid or a value that is no label is an error, never scored."""
import json

import numpy as np
import pytest

from hostile import assert_ok, assert_one_line_error, nifti, run
from training_fixtures import oblique_lps_affine


@pytest.fixture
def folders(tmp_path):
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    for i in range(3):
        label = np.zeros((8, 8, 8), np.uint8)
        label[2:5, 2:5, 2:5] = 1
        nifti(labels / f"case{i}.nii.gz", label)
        nifti(preds / f"case{i}.nii.gz", label)
    return preds, labels


def test_matching_folders_are_scored(folders):
    preds, labels = folders
    assert_ok(run("evaluate", preds, labels))
    assert json.loads((preds / "summary.json").read_text())["mean"]["dsc"] == 1.0


def test_the_images_of_a_label_folders_imagests_are_never_read_as_labels(folders):
    preds, labels = folders
    images = labels.parent / "test_images" / "imagesTs"
    for path in labels.iterdir():
        (images / path.name).parent.mkdir(parents=True, exist_ok=True)
        path.rename(images / path.name)
    assert_one_line_error(run("evaluate", preds, images.parent), "has no label for predicted case(s)")


def test_a_label_without_a_prediction_is_an_error(folders):
    preds, labels = folders
    (preds / "case2.nii.gz").unlink()
    assert_one_line_error(run("evaluate", preds, labels), "no prediction for 1 labelled case(s) ['case2']",
                          "--allow-missing")


def test_allow_missing_scores_the_others_and_lists_the_missing_ones(folders):
    preds, labels = folders
    (preds / "case2.nii.gz").unlink()
    result = run("evaluate", preds, labels, "--allow-missing")
    assert_ok(result)
    assert "1 labelled case(s) have no prediction" in result.stderr and "case2" in result.stderr
    summary = json.loads((preds / "summary.json").read_text())
    assert summary["missing_predictions"] == ["case2"] and summary["n_cases"] == 2


def test_a_prediction_on_another_grid_is_an_error(folders):
    preds, labels = folders
    shifted = oblique_lps_affine()
    shifted[:3, 3] += 5.0
    nifti(preds / "case1.nii.gz", np.zeros((8, 8, 8), np.uint8), affine=shifted)
    assert_one_line_error(run("evaluate", preds, labels), "case1.nii.gz", "another grid")


def test_a_prediction_of_another_shape_is_an_error(folders):
    preds, labels = folders
    nifti(preds / "case1.nii.gz", np.zeros((8, 8, 9), np.uint8))
    assert_one_line_error(run("evaluate", preds, labels), "case1.nii.gz", "differs from its label's")


@pytest.mark.parametrize("values, fragment", [
    (np.full((8, 8, 8), 0.7, np.float32), "non-integer"),
    (np.full((8, 8, 8), np.nan, np.float32), "NaN or infinite"),
    (np.full((8, 8, 8), -1, np.int16), "negative"),
    (np.full((8, 8, 8), 3, np.uint8), "holds values [3] that no label holds"),
])
def test_a_prediction_that_is_not_a_mask_of_label_values_is_an_error(folders, values, fragment):
    preds, labels = folders
    nifti(preds / "case0.nii.gz", values)
    assert_one_line_error(run("evaluate", preds, labels), "case0.nii.gz", fragment)


def test_a_prediction_without_a_label_is_an_error(folders):
    preds, labels = folders
    nifti(preds / "extra.nii.gz", np.zeros((8, 8, 8), np.uint8))
    assert_one_line_error(run("evaluate", preds, labels), "no label for predicted case(s) ['extra']")


def test_a_prediction_that_is_not_nifti_is_an_error(folders):
    preds, labels = folders
    (preds / "case0.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    assert_one_line_error(run("evaluate", preds, labels), "case0.nii.gz", "prediction:")


def test_an_output_folder_under_a_regular_file_is_one_line_naming_it(folders, tmp_path):
    preds, labels = folders
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run("evaluate", preds, labels, "--out-dir", tmp_path / "file" / "eval"), "Not a directory")


# ------------------------------------------------------------------------------- one model per folder
def _manifest(preds, owners):
    """A prediction manifest saying which run (model "a" or "b") wrote each file of `owners`."""
    runs = {name: {"model": f"{name}.pt", "model_sha256": name * 64, "settings": {"overlap": 0.5}, "preprocess": {}}
            for name in set(owners.values())}
    files = {f"{case}.nii.gz": {"run": owner, "input": f"{case}_0000.nii.gz"} for case, owner in owners.items()}
    (preds / "bayesprior_predictions.json").write_text(json.dumps({"format": "bayesprior.predictions/1",
                                                                   "runs": runs, "files": files}))


def test_predictions_of_two_models_are_refused_unless_allowed(folders):
    preds, labels = folders
    _manifest(preds, {"case0": "a", "case1": "a", "case2": "b"})
    assert_one_line_error(run("evaluate", preds, labels), "holds predictions of 2 models or settings",
                          "model a.pt (SHA-256 aaaaaaaaaaaa) -> b.pt (SHA-256 bbbbbbbbbbbb)", "--allow-mixed-models")
    assert not (preds / "summary.json").exists()
    assert_ok(run("evaluate", preds, labels, "--allow-mixed-models"))
    assert json.loads((preds / "summary.json").read_text())["n_cases"] == 3


def test_predictions_of_one_model_are_scored(folders):
    preds, labels = folders
    _manifest(preds, {"case0": "a", "case1": "a", "case2": "a"})
    assert_ok(run("evaluate", preds, labels))


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_an_msd_label_named_outside_the_label_folder_needs_allow_outside_paths(tmp_path, where):
    """A dataset.json that names a label outside the dataset (../ or absolute) is refused as its images are."""
    label = np.zeros((8, 8, 8), np.uint8)
    label[2:5, 2:5, 2:5] = 1
    root, preds = tmp_path / "msd", tmp_path / "preds"
    nifti(root / "labelsTr" / "a.nii.gz", label)
    nifti(root / "imagesTr" / "a.nii.gz", label.astype(np.float32))
    outside = nifti(tmp_path / "elsewhere" / "b.nii.gz", label)
    named = str(outside) if where == "absolute" else "../elsewhere/b.nii.gz"
    entries = [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"},
               {"image": "imagesTr/a.nii.gz".replace("a.", "b."), "label": named}]
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "T2"}, "training": entries,
                                                   "labels": {"0": "background", "1": "lesion"}}))
    for case in ("a", "b"):
        nifti(preds / f"{case}.nii.gz", label)
    assert_one_line_error(run("evaluate", preds, root), "lies outside the dataset folder", "--allow-outside-paths")
    assert not (preds / "summary.json").exists()
    assert_ok(run("evaluate", preds, root, "--allow-outside-paths"))
    assert json.loads((preds / "summary.json").read_text())["n_scored"] == 2
