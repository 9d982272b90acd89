import json

import nibabel as nib
import numpy as np
import torch
from click.testing import CliRunner

from bayesprior.cli import cli

from training_fixtures import write_nnunet_dataset


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for command in ("train", "predict", "evaluate"):
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output


def test_train_predict_evaluate_end_to_end(tiny_architecture, tmp_path):
    data = tmp_path / "Dataset001_Tiny"
    affine = write_nnunet_dataset(data)
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                 "--epochs", "2", "--no-progress", "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    model = tmp_path / "run" / "model.pt"
    result = runner.invoke(cli, ["predict", str(model), str(data / "imagesTr"), str(tmp_path / "pred"),
                                 "--roi", "8,8,8", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "pred").glob("*.nii.gz"))
    assert written == [f"case{i:02d}.nii.gz" for i in range(4)]
    out = nib.load(tmp_path / "pred" / "case00.nii.gz")
    source = nib.load(data / "imagesTr" / "case00_0000.nii.gz")
    assert np.array_equal(out.affine, source.affine)
    assert out.shape == source.shape
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    result = runner.invoke(cli, ["evaluate", str(tmp_path / "pred"), str(data / "labelsTr")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["n_cases"] == 4 and 0.0 <= summary["mean"]["dsc"] <= 1.0


def test_bayesian_prediction_writes_probability_and_entropy(tiny_architecture, tmp_path):
    data = tmp_path / "Dataset002_Tiny"
    write_nnunet_dataset(data, n=2)
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                 "--method", "gaussian", "--prior-option", "scale=0.1", "--epochs", "1",
                                 "--no-progress", "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["predict", str(tmp_path / "run" / "model.pt"), str(data / "imagesTr"),
                                 str(tmp_path / "pred"), "--samples", "3", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    probability = nib.load(tmp_path / "pred" / "case00_probability.nii.gz").get_fdata()
    entropy = nib.load(tmp_path / "pred" / "case00_entropy.nii.gz").get_fdata()
    assert probability.min() >= 0 and probability.max() <= 1
    assert entropy.min() >= 0 and entropy.max() <= np.log(2) + 1e-6


def test_a_relative_posterior_std_is_set_from_the_weights_and_recorded(tiny_architecture, tmp_path):
    from bayesprior.checkpoints import load_model, read_model_file

    data = tmp_path / "Dataset002_Tiny"
    write_nnunet_dataset(data, n=2)
    result = CliRunner().invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                      "--method", "gaussian", "--posterior-std-ratio", "0.05", "--epochs", "1",
                                      "--lr", "1e-12", "--quiet", "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert read_model_file(tmp_path / "run" / "model.pt")["extra"]["train_config"]["posterior_std_ratio"] == 0.05
    layers = [m for m in load_model(tmp_path / "run" / "model.pt").modules() if hasattr(m, "posterior")]
    for layer in layers:  # one step at lr 1e-12 leaves the initial ratio in place
        std = layer.posterior.log_variance.detach().mul(0.5).exp()
        rms = layer.posterior.loc.detach().pow(2).mean().sqrt()
        assert torch.allclose(std, 0.05 * rms, rtol=1e-3)
    assert layers


def test_several_seeds_fill_a_model_zoo(tiny_architecture, tmp_path):
    data = tmp_path / "Dataset003_Tiny"
    write_nnunet_dataset(data, n=2)
    result = CliRunner().invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                      "--epochs", "1", "--seeds", "0,1", "--restarts", "1", "--no-progress",
                                      "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "run" / "zoo").iterdir()) == ["seed0_min0.pt", "seed1_min0.pt"]
    assert (tmp_path / "run" / "seed1" / "model.pt").is_file()


def test_bad_roi_is_reported_without_traceback(tiny_architecture, tmp_path):
    from bayesprior.checkpoints import save_model

    from training_fixtures import TinyNet

    save_model(TinyNet(), tmp_path / "m.pt", extra={"preprocess": {}})
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "in" / "a.nii.gz")
    result = CliRunner().invoke(cli, ["predict", str(tmp_path / "m.pt"), str(tmp_path / "in"), str(tmp_path / "o"),
                                      "--roi", "7,8,8", "--no-progress"])
    assert result.exit_code == 1 and "divisible by 8" in result.output


def test_train_checks_its_options_before_reading_the_data(tmp_path):
    # tmp_path is no dataset: had the data been read first, the error would be about the folder
    runner = CliRunner()
    for args, message in ((["--method", "nope"], "unknown method 'nope'"),
                          (["--method", "pr"], "needs a source model"),
                          (["--shape", "40,48"], "expected 3 integers"),
                          (["--intensity", "loud"], "'loud' is not one of"),
                          (["--arch-option", "widths"], "expected KEY=VALUE"),
                          (["--lr", "0"], "not in the range x>0"),
                          (["--device", "gpu"], "'gpu' is not a torch device")):
        result = runner.invoke(cli, ["train", str(tmp_path), str(tmp_path / "run"), *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)

