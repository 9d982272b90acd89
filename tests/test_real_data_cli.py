"""Real data layouts through `train`, `predict` and `evaluate`: a BRATS-style folder trains on the cases of a
split file at a coarser spacing, predicts back onto the original grid and is scored against its own labels."""
import json

import nibabel as nib
import numpy as np
import pytest

from bayesprior.checkpoints import read_model_file
from bayesprior.data import read_dataset
from bayesprior.data.datasets import label_files, prediction_files
from bayesprior.data.preprocess import ct_statistics
from bayesprior.errors import ConfigError

from hostile import SMALL_UNET, assert_one_line_error, run
from training_fixtures import write_nnunet_dataset

BRATS_AFFINE = np.array([[-1.0, 0, 0, 119.5], [0, -1.0, 0, 119.5], [0, 0, 1.0, -77.0], [0, 0, 0, 1]])


def write_brats_folder(root, n=4, shape=(240, 240, 155), sequences=("flair", "t2")):
    """`n` patients under root/HGG, 1 mm voxels: an ellipsoid brain, a tumour core (label 1) inside oedema
    (label 2) with an enhancing rim (label 4); each sequence shows the tumour brighter than the brain."""
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    centre = np.array(shape) / 2
    radii = np.array(shape) * 0.38
    brain = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) < 1
    rng = np.random.default_rng(0)
    for i in range(n):
        spot = centre + rng.uniform(-0.15, 0.15, 3) * np.array(shape)
        size = min(shape) * rng.uniform(0.08, 0.14)
        distance = np.sqrt(sum(((g - c) / size) ** 2 for g, c in zip(grid, spot, strict=True)))
        seg = np.zeros(shape, np.int16)
        seg[distance < 1.6] = 2
        seg[distance < 1.0] = 4
        seg[distance < 0.7] = 1
        seg[~brain] = 0
        patient = root / "HGG" / f"Brats18_TST_{i}_1"
        patient.mkdir(parents=True)
        for k, sequence in enumerate(sequences):
            image = np.where(brain, 80 + 20 * k, 0) + np.where(seg > 0, 150 + 30 * k, 0)
            save(image.astype(np.int16), patient / f"{patient.name}_{sequence}.nii.gz")
        save(seg, patient / f"{patient.name}_seg.nii.gz")
    return sorted(p.name for p in (root / "HGG").iterdir())


def save(array, path, affine=BRATS_AFFINE):
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, path)


@pytest.mark.slow
def test_a_brats_folder_trains_on_a_split_at_4mm_predicts_on_the_original_grid_and_evaluates(tmp_path):
    data = tmp_path / "BRATS"
    ids = write_brats_folder(data)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ids[:2], "val": ids[2:3], "test": ids[3:]}))
    trained = run("train", data, tmp_path / "run", "--channel", "t2", "--spacing", "4", "--split-file", split,
                  "--epochs", "1", "--arch-option", f"widths={json.dumps(SMALL_UNET['widths'])}", "--no-progress",
                  "--no-cache")
    assert trained.exit_code == 0, trained.output
    record = read_model_file(tmp_path / "run" / "model.pt")["extra"]
    assert record["preprocess"]["spacing"] == [4.0, 4.0, 4.0]
    assert (record["train_cases"], record["val_cases"]) == (ids[:2], ids[2:3])
    assert record["channel"] == "t2"  # predict reads this sequence of a dataset folder without being told

    predicted = run("predict", tmp_path / "run" / "model.pt", data, tmp_path / "preds", "--channel", "t2",
                    "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    assert sorted(p.name for p in (tmp_path / "preds").glob("*.nii.gz")) == [f"{i}.nii.gz" for i in ids]
    mask = nib.load(tmp_path / "preds" / f"{ids[3]}.nii.gz")
    source = nib.load(data / "HGG" / ids[3] / f"{ids[3]}_t2.nii.gz")
    assert mask.shape == (240, 240, 155)
    np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)
    assert int(mask.header["qform_code"]) == int(source.header["qform_code"]) == 1

    evaluated = run("evaluate", tmp_path / "preds", data, "--out-dir", tmp_path / "eval")
    assert evaluated.exit_code == 0, evaluated.output
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["n_cases"] == summary["n_scored"] == 4

    one = run("predict", tmp_path / "run" / "model.pt", data / "HGG" / ids[0], tmp_path / "one", "--no-progress")
    assert one.exit_code == 0, one.output
    assert [p.name for p in (tmp_path / "one").glob("*.nii.gz")] == [f"{ids[0]}.nii.gz"]


def test_a_patient_folder_gives_one_image_of_the_chosen_sequence_named_by_the_patient(tmp_path):
    ids = write_brats_folder(tmp_path / "BRATS", n=2, shape=(24, 24, 16))
    patient = tmp_path / "BRATS" / "HGG" / ids[1]
    (listed,) = prediction_files(patient, channel="flair")
    assert (listed.case_id, listed.image_path.name, listed.label_path) == (ids[1], f"{ids[1]}_flair.nii.gz", None)
    with pytest.raises(ConfigError, match="--channel"):
        prediction_files(patient)


def test_brats_labels_are_found_through_the_layout(tmp_path):
    ids = write_brats_folder(tmp_path / "BRATS", n=2, shape=(24, 24, 16))
    labels = label_files(tmp_path / "BRATS")
    assert {k: v.name for k, v in labels.items()} == {i: f"{i}_seg.nii.gz" for i in ids}


def test_a_plain_folder_of_several_channels_needs_a_channel_index(tmp_path):
    for case in ("a", "b"):
        for channel in (0, 1):
            save(np.ones((8, 8, 8), np.float32), tmp_path / f"{case}_{channel:04d}.nii.gz")
    with pytest.raises(ConfigError, match="--channel"):
        prediction_files(tmp_path)
    chosen = prediction_files(tmp_path, channel="1")
    assert [(c.case_id, c.image_path.name) for c in chosen] == [("a", "a_0001.nii.gz"), ("b", "b_0001.nii.gz")]


@pytest.mark.parametrize("content, fragment", [
    ("not json", "not valid JSON"),
    (json.dumps({"train": ["Brats18_TST_0_1", "nobody"]}), "'nobody'"),
    (json.dumps({"train": ["Brats18_TST_0_1"], "val": ["Brats18_TST_0_1"]}), "both 'train' and 'val'"),
    (json.dumps({"train": ["Brats18_TST_0_1"], "tests": []}), "unknown key"),
    (json.dumps(["Brats18_TST_0_1"]), "JSON object"),
])
def test_a_bad_split_file_is_one_line_naming_the_file(tmp_path, content, fragment):
    write_brats_folder(tmp_path / "BRATS", n=2, shape=(24, 24, 16))
    split = tmp_path / "split.json"
    split.write_text(content)
    result = run("train", tmp_path / "BRATS", tmp_path / "run", "--channel", "t2", "--split-file", split,
                 "--epochs", "1", "--no-progress", "--no-cache")
    assert_one_line_error(result, "split.json", fragment)


def test_train_on_the_cases_given_by_id(tmp_path, tiny_architecture):
    ids = write_brats_folder(tmp_path / "BRATS", n=3, shape=(24, 24, 16))
    result = run("train", tmp_path / "BRATS", tmp_path / "run", "--channel", "t2", "--cases", f"{ids[0]},{ids[2]}",
                 "--architecture", tiny_architecture, "--epochs", "1", "--no-progress", "--no-cache")
    assert result.exit_code == 0, result.output
    assert read_model_file(tmp_path / "run" / "model.pt")["extra"]["train_cases"] == [ids[0], ids[2]]


def test_several_sequences_without_a_channel_name_the_cli_option(tmp_path):
    write_brats_folder(tmp_path / "BRATS", n=2, shape=(24, 24, 16))
    result = run("train", tmp_path / "BRATS", tmp_path / "run", "--epochs", "1", "--no-progress", "--no-cache")
    assert_one_line_error(result, "several sequences (t2, flair)", "choose one with --channel")


def test_ct_statistics_travel_in_the_model_file_and_predict_needs_no_flag(tmp_path, tiny_architecture):
    write_nnunet_dataset(tmp_path / "data", n=3, size=16)
    result = run("train", tmp_path / "data", tmp_path / "run", "--intensity", "ct", "--architecture",
                 tiny_architecture, "--epochs", "1", "--no-progress", "--no-cache")
    assert result.exit_code == 0, result.output
    recorded = read_model_file(tmp_path / "run" / "model.pt")["extra"]["preprocess"]
    assert recorded["intensity_statistics"] == pytest.approx(ct_statistics(read_dataset(tmp_path / "data")))
    predicted = run("predict", tmp_path / "run" / "model.pt", tmp_path / "data" / "imagesTr", tmp_path / "preds",
                    "--no-progress")
    assert predicted.exit_code == 0, predicted.output
    manifest = json.loads((tmp_path / "preds" / "bayesprior_predictions.json").read_text())
    assert json.dumps(recorded["intensity_statistics"], sort_keys=True) in json.dumps(manifest, sort_keys=True)
    other = run("predict", tmp_path / "run" / "model.pt", tmp_path / "data" / "imagesTr", tmp_path / "preds2",
                "--spacing", "2", "--no-progress")
    assert_one_line_error(other, "--spacing", "records")


def test_samples_on_a_deterministic_model_say_no_uncertainty_maps_are_written(tmp_path, tiny_architecture):
    write_nnunet_dataset(tmp_path / "data", n=2, size=16)
    result = run("train", tmp_path / "data", tmp_path / "run", "--architecture", tiny_architecture, "--epochs", "1",
                 "--no-progress", "--no-cache")
    assert result.exit_code == 0, result.output
    predicted = run("predict", tmp_path / "run" / "model.pt", tmp_path / "data" / "imagesTr", tmp_path / "preds",
                    "--samples", "4", "--no-progress")
    assert_one_line_error(predicted, "--samples 4", "deterministic", "no uncertainty")
