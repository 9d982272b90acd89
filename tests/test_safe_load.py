"""Files from other people: every loader refuses a pickle payload, runs nothing, and says so in one line."""
import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bayesprior.checkpoints import load_bayesian, load_model, read_model_file, save_model
from bayesprior.cli import cli
from bayesprior.errors import CheckpointError
from bayesprior.kernels import KernelBank
from bayesprior.safe_load import is_plain, load_plain, trusting_files
from bayesprior.training.config import TrainConfig
from bayesprior.training.trainer import train

from training_fixtures import TinyNet, make_cases


class _Payload:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _hostile_model_file(path, marker):
    torch.save({"format": "bayesprior.model/1", "kind": "deterministic", "architecture": None,
                "state_dict": {}, "extra": {"note": _Payload(marker)}}, path)
    return path


@pytest.mark.parametrize("loader", [read_model_file, load_model, load_bayesian])
def test_model_loaders_refuse_a_pickle_payload_and_run_nothing(tmp_path, loader):
    marker = tmp_path / "ran"
    path = _hostile_model_file(tmp_path / "model.pt", marker)
    with pytest.raises(CheckpointError, match="plain types") as info:
        loader(path)
    assert not marker.exists()
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_training_resume_refuses_a_hostile_checkpoint(tmp_path, tiny_architecture):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "bayesprior.train-checkpoint/1", "rng": _Payload(marker)}, run / "checkpoint.pt")
    config = TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False)
    with pytest.raises(CheckpointError, match="plain types"):
        train(config, make_cases(2, size=8), None, run)
    assert not marker.exists()


def test_prior_file_loader_refuses_a_pickle_payload(tmp_path):
    from bayesprior_dwp import load_prior_file

    marker = tmp_path / "ran"
    path = tmp_path / "prior.pt"
    torch.save({"format": "bayesprior.dwp-prior/1", "groups": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="plain types"):
        load_prior_file(path)
    assert not marker.exists()


def test_kernel_bank_loader_refuses_object_arrays(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "bank.npz"
    with open(path, "wb") as f:
        np.savez(f, header_json=np.array([_Payload(marker)], dtype=object))
    with pytest.raises(CheckpointError, match="bank.npz"):
        KernelBank.load(path)
    assert not marker.exists()


def test_predict_command_refuses_a_hostile_model_in_one_line(tmp_path):
    marker = tmp_path / "ran"
    path = _hostile_model_file(tmp_path / "model.pt", marker)
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(cli, ["predict", str(path), str(tmp_path / "images"), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert not marker.exists()
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and "--trust-file" in result.output


def test_files_written_by_training_hold_plain_types_only(tmp_path, tiny_architecture):
    config = TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False)
    model_path = train(config, make_cases(2, size=8), None, tmp_path / "run")
    for path in (model_path, tmp_path / "run" / "checkpoint.pt"):
        payload = torch.load(path, weights_only=True)
        assert is_plain(payload), path


def test_resume_after_plain_rng_state_continues_the_same_random_streams(tmp_path, tiny_architecture):
    cases = make_cases(4, size=8)
    whole = train(TrainConfig(architecture=tiny_architecture, max_epochs=3, progress=False, seed=3),
                  cases, None, tmp_path / "a")
    train(TrainConfig(architecture=tiny_architecture, max_epochs=1, progress=False, seed=3), cases, None, tmp_path / "b")
    resumed = train(TrainConfig(architecture=tiny_architecture, max_epochs=3, progress=False, seed=3),
                    cases, None, tmp_path / "b")
    a, b = read_model_file(whole)["state_dict"], read_model_file(resumed)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_trust_loads_an_old_style_file_with_a_warning(tmp_path):
    path = tmp_path / "old.pt"
    save_model(TinyNet(), path)
    payload = torch.load(path, weights_only=True)
    payload["extra"]["numpy_state"] = np.random.get_state()  # what older versions wrote
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="trust"):
        read_model_file(path)
    with pytest.warns(UserWarning, match="unsafe"):
        assert read_model_file(path, trust=True)["kind"] == "deterministic"
    with warnings.catch_warnings(record=True) as caught, trusting_files():
        warnings.simplefilter("always")
        read_model_file(path)
    assert any("unsafe" in str(w.message) for w in caught)


@pytest.mark.parametrize("content, problem", [(b"", "cannot be read"), (b"not a zip at all", "cannot be read")])
def test_corrupt_files_get_a_one_line_error(tmp_path, content, problem):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as info:
        load_plain(path, "a model file")
    assert "\n" not in str(info.value)


def test_a_text_file_is_called_not_a_torch_file_without_the_unpicklers_internal_error(tmp_path):
    path = tmp_path / "train.log"
    path.write_text("epoch 1/1: loss 463.9 data 463.9 kl 0 lr 0.001\nseed 0: ri/model.pt\n")
    with pytest.raises(CheckpointError, match=r"not a torch file\)$") as info:
        load_plain(path, "a model file")
    assert "Error" not in str(info.value).split(":", 1)[1]


def test_a_kernel_bank_npz_read_as_a_torch_file_is_called_a_zip_archive_not_a_torch_file(tmp_path):
    path = tmp_path / "kernels.npz"
    np.savez(path, kernels__enc_full=np.zeros((2, 27), np.float32))
    with pytest.raises(CheckpointError, match=r"kernel bank \.npz, not a torch file\)$"):
        load_plain(path, "a DWP prior file")


def test_is_plain_rejects_objects_and_accepts_nested_plain_values():
    assert is_plain({"a": [1, 2.0, "x", None, True, (torch.zeros(2),)], "b": {"c": torch.ones(1)}})
    assert not is_plain({"a": np.zeros(2)})
    assert not is_plain({"a": json})
