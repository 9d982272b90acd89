"""A BRATS-style folder through the README's real-data commands, end to end from the command line (issue 24):
each test is one friction a user met, and shows it gone. Tiny data: 24x24x16 patients at 1 mm, a tiny network."""
import json
import shlex
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_real_data_cli import write_brats_folder

from hostile import assert_one_line_error, run

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
    save_model(build_architecture(tiny_architecture), tmp_path / "old.pt",
               extra={"preprocess": {"intensity": "minmax"}})
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
    result = json.loads((tmp_path / "exp" / "results" / "split0_n1_dwp.json").read_text())
    assert result["test_cases"] == [ids[3]] and result["calibration_region"].startswith("body mask")
    table = (tmp_path / "exp" / "table.md").read_text()
    assert "expected calibration error (15 bins) in the body mask" in table and "in the band" in table


# ------------------------------------------------------------------ 5. calibration where it is informative
def test_calibration_is_scored_in_the_body_mask_and_the_band_with_every_voxel_kept(tmp_path, tiny_architecture):
    from scipy import ndimage
    from test_evaluation_calibration import reference_ece

    data, ids, split = _brats(tmp_path)
    model = _train(data, tmp_path / "run", tiny_architecture, "--split-file", split)
    assert run("predict", model, data, tmp_path / "preds", "--probabilities", "--no-progress").exit_code == 0
    evaluated = run("evaluate", tmp_path / "preds", data, "--probabilities", tmp_path / "preds")
    assert evaluated.exit_code == 0, evaluated.output
    assert "in the region: body mask (the image's non-zero voxels): ECE" in evaluated.output
    assert "in the band (label, prediction and 5 mm around): ECE" in evaluated.output
    summary = json.loads((tmp_path / "preds" / "summary.json").read_text())
    assert summary["calibration"]["region"] == "body mask (the image's non-zero voxels)"
    assert summary["calibration"]["no_image"] == []
    for row in summary["metric_per_case"]:
        case = row["case_id"]
        p = np.asarray(nib.load(tmp_path / "preds" / f"{case}_probability.nii.gz").dataobj, dtype=np.float64)
        mask = np.asarray(nib.load(tmp_path / "preds" / f"{case}.nii.gz").dataobj) > 0
        y = np.asarray(nib.load(data / "HGG" / case / f"{case}_seg.nii.gz").dataobj) > 0
        body = np.asarray(nib.load(data / "HGG" / case / f"{case}_t2.nii.gz").dataobj) != 0
        band = ndimage.distance_transform_edt(~(y | mask)) <= 5  # 1 mm voxels
        assert row["ece"] == pytest.approx(reference_ece(p[body], y[body]), abs=1e-9)
        assert row["ece_band"] == pytest.approx(reference_ece(p[band], y[band]), abs=1e-9)
        assert row["ece_all"] == pytest.approx(reference_ece(p, y), abs=1e-9)
        assert row["brier_all"] <= row["brier"]  # the air around the head only dilutes the error


def test_a_tie_is_never_bolded_and_old_all_voxel_results_are_not_read_as_the_body_masks():
    from bayesprior.experiment.report import markdown_table, with_calibration_regions

    results = [{"split": 0, "train_size": 5, "method": m, "dsc": d, "ece": 0.002} for m, d in
               (("dwp", 0.7), ("pr", 0.7004), ("ri", 0.6))]
    dsc = markdown_table(results, "dsc", ["dwp", "pr", "ri"], [5])
    assert "**" not in dsc  # 0.700 and 0.700 as shown: no winner
    assert "**0.002**" not in markdown_table(results, "ece", ["dwp", "pr", "ri"], [5], lower_is_better=True)
    results[2]["dsc"] = 0.8
    assert "**0.800**" in markdown_table(results, "dsc", ["dwp", "pr", "ri"], [5])
    old = with_calibration_regions(results[0])
    assert old["ece"] is None and old["ece_all"] == 0.002
    new = {**results[0], "calibration_region": "body mask (the image's non-zero voxels)"}
    assert with_calibration_regions(new) == new


# ----------------------------------------------------- 3. the README's real-data section, followed literally
README = Path(__file__).resolve().parents[1] / "README.md"
#: what the test adds to every `train` line of the README: a tiny network and one short epoch on tiny data
TINY_TRAINING = ("--no-cache", "--no-progress", "--epochs", "1", "--steps-per-epoch", "1")


def _real_data_commands():
    """The command lines of the README's real-data block, continuation lines joined."""
    text = README.read_text()
    block = text[text.index("Real data goes through"):]
    block = block[block.index("```bash\n") + len("```bash\n"):]
    block = block[:block.index("```")]
    return [line for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _brats_with_ids(root, ids):
    """A tiny BRATS folder whose patients have the ids `ids` (those of the README's split file)."""
    written = write_brats_folder(root, n=len(ids), shape=SHAPE)
    for old, new in zip(written, ids, strict=True):
        folder = root / "HGG" / old
        for file in folder.iterdir():
            file.rename(folder / file.name.replace(old, new))
        folder.rename(root / "HGG" / new)


def test_the_readme_real_data_section_followed_literally_scores_the_test_cases_warns_and_trains_dwp(
        tmp_path, tiny_architecture, monkeypatch):
    commands = _real_data_commands()
    split = json.loads(commands[0].split("'")[1])
    monkeypatch.chdir(tmp_path)
    _brats_with_ids(tmp_path / "data" / "BRATS2018", [*split["train"], *split["val"], *split["test"]])
    demo = tmp_path / "bayesprior-demo" / "source"  # a stand-in for the demo's source network and prior
    subprocess.run(commands[0], shell=True, check=True)
    source, prior = _source_and_prior(tmp_path, tmp_path / "data" / "BRATS2018", tiny_architecture, "split.json")
    (demo / "runs" / "seed0").mkdir(parents=True)
    source.rename(demo / "runs" / "seed0" / "model.pt")
    prior.rename(demo / "prior_dwp.pt")

    outputs = {}
    for line in commands[1:]:
        args = shlex.split(line, comments=True)
        assert args[0] == "bayesprior", line
        if args[1] == "train":
            args += ["--architecture", tiny_architecture, *TINY_TRAINING]
        result = run(*args[1:])
        assert result.exit_code == 0, (line, result.output)
        outputs[args[1] + " " + args[3]] = result

    dwp = json.loads((tmp_path / "runs" / "dwp" / "config.json").read_text())["train_config"]
    assert (dwp["kl_weight"], dwp["forward_mode"], dwp["log_variance_init"]) == (0.001, "sample", -14.0)
    assert dwp["source"].endswith("bayesprior-demo/source/runs/seed0/model.pt") and not dwp["init_from_prior"]
    for run_dir in ("runs/pr", "runs/dwp"):
        assert "warning: preprocessing differs in intensity, crop_nonzero" in outputs[f"train {run_dir}"].stderr
    assert "warning: preprocessing" not in outputs["train runs/ri"].stderr
    assert _masks(tmp_path / "preds" / "dwp") == [f"{case}.nii.gz" for case in split["test"]]
    summary = json.loads((tmp_path / "preds" / "dwp" / "summary.json").read_text())
    assert summary["scored_cases"] == split["test"] and summary["case_choice"]["subset"] == "test"
    assert summary["calibration"]["region"].startswith("body mask")


def _bayesian_settings(run_dir):
    config = json.loads((run_dir / "config.json").read_text())["train_config"]
    return config["kl_weight"], config["forward_mode"], config["log_variance_init"]


def test_a_bayesian_method_defaults_to_the_benchmark_recipe_and_says_so(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    result = run("train", data, tmp_path / "run", "--channel", "t2", "--architecture", tiny_architecture,
                 "--method", "gaussian", "--epochs", "1", "--no-progress", "--no-cache")
    assert result.exit_code == 0, result.output
    assert _bayesian_settings(tmp_path / "run") == (0.001, "sample", -14.0)
    assert "gaussian: --recipe benchmark gives --kl-weight 0.001, --forward-mode sample, --log-variance-init -14" \
        in result.stderr
    assert "without --source they start from He initialisation" in result.stderr


def test_the_paper_recipe_and_explicit_options_override_the_defaults(tmp_path, tiny_architecture):
    data, ids, split = _brats(tmp_path)
    base = ("--channel", "t2", "--architecture", tiny_architecture, "--method", "gaussian", "--epochs", "1",
            "--no-progress", "--no-cache")
    assert run("train", data, tmp_path / "paper", *base, "--recipe", "paper").exit_code == 0
    assert _bayesian_settings(tmp_path / "paper") == (1.0, "lrt", -10.0)
    mixed = run("train", data, tmp_path / "mixed", *base, "--kl-weight", "0.05", "--posterior-std-ratio", "0.1")
    assert mixed.exit_code == 0, mixed.output
    assert _bayesian_settings(tmp_path / "mixed")[:2] == (0.05, "sample")
    deterministic = run("train", data, tmp_path / "ri", "--channel", "t2", "--architecture", tiny_architecture,
                        "--recipe", "paper")
    assert_one_line_error(deterministic, "--recipe", "--method ri")


def test_the_demo_names_where_its_zoo_and_prior_are_as_the_docs_say(tmp_path, monkeypatch, tiny_architecture):
    from bayesprior.commands import experiment_cmd

    monkeypatch.setattr(experiment_cmd, "DEMO_CONFIG", {
        "architecture": {"name": tiny_architecture},
        "source": {"synthetic": {"kind": "ms", "cases": 2, "shape": [16, 16, 16], "seed": 6}},
        "target": {"synthetic": {"kind": "tumour", "cases": 3, "shape": [16, 16, 16], "seed": 5}},
        "preprocess": {"crop_nonzero": False, "divisible_by": 8},
        "source_training": {"max_epochs": 1, "val_fraction": 0.0},
        "prior": {"max_epochs": 2, "norm_threshold": 0.0},
        "target_training": {"max_epochs": 1},
        "protocol": {"train_sizes": [1], "test_size": 2, "splits": 1, "methods": ["dwp", "pr"]}})
    monkeypatch.setenv("BAYESPRIOR_CACHE_DIR", str(tmp_path / "cache"))
    result = run("demo", "--out", tmp_path / "demo", "--quiet")
    assert result.exit_code == 0, result.output
    zoo = tmp_path / "demo" / "source" / "zoo" / "seed0" / "seed0_min0.pt"
    lines = {line.split(" (")[0]: line.rsplit(": ", 1)[1] for line in result.output.splitlines()
             if line.startswith(("source model zoo", "source network", "DWP prior"))}
    assert lines == {"source model zoo": str(zoo), "source network": str(tmp_path / "demo/source/runs/seed0/model.pt"),
                     "DWP prior": str(tmp_path / "demo/source/prior_dwp.pt")}
    assert zoo.is_file() and "OUT/source/zoo/seed<k>/seed<k>_min<j>.pt" in README.read_text()
