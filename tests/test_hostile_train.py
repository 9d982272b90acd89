"""Hostile and bad inputs to `bayesprior train` (and the data it reads): each ends in one clear error line,
or in a documented, correct result. No option is silently ignored, no NaN is trained from or into."""
import json
import os

import numpy as np
import pytest
import torch

import bayesprior.training.trainer as trainer
from bayesprior.checkpoints import save_model
from bayesprior.data.datasets import read_dataset
from bayesprior.data.preprocess import PreprocessConfig, prepare_dataset
from bayesprior.errors import CheckpointError, ConfigError, DataError, NonFiniteError
from bayesprior.kernels import KernelBank
from bayesprior.locks import folder_lock
from bayesprior.training.config import TrainConfig
from bayesprior.training.trainer import train

from hostile import SMALL_UNET, assert_ok, assert_one_line_error, dataset, model_file, nifti, run, write_json
from training_fixtures import TinyNet, make_cases

FAST = ["--epochs", "1", "--arch-option", f"widths={json.dumps(SMALL_UNET['widths'])}", "--no-progress", "--no-cache"]


@pytest.fixture
def data(tmp_path):
    return dataset(tmp_path / "ds", n=4)


def _train(data, run_dir, *options):
    return run("train", data, run_dir, *FAST, *options)


# ------------------------------------------------------------------------------------ NaN and Inf
def test_a_source_model_with_nan_weights_is_refused_before_the_data_are_read(data, tmp_path):
    source = model_file(tmp_path / "nan.pt", nan=True)
    assert_one_line_error(_train(data, tmp_path / "run", "--method", "pr", "--source", source),
                          "nan.pt", "NaN or infinite")
    assert not (tmp_path / "run" / "model.pt").exists()


def test_a_prior_file_with_nan_weights_is_refused(data, tmp_path):
    from bayesprior.plugins import architecture_groups, build_architecture
    from bayesprior_dwp import KernelVAE, save_prior_file

    groups = architecture_groups("unet3d", build_architecture("unet3d", **SMALL_UNET))
    vae = KernelVAE((3, 3, 3), latent_dim=2, hidden=4)
    with torch.no_grad():
        vae.decoder.net[0].weight.fill_(float("nan"))
    save_prior_file(tmp_path / "prior.pt", {g: (vae, [0.0]) for g in groups}, KernelBank({}, {"groups": {}}))
    assert_one_line_error(_train(data, tmp_path / "run", "--method", "dwp", "--prior-file", tmp_path / "prior.pt"),
                          "NaN or infinite", "prior file")


def _nan_from_epoch(monkeypatch, epoch_of_nan):
    real = trainer.batch_data_loss
    calls = {"n": 0}

    def loss(logits, labels, config):
        calls["n"] += 1
        value, n = real(logits, labels, config)
        return (value * float("nan") if calls["n"] >= epoch_of_nan else value), n

    monkeypatch.setattr(trainer, "batch_data_loss", loss)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny_architecture, tmp_path, monkeypatch):
    _nan_from_epoch(monkeypatch, 3)  # one step per epoch (2 cases, batch 2): epoch 3 goes NaN
    config = TrainConfig(architecture=tiny_architecture, max_epochs=4, progress=False)
    with pytest.raises(NonFiniteError, match="epoch 3, step 1: the loss is nan.*--skip-nonfinite-loss") as info:
        train(config, make_cases(2, size=8), None, tmp_path / "run")
    assert str(info.value).startswith(str(tmp_path / "run")) and "\n" not in str(info.value)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 2


def test_skipping_non_finite_batches_counts_them_in_the_log(tiny_architecture, tmp_path, monkeypatch):
    real = trainer.batch_data_loss
    calls = {"n": 0}

    def every_other_nan(logits, labels, config):
        calls["n"] += 1
        value, n = real(logits, labels, config)
        return (value * float("nan") if calls["n"] % 2 == 0 else value), n

    monkeypatch.setattr(trainer, "batch_data_loss", every_other_nan)
    config = TrainConfig(architecture=tiny_architecture, max_epochs=2, batch_size=1, progress=False,
                         skip_nonfinite_loss=True)
    train(config, make_cases(2, size=8), None, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [entry["skipped"] for entry in log] == [1, 1] and all(np.isfinite(e["loss"]) for e in log)


def test_training_cases_with_nan_voxels_are_refused(tiny_architecture, tmp_path):
    cases = make_cases(2, size=8)
    cases[1].image[0, 0, 0] = np.inf
    with pytest.raises(DataError, match="case01.*NaN or infinite"):
        train(TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False), cases, None, tmp_path / "r")


# ------------------------------------------------------------------------------------- resuming
def test_resuming_on_other_data_is_an_error_naming_the_difference(tiny_architecture, tmp_path):
    config = TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False)
    train(config, make_cases(3, size=8), None, tmp_path / "run")
    longer = TrainConfig(architecture=tiny_architecture, max_epochs=2, progress=False)
    with pytest.raises(ConfigError, match="other data .*1 gone.*case02"):
        train(longer, make_cases(2, size=8), None, tmp_path / "run")
    changed = make_cases(3, size=8)
    changed[0].label[:] = 0
    with pytest.raises(ConfigError, match="same case ids, but their images or labels changed"):
        train(longer, changed, None, tmp_path / "run")


def test_resuming_from_a_moved_folder_with_a_moved_source_gives_the_uninterrupted_weights(tiny_architecture, tmp_path):
    save_model(TinyNet(), tmp_path / "a" / "source.pt")
    cases = make_cases(3, size=8)

    def config(root, epochs):
        return TrainConfig(architecture=tiny_architecture, method="pr", source=str(root / "source.pt"),
                           max_epochs=epochs, progress=False)

    train(config(tmp_path / "a", 1), cases, None, tmp_path / "a" / "run")
    (tmp_path / "a").rename(tmp_path / "b")
    resumed = train(config(tmp_path / "b", 2), cases, None, tmp_path / "b" / "run")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "source.pt").write_bytes((tmp_path / "b" / "source.pt").read_bytes())
    whole = train(config(tmp_path / "c", 2), cases, None, tmp_path / "c" / "run")
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (resumed, whole))
    assert all(torch.equal(a[k], b[k]) for k in a)
    recorded = json.loads((tmp_path / "b" / "run" / "config.json").read_text())["train_config"]
    assert recorded["source"] == str((tmp_path / "b" / "source.pt").resolve())


def test_resuming_from_a_source_file_whose_content_changed_is_an_error(tiny_architecture, tmp_path):
    save_model(TinyNet(), tmp_path / "source.pt")
    config = TrainConfig(architecture=tiny_architecture, method="pr", source=str(tmp_path / "source.pt"),
                         max_epochs=1, progress=False)
    train(config, make_cases(2, size=8), None, tmp_path / "run")
    torch.manual_seed(9)
    save_model(TinyNet(), tmp_path / "source.pt")
    with pytest.raises(ConfigError, match="other files \\(source"):
        train(config, make_cases(2, size=8), None, tmp_path / "run")


def test_a_truncated_checkpoint_is_a_one_line_error(data, tmp_path):
    assert_ok(_train(data, tmp_path / "run"))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    assert_one_line_error(_train(data, tmp_path / "run", "--epochs", "2"), "checkpoint.pt", "Remove it")


def test_a_torn_last_log_line_is_dropped_on_resume(tiny_architecture, tmp_path):
    config = TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False)
    train(config, make_cases(2, size=8), None, tmp_path / "run")
    with open(tmp_path / "run" / "log.jsonl", "a") as log:
        log.write('{"epoch": 2, "lo')  # killed while writing
    train(TrainConfig(architecture=tiny_architecture, max_epochs=2, progress=False), make_cases(2, size=8), None,
          tmp_path / "run")
    assert [json.loads(line)["epoch"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_damaged_log_line_before_the_last_is_an_error(tiny_architecture, tmp_path):
    config = TrainConfig(architecture=tiny_architecture, max_epochs=2, progress=False)
    train(config, make_cases(2, size=8), None, tmp_path / "run")
    lines = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    (tmp_path / "run" / "log.jsonl").write_text("garbage\n" + lines[1] + "\n")
    with pytest.raises(CheckpointError, match="line 1 is not a log record"):
        train(TrainConfig(architecture=tiny_architecture, max_epochs=3, progress=False), make_cases(2, size=8),
              None, tmp_path / "run")


def test_stale_temporary_files_of_ours_are_removed_and_others_kept(tiny_architecture, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".checkpoint.pt.a1b2c3d4.tmp").write_bytes(b"half a checkpoint")
    (run_dir / ".notes.tmp").write_text("not ours")
    train(TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False), make_cases(2, size=8), None, run_dir)
    assert not (run_dir / ".checkpoint.pt.a1b2c3d4.tmp").exists() and (run_dir / ".notes.tmp").exists()


def test_a_run_folder_in_use_is_refused(data, tmp_path):
    with folder_lock(tmp_path / "run", "run folder"):
        assert_one_line_error(_train(data, tmp_path / "run"), "run folder is in use by another bayesprior process")


# ------------------------------------------------------------------------- options without effect
@pytest.mark.parametrize("options, fragment", [
    (["--method", "ri", "--prior-option", "scale=0.1"], "--prior-option has no effect with --method ri"),
    (["--method", "ri", "--kl-weight", "0.5"], "--kl-weight has no effect"),
    (["--method", "ri", "--init-from-prior"], "--init-from-prior has no effect"),
    (["--method", "gaussian", "--foreground-fraction", "0.5"], "--foreground-fraction has no effect without --patch"),
    (["--amp-dtype", "fp16"], "--amp-dtype has no effect without --amp"),
    (["--no-cache", "--cache-dir", "somewhere"], "--cache-dir has no effect with --no-cache"),
    (["--method", "ri", "--posterior-std-ratio", "0.1"], "--posterior-std-ratio has no effect with --method ri"),
    (["--method", "ri", "--log-variance-init", "-14"], "--log-variance-init has no effect with --method ri"),
    (["--method", "gaussian", "--posterior-std-ratio", "0.1", "--log-variance-init", "-14"],
     "--log-variance-init has no effect with --posterior-std-ratio"),
    (["--method", "gaussian", "--posterior-std-ratio", "0"], "Invalid value for '--posterior-std-ratio'"),
])
def test_an_option_without_effect_is_an_error(data, tmp_path, options, fragment):
    result = _train(data, tmp_path / "run", *options)
    assert result.exit_code == 2
    assert_one_line_error(result, fragment)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_kl_weight_that_is_not_finite_is_refused_before_training(data, tmp_path, value):
    # (NaN once trained a step, then stopped on a NaN loss)
    assert_one_line_error(_train(data, tmp_path / "run", "--method", "gaussian", "--kl-weight", value),
                          "kl_weight must be a finite number")
    assert not (tmp_path / "run").exists()


def test_a_prior_file_with_a_deterministic_method_is_an_error(data, tmp_path):
    (tmp_path / "prior.pt").write_bytes(b"x")
    assert_one_line_error(_train(data, tmp_path / "run", "--prior-file", tmp_path / "prior.pt"),
                          "--prior-file has no effect with --method ri")


def test_a_source_for_random_initialisation_is_an_error(data, tmp_path):
    source = model_file(tmp_path / "source.pt")
    assert_one_line_error(_train(data, tmp_path / "run", "--source", source), "--source has no effect")


def test_an_init_scale_for_weights_from_a_source_is_an_error(data, tmp_path):
    source = model_file(tmp_path / "source.pt")
    assert_one_line_error(_train(data, tmp_path / "run", "--method", "pr", "--source", source, "--init-scale", "0.1"),
                          "--init-scale has no effect when the weights start from --source")


def test_a_validation_fraction_that_holds_out_no_case_is_an_error(data, tmp_path):
    assert_one_line_error(_train(data, tmp_path / "run", "--val-fraction", "0.1"), "holds out no case of 4")


def test_inputs_below_the_networks_minimum_size_are_refused_clearly(tmp_path):
    small = dataset(tmp_path / "small", n=2, size=8)
    assert_one_line_error(_train(small, tmp_path / "run"), "below the network's minimum", "16")


@pytest.mark.parametrize("option, fragment", [
    (["--spacing", "1e6"], "--spacing 1e+06 resamples case 'case0"),
    (["--resample-shape", "1,1,1"], "--resample-shape 1,1,1 resamples case 'case0"),
])
def test_a_resampling_below_the_networks_minimum_is_blamed_on_its_option(data, tmp_path, option, fragment):
    line = assert_one_line_error(_train(data, tmp_path / "run", *option), fragment, "from 16x16x16 to 1x1x1 voxels",
                                 "below the smallest input unet3d")
    assert "--shape" not in line


def test_a_spacing_above_the_voxel_limit_is_refused_before_anything_is_allocated(data, tmp_path, monkeypatch):
    import bayesprior.data.preprocess as preprocess

    monkeypatch.setattr(preprocess, "_resample", lambda *args, **kwargs: pytest.fail("resampled anyway"))
    assert_one_line_error(_train(data, tmp_path / "run", "--spacing", "0.01"), "--spacing 0.01 asks for",
                          "for case 'case00'", "give a coarser --spacing")


def test_a_run_folder_under_a_regular_file_is_one_line_naming_it(data, tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(_train(data, tmp_path / "file" / "run"), "Not a directory")


# ------------------------------------------------------------------------------- dataset folders
def _msd(root, entries, **extra):
    for name in {e[0] for e in entries if not os.path.isabs(e[0]) and not e[0].startswith("..")}:
        nifti(root / name, np.ones((16, 16, 16), np.float32))
        nifti(root / name.replace("imagesTr", "labelsTr"), np.zeros((16, 16, 16), np.uint8))
    write_json(root / "dataset.json", {"modality": {"0": "T2"}, "labels": {"0": "background", "1": "tumour"},
                                       "training": [{"image": i, "label": l} for i, l in entries], **extra})
    return root


def test_an_msd_list_naming_a_case_twice_is_an_error(tmp_path):
    root = _msd(tmp_path / "msd", [("imagesTr/a.nii.gz", "labelsTr/a.nii.gz")] * 2)
    assert_one_line_error(_train(root, tmp_path / "run"), "case id 'a' is listed twice")


def test_two_files_of_one_name_in_two_folders_are_an_error_naming_both(tmp_path):
    root = _msd(tmp_path / "msd", [("imagesTr/one/a.nii.gz", "labelsTr/one/a.nii.gz"),
                                   ("imagesTr/two/a.nii.gz", "labelsTr/two/a.nii.gz")])
    assert_one_line_error(_train(root, tmp_path / "run"), "two/a.nii.gz", "is also the id of", "one/a.nii.gz")


def test_a_brats_patient_in_two_grade_folders_is_an_error(tmp_path):
    for grade in ("HGG", "LGG"):
        nifti(tmp_path / "brats" / grade / "P1" / "P1_t2.nii.gz", np.ones((16, 16, 16), np.float32))
        nifti(tmp_path / "brats" / grade / "P1" / "P1_seg.nii.gz", np.zeros((16, 16, 16), np.uint8))
    assert_one_line_error(_train(tmp_path / "brats", tmp_path / "run"), "case id 'P1'")


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_msd_paths_outside_the_dataset_need_allow_outside_paths(tmp_path, where):
    outside = nifti(tmp_path / "elsewhere" / "b.nii.gz", np.ones((16, 16, 16), np.float32))
    nifti(tmp_path / "elsewhere" / "b_seg.nii.gz", np.zeros((16, 16, 16), np.uint8))
    image = str(outside) if where == "absolute" else "../elsewhere/b.nii.gz"
    label = image.replace("b.nii.gz", "b_seg.nii.gz")
    root = _msd(tmp_path / "msd", [("imagesTr/a.nii.gz", "labelsTr/a.nii.gz"), (image, label)])
    assert_one_line_error(_train(root, tmp_path / "run"), "lies outside the dataset folder", "--allow-outside-paths")
    cases = read_dataset(root, allow_outside_paths=True)
    assert [c.case_id for c in cases] == ["a", "b"]


def _link_outside(path, tmp_path):
    """Replace the file at `path` by a relative symbolic link to a file outside the dataset ("secret")."""
    secret = tmp_path / "outside" / f"secret_{path.name}"
    secret.parent.mkdir(exist_ok=True)
    path.rename(secret)
    path.symlink_to(os.path.relpath(secret, path.parent))
    return path


@pytest.mark.parametrize("layout", ["nnunet", "msd", "brats"])
def test_a_symbolic_link_to_a_file_outside_the_dataset_is_refused_in_every_layout(tmp_path, layout):
    if layout == "nnunet":
        root = dataset(tmp_path / "ds", n=2)
        linked = root / "imagesTr" / "case01_0000.nii.gz"
    elif layout == "msd":
        root = _msd(tmp_path / "ds", [(f"imagesTr/{c}.nii.gz", f"labelsTr/{c}.nii.gz") for c in "ab"])
        linked = root / "labelsTr" / "b.nii.gz"
    else:
        for patient in ("P1", "P2"):
            nifti(tmp_path / "ds" / "HGG" / patient / f"{patient}_t2.nii.gz", np.ones((16, 16, 16), np.float32))
            nifti(tmp_path / "ds" / "HGG" / patient / f"{patient}_seg.nii.gz", np.zeros((16, 16, 16), np.uint8))
        root = tmp_path / "ds"
        linked = root / "HGG" / "P2" / "P2_t2.nii.gz"
    _link_outside(linked, tmp_path)
    with pytest.raises(DataError, match="lies outside the dataset folder") as info:
        read_dataset(root)
    message = str(info.value)
    assert str(linked) in message and "secret_" in message and "--allow-outside-paths" in message
    assert len(read_dataset(root, allow_outside_paths=True)) == 2  # linked on purpose: the way to read it


def test_train_refuses_a_linked_image_in_one_line_naming_the_link_and_its_target(data, tmp_path):
    _link_outside(data / "imagesTr" / "case01_0000.nii.gz", tmp_path)
    assert_one_line_error(_train(data, tmp_path / "run"), "case01_0000.nii.gz", "resolves to",
                          "lies outside the dataset folder", "--allow-outside-paths")
    assert not (tmp_path / "run").exists()


def test_a_dataset_folder_that_is_itself_a_link_is_read(tmp_path):
    real = dataset(tmp_path / "real", n=2)
    (tmp_path / "linked").symlink_to(real)
    assert [c.case_id for c in read_dataset(tmp_path / "linked")] == ["case00", "case01"]


def test_the_cache_notices_a_changed_file_outside_the_dataset_folder(tmp_path):
    outside = nifti(tmp_path / "elsewhere" / "b.nii.gz", np.ones((16, 16, 16), np.float32))
    nifti(tmp_path / "elsewhere" / "b_seg.nii.gz", np.zeros((16, 16, 16), np.uint8))
    root = _msd(tmp_path / "msd", [("imagesTr/a.nii.gz", "labelsTr/a.nii.gz"),
                                   (str(outside), str(tmp_path / "elsewhere" / "b_seg.nii.gz"))])
    config = PreprocessConfig(crop_nonzero=False, intensity="none")
    first = prepare_dataset(root, config, cache_dir=tmp_path / "cache", allow_outside_paths=True)
    nifti(outside, np.full((16, 16, 16), 3.0, np.float32))
    os.utime(outside, ns=(1, 1))  # a different modification time, whatever the clock's resolution
    second = prepare_dataset(root, config, cache_dir=tmp_path / "cache", allow_outside_paths=True)
    assert first[1].image.max() == 1.0 and second[1].image.max() == 3.0


def test_an_undeclared_extra_channel_file_is_an_error(data, tmp_path):
    nifti(data / "imagesTr" / "case00_0001.nii.gz", np.ones((16, 16, 16), np.float32))
    assert_one_line_error(_train(data, tmp_path / "run"), "case00_0001.nii.gz", "declares 1 channel")


def test_an_image_without_a_channel_suffix_is_an_error(data, tmp_path):
    nifti(data / "imagesTr" / "stray.nii.gz", np.ones((16, 16, 16), np.float32))
    assert_one_line_error(_train(data, tmp_path / "run"), "stray.nii.gz", "no channel suffix")


@pytest.mark.parametrize("content, fragment", [
    ("{'channel_names': oops", "dataset.json is not valid JSON"),
    ("[1, 2]", "dataset.json holds a JSON list, not an object"),
    ('{"name": "x"}', "dataset.json has the keys name"),
    (None, "there is no dataset.json"),
])
def test_a_bad_dataset_json_is_described(data, tmp_path, content, fragment):
    if content is None:
        (data / "dataset.json").unlink()
    else:
        (data / "dataset.json").write_text(content)
    assert_one_line_error(_train(data, tmp_path / "run"), "no known dataset layout recognised", fragment)


def test_a_training_set_read_twice_from_one_listing_is_never_silently_doubled(tmp_path):
    root = _msd(tmp_path / "msd", [("imagesTr/a.nii.gz", "labelsTr/a.nii.gz")] * 2)
    with pytest.raises(DataError, match="listed twice"):
        read_dataset(root)


# ------------------------------------------------------------------------------------- split files
MILLION = 10**6


def _split_file(path, **lists):
    path.write_text(json.dumps(lists))
    return path


def test_a_split_file_of_a_million_ids_is_checked_and_its_repeat_named(tmp_path):
    from bayesprior.training.splits import read_split_file

    ids = [f"case{i:07d}" for i in range(MILLION)]
    split = read_split_file(_split_file(tmp_path / "split.json", train=ids[:-10], test=ids[-10:]))
    assert len(split.train) == MILLION - 10 and split.test[0] == "case0999990"
    with pytest.raises(DataError, match=r"lists case\(s\) \['case0000007'\] twice in 'train'"):
        read_split_file(_split_file(tmp_path / "twice.json", train=[*ids, "case0000007"]))


def test_train_with_a_split_file_of_a_million_unknown_ids_names_them_in_one_line(data, tmp_path):
    split = _split_file(tmp_path / "split.json", train=[f"case{i:07d}" for i in range(MILLION)])
    assert_one_line_error(_train(data, tmp_path / "run", "--split-file", split),
                          "split.json", "names case(s) the dataset does not have: 'case0000000'")
    assert not (tmp_path / "run").exists()


def test_a_split_file_above_the_size_limit_is_refused_before_it_is_parsed(data, tmp_path, monkeypatch):
    import bayesprior.training.splits as splits

    monkeypatch.setattr(splits, "MAX_SPLIT_FILE_BYTES", 100)
    split = _split_file(tmp_path / "split.json", train=[f"case{i:02d}" for i in range(4)] * 5)
    assert_one_line_error(_train(data, tmp_path / "run", "--split-file", split),
                          "split.json", "more than the 100 a split file may have")
