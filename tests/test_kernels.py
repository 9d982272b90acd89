import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from bayesprior import kernels
from bayesprior.checkpoints import save_model
from bayesprior.cli import cli
from bayesprior.errors import CheckpointError
from bayesprior.kernels import KernelBank, harvest_kernels
from bayesprior.plugins import build_architecture

from _dwp_tiny import TINY_NAME, TinyNet


def _checkpoint(path, seed, width=4, tweak=None):
    torch.manual_seed(seed)
    model = build_architecture(TINY_NAME, width=width)
    if tweak:
        with torch.no_grad():
            tweak(model)
    save_model(model, path)
    return model


def test_bank_save_load_round_trips_arrays_and_header(tmp_path):
    bank = KernelBank({"a": np.random.randn(5, 3, 3, 3).astype(np.float32), "b": np.zeros((0, 3, 3, 3), np.float32)},
                      {"kernel_size": [3, 3, 3], "groups": {"a": {"layers": ["x"], "kept": 5, "dropped": 1},
                                                             "b": {"layers": ["y"], "kept": 0, "dropped": 0}}})
    bank.save(tmp_path / "bank.npz")
    loaded = KernelBank.load(tmp_path / "bank.npz")
    assert loaded.groups == ["a", "b"]
    assert np.array_equal(loaded.kernels["a"], bank.kernels["a"]) and loaded.kernels["a"].dtype == np.float32
    assert loaded.counts() == {"a": {"kept": 5, "dropped": 1}, "b": {"kept": 0, "dropped": 0}}
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temporary file


def test_bank_file_is_readable_with_numpy_alone(tmp_path, tiny_dwp_architecture):
    _checkpoint(tmp_path / "s.pt", 0)
    harvest_kernels([tmp_path / "s.pt"], norm_threshold=0.0).save(tmp_path / "bank.npz")
    data = np.load(tmp_path / "bank.npz")  # the docs/formats.md recipe
    header = json.loads(str(data["header_json"]))
    assert header["format"] == "bayesprior.kernel-bank/1"
    assert data["kernels__full"].shape == (4 + 16, 3, 3, 3)
    assert header["groups"]["half"]["layers"] == ["conv_c"]


def test_loading_a_file_that_is_not_a_bank_names_the_file(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(CheckpointError, match="other.npz"):
        KernelBank.load(tmp_path / "other.npz")


def test_harvest_pools_groups_over_checkpoints_and_drops_small_norm_kernels(tmp_path, tiny_dwp_architecture):
    def kill_two_kernels(model):
        model.conv_b.weight[0, 0] = 0.0
        model.conv_b.weight[1, 2] *= 1e-6

    m1 = _checkpoint(tmp_path / "s1.pt", 1)
    m2 = _checkpoint(tmp_path / "s2.pt", 2, tweak=kill_two_kernels)
    bank = harvest_kernels([tmp_path / "s1.pt", tmp_path / "s2.pt"], norm_threshold=1e-3)
    assert bank.counts() == {"full": {"kept": 2 * 20 - 2, "dropped": 2}, "half": {"kept": 32, "dropped": 0}}
    assert bank.kernel_size == (3, 3, 3)
    expected_half = torch.cat([m1.conv_c.weight.reshape(-1, 3, 3, 3), m2.conv_c.weight.reshape(-1, 3, 3, 3)])
    assert np.allclose(bank.kernels["half"], expected_half.detach().numpy())
    assert [c["path"] for c in bank.header["checkpoints"]] == [str(tmp_path / "s1.pt"), str(tmp_path / "s2.pt")]
    assert all(len(c["sha256"]) == 64 for c in bank.header["checkpoints"])
    assert np.linalg.norm(bank.flat("full"), axis=1).min() >= 1e-3


def test_harvest_rejects_a_checkpoint_of_another_architecture(tmp_path, tiny_dwp_architecture):
    _checkpoint(tmp_path / "s1.pt", 1)
    _checkpoint(tmp_path / "wide.pt", 2, width=6)
    with pytest.raises(CheckpointError, match="wide.pt.*architecture"):
        harvest_kernels([tmp_path / "s1.pt", tmp_path / "wide.pt"])


def test_harvest_rejects_a_checkpoint_missing_a_layer_naming_file_and_layer(tmp_path, tiny_dwp_architecture):
    _checkpoint(tmp_path / "s1.pt", 1)
    _checkpoint(tmp_path / "broken.pt", 2)
    payload = torch.load(tmp_path / "broken.pt", weights_only=False)
    del payload["state_dict"]["conv_c.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken.pt.*'conv_c'"):
        harvest_kernels([tmp_path / "s1.pt", tmp_path / "broken.pt"])


def test_harvest_rejects_a_checkpoint_without_architecture(tmp_path):
    save_model(TinyNet(), tmp_path / "bare.pt")  # built by hand: no architecture recorded
    with pytest.raises(CheckpointError, match="bare.pt.*no architecture"):
        harvest_kernels([tmp_path / "bare.pt"])


def test_harvest_by_resolution_groups_through_the_grouping_module(tmp_path, tiny_dwp_architecture, monkeypatch):
    seen = {}

    def group_by_resolution(model, example_input):
        seen["shape"] = tuple(example_input.shape)
        return {"res8": ["conv_a", "conv_b", "conv_c", "head"]}

    monkeypatch.setattr(kernels, "group_by_resolution", group_by_resolution)
    _checkpoint(tmp_path / "s.pt", 0)
    bank = harvest_kernels([tmp_path / "s.pt"], group_by="resolution", example_shape=(8, 8, 8), norm_threshold=0)
    assert seen["shape"] == (1, 1, 8, 8, 8)
    assert bank.groups == ["res8"] and len(bank.kernels["res8"]) == 4 + 16 + 16
    assert bank.header["groups"]["res8"]["layers"] == ["conv_a", "conv_b", "conv_c"]
    assert "head" in bank.header["skipped_layers"]


def test_harvest_command_prints_a_group_table_and_writes_the_bank(tmp_path, tiny_dwp_architecture):
    _checkpoint(tmp_path / "s1.pt", 1)
    _checkpoint(tmp_path / "s2.pt", 2)
    result = CliRunner().invoke(cli, ["harvest", str(tmp_path / "s1.pt"), str(tmp_path / "s2.pt"),
                                      "--out", str(tmp_path / "bank.npz"), "--norm-threshold", "0"])
    assert result.exit_code == 0, result.output
    assert "full" in result.output and "40" in result.output and "dropped" in result.output
    assert KernelBank.load(tmp_path / "bank.npz").counts()["half"]["kept"] == 32


def test_harvest_command_quiet_prints_only_the_file_it_wrote(tmp_path, tiny_dwp_architecture):
    _checkpoint(tmp_path / "s1.pt", 1)
    result = CliRunner().invoke(cli, ["harvest", str(tmp_path / "s1.pt"), "--out", str(tmp_path / "bank.npz"),
                                      "--norm-threshold", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {tmp_path / 'bank.npz'}\n"


def test_harvest_command_reports_bad_checkpoints_without_traceback(tmp_path):
    (tmp_path / "junk.pt").write_text("not a model")
    result = CliRunner().invoke(cli, ["harvest", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "b.npz")])
    assert result.exit_code != 0 and "junk.pt" in result.output and "Traceback" not in result.output
