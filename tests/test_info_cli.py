"""`bayesprior info FILE`: what a model file, checkpoint, prior file or kernel bank is, read without running code."""
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bayesprior.cli import cli
from bayesprior.kernels import harvest_kernels

from hostile import Payload, assert_ok, assert_one_line_error, bayesian_model_file, model_file, run
from training_fixtures import write_nnunet_dataset


def info(path: Path) -> str:
    result = run("info", path)
    assert_ok(result)
    return result.output


def test_a_deterministic_model_file_shows_its_format_architecture_and_preprocessing(tmp_path):
    text = info(model_file(tmp_path / "model.pt", preprocess={"crop_nonzero": False, "intensity": "zscore"}))
    assert "bayesprior.model/1, a deterministic model" in text
    assert "unet3d (" in text and "widths=[4, 4, 4, 4]" in text
    assert "preprocessing" in text and 'intensity="zscore"' in text


def test_a_bayesian_model_file_shows_its_priors_and_the_layers_they_cover(tmp_path):
    text = info(bayesian_model_file(tmp_path / "model.pt"))
    assert "a bayesian model" in text
    assert "prior0: gaussian (loc=0.0, scale=0.1) on 26 layer(s)" in text and "forward modes  lrt x26" in text


@pytest.fixture
def trained_run(tiny_architecture, tmp_path):
    data = tmp_path / "data"
    write_nnunet_dataset(data, n=3)
    result = CliRunner().invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                      "--method", "gaussian", "--epochs", "1", "--val-fraction", "0.34", "--quiet",
                                      "--no-cache"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def test_a_trained_model_shows_its_data_fingerprint_case_ids_versions_and_command(trained_run, tiny_architecture):
    text = info(trained_run / "model.pt")
    assert "training data    2 case(s), SHA-256 " in text and "validation data  1 case(s)" in text
    assert "case00" in text and "method=\"gaussian\"" in text
    assert f"bayesprior 0.1.0, torch {torch.__version__}" in text
    assert "command" in text and "not recorded" not in text.split("command", 1)[1].splitlines()[0]
    assert re.search(r"training time +\d+\.\d s \(every epoch", text)


def test_a_training_checkpoint_says_after_which_epoch(trained_run):
    text = info(trained_run / "checkpoint.pt")
    assert "bayesprior.train-checkpoint/1, a training checkpoint after epoch 1" in text
    assert "bayesprior.model/1, bayesian" in text and "training data" in text
    assert f"torch {torch.__version__}" in text and "not recorded" not in text.split("command", 1)[1].splitlines()[0]


def test_the_checkpoint_of_a_deterministic_run_shows_the_bayesprior_version(tiny_architecture, tmp_path):
    write_nnunet_dataset(tmp_path / "data", n=2)
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "data"), str(tmp_path / "run"), "--architecture",
                                      tiny_architecture, "--epochs", "1", "--quiet", "--no-cache"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"bayesprior 0.1.0, torch {torch.__version__}" in info(tmp_path / "run" / "checkpoint.pt")


def _bank(tmp_path: Path):
    sources = [model_file(tmp_path / f"src{i}.pt") for i in range(2)]
    bank = harvest_kernels(sources, norm_threshold=0.0)
    bank.save(tmp_path / "kernels.npz")
    return bank


def test_a_kernel_bank_shows_its_groups_and_the_models_it_was_harvested_from(tmp_path):
    _bank(tmp_path)
    text = info(tmp_path / "kernels.npz")
    assert "bayesprior.kernel-bank/1, a kernel bank" in text
    assert "kernels kept" in text and "harvested from" in text and "src1.pt (SHA-256 " in text


def test_a_dwp_prior_file_shows_its_groups_and_provenance(tmp_path):
    from test_dwp_prior import _random_vae

    from bayesprior_dwp import save_prior_file

    bank = _bank(tmp_path)
    group = bank.groups[0]
    save_prior_file(tmp_path / "prior.pt", {group: (_random_vae(latent_dim=6), [-1.0, 0.5])}, bank)
    text = info(tmp_path / "prior.pt")
    assert "bayesprior.dwp-prior/1, a prior file" in text and "latent_dim=6" in text
    assert f"{group}: " in text and "best held-out ELBO 0.500" in text and "fitted to kernels of" in text


def test_a_corrnormal_prior_file_shows_its_groups(tmp_path):
    from bayesprior_corrnormal import fit_corrnormal_file

    bank = _bank(tmp_path)
    fit_corrnormal_file(str(tmp_path / "kernels.npz"), str(tmp_path / "prior.pt"))
    text = info(tmp_path / "prior.pt")
    assert "bayesprior.corrnormal-prior/1, a prior file" in text and "ridge=" in text
    assert all(f"{g}: " in text for g in bank.groups)


@pytest.mark.parametrize("kind", ["dwp", "corrnormal"])
def test_a_prior_file_shows_the_command_that_fitted_it_not_the_banks_harvest_command(tmp_path, monkeypatch, kind):
    from test_dwp_prior import _random_vae

    from bayesprior_corrnormal import fit_corrnormal_file
    from bayesprior_dwp import save_prior_file

    monkeypatch.setattr("sys.argv", ["bayesprior", "harvest", "src0.pt", "--out", "kernels.npz"])
    bank = _bank(tmp_path)
    monkeypatch.setattr("sys.argv", ["bayesprior", "fit-prior", "kernels.npz", "--out", "prior.pt"])
    if kind == "dwp":
        save_prior_file(tmp_path / "prior.pt", {bank.groups[0]: (_random_vae(latent_dim=6), [-1.0])}, bank)
    else:
        fit_corrnormal_file(str(tmp_path / "kernels.npz"), str(tmp_path / "prior.pt"))
    text = info(tmp_path / "prior.pt")
    assert _row(text, "command") == "bayesprior fit-prior kernels.npz --out prior.pt"
    assert _row(text, "bank command") == "bayesprior harvest src0.pt --out kernels.npz"


def _row(text: str, label: str) -> str:
    """The text of the row labelled `label` in the output of `bayesprior info`."""
    return next(line.strip()[len(label):].strip() for line in text.splitlines()[1:]
                if line.strip().startswith(label + "  "))


def test_a_pickle_payload_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"format": "bayesprior.model/1", "x": Payload(marker)}, tmp_path / "model.pt")
    assert_one_line_error(run("info", tmp_path / "model.pt"), "model.pt", "plain types")
    assert not marker.exists()


def test_a_pickle_payload_in_an_npz_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    np.savez(tmp_path / "kernels.npz", header_json=np.array([Payload(marker)], dtype=object))
    assert_one_line_error(run("info", tmp_path / "kernels.npz"), "kernels.npz")
    assert not marker.exists()


@pytest.mark.parametrize("content, fragment", [
    (b"not a torch file", "cannot be read"),
    (pickle.dumps([1, 2, 3]), "cannot be read"),
])
def test_an_unknown_file_is_a_one_line_error(tmp_path, content, fragment):
    (tmp_path / "thing.pt").write_bytes(content)
    assert_one_line_error(run("info", tmp_path / "thing.pt"), "thing.pt", fragment)  # (and no warning above it)


def test_a_torch_file_of_another_kind_is_a_one_line_error_naming_its_format(tmp_path):
    torch.save({"format": "someone-else/3", "weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert_one_line_error(run("info", tmp_path / "other.pt"), "other.pt", "is not a bayesprior model",
                          "'someone-else/3'")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    assert_one_line_error(run("info", tmp_path / "list.pt"), "list.pt", "a list without a 'format'")


def test_a_file_is_read_by_its_content_whatever_its_name(tmp_path):
    _bank(tmp_path)
    (tmp_path / "kernels.npz").rename(tmp_path / "bank.pt")
    assert "a kernel bank" in info(tmp_path / "bank.pt")
    model_file(tmp_path / "model.pt").rename(tmp_path / "model.npz")
    assert "a deterministic model" in info(tmp_path / "model.npz")
