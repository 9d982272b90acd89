"""Hostile and bad inputs to `bayesprior predict`: each ends in one clear error line, or in a documented,
correct result. Nothing that is not ours is overwritten."""
import json
import os

import numpy as np
import pytest
import torch

from bayesprior.checkpoints import save_model
from bayesprior.inference.prediction_folder import MANIFEST_NAME
from bayesprior.kernels import KernelBank
from bayesprior.locks import folder_lock
from bayesprior.plugins import architecture_groups, build_architecture
from bayesprior.training.methods import prior_rules
from bayesprior.wrap import bayesianize

from hostile import (
    SMALL_UNET,
    assert_ok,
    assert_one_line_error,
    bayesian_model_file,
    dataset,
    model_file,
    nifti,
    run,
    write_json,
)

NO_PROGRESS = "--no-progress"


@pytest.fixture
def data(tmp_path):
    return dataset(tmp_path / "ds", n=2)


@pytest.fixture
def model(tmp_path):
    return model_file(tmp_path / "model.pt")


def _copy_images(source, target):
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _mtimes(folder):
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()}


def test_the_input_folder_is_refused_as_output(data, model):
    before = _mtimes(data / "imagesTr")
    assert_one_line_error(run("predict", model, data / "imagesTr", data / "imagesTr", NO_PROGRESS),
                          "folder of the input images")
    assert _mtimes(data / "imagesTr") == before


def test_the_label_folder_beside_the_inputs_is_refused_and_every_label_stays(data, model):
    before = _mtimes(data / "labelsTr")
    assert_one_line_error(run("predict", model, data / "imagesTr", data / "labelsTr", NO_PROGRESS), "label folder")
    assert _mtimes(data / "labelsTr") == before


def test_the_label_folder_of_a_dataset_given_by_its_root_is_refused(data, model):
    _copy_images(data / "imagesTr", data / "imagesTs")
    assert_one_line_error(run("predict", model, data, data / "labelsTr", NO_PROGRESS), "label folder")


def test_a_same_named_file_that_bayesprior_did_not_write_is_refused_and_kept(data, model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "case00.nii.gz").write_bytes(b"someone's work")
    assert_one_line_error(run("predict", model, data / "imagesTr", out, NO_PROGRESS), "did not write", "--overwrite")
    assert (out / "case00.nii.gz").read_bytes() == b"someone's work"
    assert not (out / "case01.nii.gz").exists()  # refused before anything was written


def test_overwrite_replaces_a_foreign_file_and_records_it(data, model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "case00.nii.gz").write_bytes(b"someone's work")
    assert_ok(run("predict", model, data / "imagesTr", out, NO_PROGRESS, "--overwrite"))
    assert (out / "case00.nii.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert set(json.loads((out / MANIFEST_NAME).read_text())["files"]) == {"case00.nii.gz", "case01.nii.gz"}


def test_the_manifest_records_the_model_hash_and_settings_and_a_rerun_replaces_our_own_files(data, model, tmp_path):
    out = tmp_path / "out"
    assert_ok(run("predict", model, data / "imagesTr", out, NO_PROGRESS, "--roi", "16,16,16"))
    first = (out / "case00.nii.gz").stat().st_mtime_ns
    assert_ok(run("predict", model, data / "imagesTr", out, NO_PROGRESS, "--roi", "16,16,16"))  # ours: replaced
    assert (out / "case00.nii.gz").stat().st_mtime_ns != first
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    (run_record,) = manifest["runs"].values()
    from bayesprior.hashing import file_sha256

    assert run_record["model_sha256"] == file_sha256(model) and run_record["settings"]["roi"] == [16, 16, 16]
    assert manifest["files"]["case00.nii.gz"]["input"].endswith("case00_0000.nii.gz")


# ------------------------------------------------------------------- one folder, one model, one set of settings
def _one_case(data, tmp_path):
    """A folder holding the image of case00 only."""
    images = tmp_path / "one"
    images.mkdir()
    (images / "case00_0000.nii.gz").write_bytes((data / "imagesTr" / "case00_0000.nii.gz").read_bytes())
    return images


def test_another_model_into_a_folder_of_predictions_is_refused_naming_both(data, model, tmp_path):
    from bayesprior.hashing import file_sha256

    out = tmp_path / "out"
    assert_ok(run("predict", model, data / "imagesTr", out, NO_PROGRESS))
    before = _mtimes(out)
    other = model_file(tmp_path / "other.pt", preprocess={"crop_nonzero": False, "intensity": "zscore"})
    assert_one_line_error(run("predict", other, _one_case(data, tmp_path), out, NO_PROGRESS),
                          "holds predictions of another model", f"model {model} (SHA-256 {file_sha256(model)[:12]})",
                          f"{other} (SHA-256 {file_sha256(other)[:12]})", "--overwrite")
    assert _mtimes(out) == before


def test_other_settings_into_a_folder_of_predictions_are_refused_naming_the_change(data, model, tmp_path):
    out = tmp_path / "out"
    assert_ok(run("predict", model, data / "imagesTr", out, NO_PROGRESS))
    before = _mtimes(out)
    assert_one_line_error(run("predict", model, _one_case(data, tmp_path), out, NO_PROGRESS, "--overlap", "0.25"),
                          "other settings", "overlap 0.5 -> 0.25", "case00.nii.gz")
    assert _mtimes(out) == before


def test_overwrite_replaces_every_prediction_of_another_model(data, model, tmp_path):
    out = tmp_path / "out"
    assert_ok(run("predict", model, data / "imagesTr", out, NO_PROGRESS))
    other = model_file(tmp_path / "other.pt", preprocess={"crop_nonzero": False, "intensity": "zscore"})
    assert_ok(run("predict", other, _one_case(data, tmp_path), out, NO_PROGRESS, "--overwrite"))
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["case00.nii.gz"]  # model A's case01 is gone too
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    (run_record,) = manifest["runs"].values()
    assert run_record["model"] == str(other) and list(manifest["files"]) == ["case00.nii.gz"]


def test_runs_that_differ_only_in_the_device_make_the_same_predictions():
    from bayesprior.inference.prediction_folder import same_predictor

    run = {"model_sha256": "a" * 64, "settings": {"overlap": 0.5, "device": "cpu"}, "preprocess": {}}
    assert same_predictor(run, {**run, "settings": {"overlap": 0.5, "device": "cuda:0"}})
    assert not same_predictor(run, {**run, "settings": {"overlap": 0.25, "device": "cpu"}})
    assert not same_predictor(run, {**run, "model_sha256": "b" * 64})


def test_two_inputs_with_one_case_id_are_an_error_naming_both(model, tmp_path):
    images = tmp_path / "images"
    nifti(images / "a.nii", np.ones((16, 16, 16), np.float32))
    nifti(images / "a.nii.gz", np.ones((16, 16, 16), np.float32))
    line = assert_one_line_error(run("predict", model, images, tmp_path / "out", NO_PROGRESS), "both name case 'a'")
    assert "a.nii " in line + " " and "a.nii.gz" in line


def test_an_input_named_like_another_inputs_probability_map_is_an_error(tmp_path):
    images = tmp_path / "images"
    nifti(images / "x.nii.gz", np.ones((16, 16, 16), np.float32))
    nifti(images / "x_probability.nii.gz", np.ones((16, 16, 16), np.float32))
    model = bayesian_model_file(tmp_path / "bayes.pt")
    assert_one_line_error(run("predict", model, images, tmp_path / "out", NO_PROGRESS, "--samples", "2"),
                          "would both be written as x_probability.nii.gz")


def test_a_model_with_nan_weights_is_refused(data, tmp_path):
    model = model_file(tmp_path / "nan.pt", nan=True)
    assert_one_line_error(run("predict", model, data / "imagesTr", tmp_path / "out", NO_PROGRESS),
                          "NaN or infinite", "init_conv.weight")
    assert not (tmp_path / "out").exists()


def test_samples_for_a_deterministic_model_are_an_error_not_ignored(data, model, tmp_path):
    assert_one_line_error(run("predict", model, data / "imagesTr", tmp_path / "out", NO_PROGRESS, "--samples", "4"),
                          "--samples 4 has no effect")


def test_a_damaged_manifest_is_an_error_not_a_fresh_start(data, model, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text("{not json")
    assert_one_line_error(run("predict", model, data / "imagesTr", out, NO_PROGRESS), "prediction manifest")


def test_seeded_samples_repeat_and_another_seed_differs(data, tmp_path):
    model = bayesian_model_file(tmp_path / "bayes.pt")
    maps = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        assert_ok(run("predict", model, data / "imagesTr", tmp_path / name, NO_PROGRESS, "--samples", "2", "--seed", seed))
        maps[name] = (tmp_path / name / "case00_probability.nii.gz").read_bytes()
    assert maps["a"] == maps["b"] and maps["a"] != maps["c"]


def test_an_input_below_the_networks_minimum_size_is_padded_and_predicted_on_its_grid(model, tmp_path):
    images = tmp_path / "images"
    nifti(images / "tiny.nii.gz", np.random.default_rng(0).random((5, 6, 7)).astype(np.float32))
    assert_ok(run("predict", model, images, tmp_path / "out", NO_PROGRESS))
    import nibabel as nib

    mask = nib.load(tmp_path / "out" / "tiny.nii.gz")
    assert mask.shape == (5, 6, 7) and np.allclose(mask.affine, nib.load(images / "tiny.nii.gz").affine)


def test_a_folder_without_nifti_files_is_an_error(model, tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("predict", model, tmp_path / "empty", tmp_path / "out", NO_PROGRESS), "holds no NIfTI")


def test_a_truncated_model_file_is_an_error(data, model, tmp_path):
    cut = tmp_path / "cut.pt"
    cut.write_bytes(model.read_bytes()[:1000])
    assert_one_line_error(run("predict", cut, data / "imagesTr", tmp_path / "out", NO_PROGRESS), "cannot be read")


def test_a_model_file_with_a_wrong_state_is_an_error(data, tmp_path):
    path = tmp_path / "odd.pt"
    torch.save({"format": "bayesprior.model/1", "kind": "deterministic", "architecture": None,
                "state_dict": [1, 2, 3], "extra": {}}, path)
    assert_one_line_error(run("predict", path, data / "imagesTr", tmp_path / "out", NO_PROGRESS), "'state_dict'")


def test_an_output_folder_under_a_regular_file_is_one_line_naming_it(data, model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(run("predict", model, data / "imagesTr", blocker / "out", NO_PROGRESS),
                          str(blocker), "Not a directory")


def test_an_unwritable_output_is_one_line_naming_it(data, model, tmp_path, monkeypatch):
    real = os.replace

    def refuse(src, dst, *args, **kwargs):
        if str(dst).endswith(".nii.gz"):
            raise PermissionError(13, "Permission denied", str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refuse)
    assert_one_line_error(run("predict", model, data / "imagesTr", tmp_path / "out", NO_PROGRESS),
                          "case00.nii.gz", "Permission denied")


def test_a_folder_another_prediction_writes_into_is_refused(data, model, tmp_path):
    with folder_lock(tmp_path / "out", "prediction folder"):
        assert_one_line_error(run("predict", model, data / "imagesTr", tmp_path / "out", NO_PROGRESS),
                              "in use by another bayesprior process", f"pid {os.getpid()}")
    assert_ok(run("predict", model, data / "imagesTr", tmp_path / "out", NO_PROGRESS))  # free again


def test_a_dwp_model_predicts_from_any_folder_without_its_prior_file(data, tmp_path, monkeypatch):
    from bayesprior_dwp import KernelVAE, save_prior_file

    net = build_architecture("unet3d", **SMALL_UNET)
    groups = architecture_groups("unet3d", net)
    prior_path = tmp_path / "prior.pt"
    save_prior_file(prior_path, {g: (KernelVAE((3, 3, 3), latent_dim=2, hidden=4), [0.0]) for g in groups},
                    KernelBank({}, {"groups": {}}))
    model = bayesianize(net, prior_rules("dwp", groups, str(prior_path)), groups=groups, init_from_prior=True)
    save_model(model, tmp_path / "dwp.pt", extra={"preprocess": {"crop_nonzero": False}})
    prior_path.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert_ok(run("predict", tmp_path / "dwp.pt", data / "imagesTr", "out", NO_PROGRESS, "--samples", "2"))
    assert (elsewhere / "out" / "case01_entropy.nii.gz").is_file()


# ------------------------------------------------------------------ test images are never swapped for others
def test_an_undeclared_channel_file_among_the_test_images_is_an_error_not_the_training_images(data, model, tmp_path):
    tests = _copy_images(data / "imagesTr", data / "imagesTs")
    nifti(tests / "case00_0001.nii.gz", np.ones((16, 16, 16), np.float32))
    assert_one_line_error(run("predict", model, data, tmp_path / "out", NO_PROGRESS),
                          "imagesTs/case00_0001.nii.gz", "declares 1 channel")
    assert not (tmp_path / "out").exists()


def _msd_with_tests(root, tests):
    for name in ("a", "b"):
        nifti(root / "imagesTr" / f"{name}.nii.gz", np.ones((16, 16, 16), np.float32))
        nifti(root / "labelsTr" / f"{name}.nii.gz", np.zeros((16, 16, 16), np.uint8))
    nifti(root / "imagesTs" / "t.nii.gz", np.ones((16, 16, 16), np.float32))
    write_json(root / "dataset.json", {"modality": {"0": "T2"}, "labels": {"0": "background", "1": "tumour"},
                                       "training": [{"image": f"imagesTr/{n}.nii.gz", "label": f"labelsTr/{n}.nii.gz"}
                                                    for n in ("a", "b")], "test": tests})
    return root


def test_an_msd_test_list_with_a_missing_file_is_an_error_naming_it(model, tmp_path):
    root = _msd_with_tests(tmp_path / "msd", ["imagesTs/t.nii.gz", "imagesTs/gone.nii.gz"])
    assert_one_line_error(run("predict", model, root, tmp_path / "out", NO_PROGRESS),
                          "imagesTs/gone.nii.gz", "listed in dataset.json but missing")
    assert not (tmp_path / "out").exists()


def test_an_msd_test_entry_outside_the_dataset_is_refused_not_swapped_for_the_training_images(model, tmp_path):
    nifti(tmp_path / "elsewhere" / "x.nii.gz", np.ones((16, 16, 16), np.float32))
    root = _msd_with_tests(tmp_path / "msd", ["imagesTs/t.nii.gz", "../elsewhere/x.nii.gz"])
    assert_one_line_error(run("predict", model, root, tmp_path / "out", NO_PROGRESS),
                          "elsewhere/x.nii.gz", "lies outside the dataset folder", "--allow-outside-paths")
    assert not (tmp_path / "out").exists()
    assert_ok(run("predict", model, root, tmp_path / "out", NO_PROGRESS, "--allow-outside-paths"))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["t.nii.gz", "x.nii.gz"]


@pytest.mark.parametrize("layout", ["nnunet", "msd"])
def test_a_dataset_without_test_images_is_an_error_that_says_how_to_predict_the_training_images(model, tmp_path,
                                                                                                layout):
    root = dataset(tmp_path / "ds", n=2) if layout == "nnunet" else _msd_with_tests(tmp_path / "ds", [])
    if layout == "msd":
        meta = json.loads((root / "dataset.json").read_text())
        del meta["test"]
        write_json(root / "dataset.json", meta)
    assert_one_line_error(run("predict", model, root, tmp_path / "out", NO_PROGRESS),
                          "declares no test images", str(root / "imagesTr"))
    assert not (tmp_path / "out").exists()


def test_an_empty_msd_test_list_is_an_error(model, tmp_path):
    root = _msd_with_tests(tmp_path / "msd", [])
    assert_one_line_error(run("predict", model, root, tmp_path / "out", NO_PROGRESS), "no test cases found")


@pytest.mark.parametrize("test_folder", [False, True])
def test_a_plain_folder_holding_training_images_only_is_an_error(data, model, tmp_path, test_folder):
    (data / "dataset.json").unlink()  # no layout: a plain folder with imagesTr (and an empty imagesTs)
    if test_folder:
        (data / "imagesTs").mkdir()
    fragment = "imagesTs: holds no NIfTI file" if test_folder else "give their folder"
    assert_one_line_error(run("predict", model, data, tmp_path / "out", NO_PROGRESS), fragment)
    assert not (tmp_path / "out").exists()


def test_the_training_images_are_predicted_when_their_folder_is_given(data, model, tmp_path):
    assert_ok(run("predict", model, data / "imagesTr", tmp_path / "out", NO_PROGRESS))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["case00.nii.gz", "case01.nii.gz"]


# ---------------------------------------------------------------------- resampling sizes, checked first
@pytest.fixture
def unrecorded_model(tmp_path):
    """A model file that records no preprocessing: predict's --spacing and --resample-shape apply."""
    save_model(build_architecture("unet3d", **SMALL_UNET), tmp_path / "bare.pt")
    return tmp_path / "bare.pt"


@pytest.fixture
def no_resampling(monkeypatch):
    """Fail the test, without allocating anything, if a case is resampled at all."""
    import bayesprior.data.preprocess as preprocess

    def refuse(*args, **kwargs):
        raise AssertionError("a case was resampled although its size was refused")

    monkeypatch.setattr(preprocess, "_resample", refuse)


@pytest.mark.parametrize("option, fragment", [
    (["--spacing", "0.01"], "--spacing 0.01 asks for"),
    (["--resample-shape", "4000,4000,4000"], "--resample-shape 4000,4000,4000 asks for"),
])
def test_a_resampling_above_the_voxel_limit_is_refused_naming_the_option_before_it_allocates(
        data, unrecorded_model, tmp_path, no_resampling, option, fragment):
    assert_one_line_error(run("predict", unrecorded_model, data / "imagesTr", tmp_path / "out", NO_PROGRESS, *option),
                          fragment, "more than the 268,435,456 an image may have")
    assert not list((tmp_path / "out").glob("*.nii.gz"))


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_dataset_whose_dataset_json_cannot_be_read_is_an_error_not_a_plain_folder(data, model, tmp_path, command):
    _copy_images(data / "imagesTr", data / "imagesTs")
    (data / "dataset.json").write_text("{'channel_names': oops")
    if command == "predict":
        result = run("predict", model, data, tmp_path / "out", NO_PROGRESS)
    else:
        (tmp_path / "out").mkdir()
        result = run("evaluate", tmp_path / "out", data)
    assert_one_line_error(result, "dataset.json", "is not valid JSON", "layout cannot be recognised")
    assert not list((tmp_path / "out").glob("*"))
