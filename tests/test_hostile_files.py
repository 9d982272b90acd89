"""Hostile and bad files for `harvest`, `fit-prior`, `show-kernels`, `show-cases`, `synth` and `arch`, and a
pickle payload for every loader not covered by test_safe_load.py (preprocessing cache, corrnormal prior):
each ends in one clear error line, or in a documented, correct result; no payload ever runs."""
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from bayesprior.data.preprocess import PreprocessConfig, _load_prepared, prepare_dataset
from bayesprior.errors import CheckpointError, DataError
from bayesprior.kernels import BANK_FORMAT, KernelBank
from bayesprior.locks import folder_lock

from hostile import Payload, assert_ok, assert_one_line_error, dataset, model_file, run


def _bank(path, kernels=None, **header):
    kernels = np.random.default_rng(0).normal(size=(50, 3, 3, 3)).astype(np.float32) if kernels is None else kernels
    full = {"format": BANK_FORMAT, "kernel_size": [3, 3, 3],
            "groups": {"g": {"layers": ["conv"], "kept": len(kernels), "dropped": 0}}, **header}
    with open(path, "wb") as f:
        np.savez(f, kernels__g=kernels, header_json=np.array(json.dumps(full)))
    return path


# ------------------------------------------------------------------------------------------ harvest
def test_harvest_refuses_a_model_with_nan_weights(tmp_path):
    model = model_file(tmp_path / "nan.pt", nan=True)
    assert_one_line_error(run("harvest", model, "--out", tmp_path / "bank.npz"), "nan.pt", "NaN or infinite")
    assert not (tmp_path / "bank.npz").exists()


def test_harvest_refuses_to_write_an_empty_bank(tmp_path):
    model = model_file(tmp_path / "model.pt")
    assert_one_line_error(run("harvest", model, "--out", tmp_path / "bank.npz", "--norm-threshold", "1e9"),
                          "no kernel of group(s)", "--norm-threshold")
    assert not (tmp_path / "bank.npz").exists()


def test_harvest_into_a_folder_under_a_regular_file_is_one_line_naming_it(tmp_path):
    model = model_file(tmp_path / "model.pt")
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run("harvest", model, "--out", tmp_path / "file" / "bank.npz"),
                          f"{tmp_path / 'file'}: is a file where a folder is needed")


# ------------------------------------------------------------------------------ kernel bank / fit-prior
def test_fit_prior_refuses_a_bank_with_nan_kernels(tmp_path):
    kernels = np.random.default_rng(0).normal(size=(50, 3, 3, 3)).astype(np.float32)
    kernels[3] = np.nan
    bank = _bank(tmp_path / "bank.npz", kernels)
    assert_one_line_error(run("fit-prior", bank, "--out", tmp_path / "prior.pt", "--max-epochs", "1"),
                          "NaN or infinite kernels")
    assert not (tmp_path / "prior.pt").exists()


@pytest.mark.parametrize("kernels, header, fragment", [
    (np.zeros((50, 3, 3), np.float32), {}, "of shape (50, 3, 3), but the header says float kernels of size [3, 3, 3]"),
    (np.zeros((50, 3, 3, 3), np.int32), {}, "holds int32 kernels"),
    (np.zeros((49, 3, 3, 3), np.float32), {"groups": {"g": {"layers": [], "kept": 50}}}, "holds 49 kernels, but the header says 50"),
    (None, {"groups": {"g": {"layers": []}, "h": {"layers": []}}}, "header groups without kernels ['h']"),
    (None, {"kernel_size": "3x3x3"}, "kernel_size '3x3x3'"),
    (None, {"groups": ["g"]}, "'groups' is not a mapping"),
])
def test_a_kernel_bank_that_disagrees_with_its_header_is_refused(tmp_path, kernels, header, fragment):
    bank = _bank(tmp_path / "bank.npz", kernels, **header)
    assert_one_line_error(run("fit-prior", bank, "--out", tmp_path / "prior.pt"), "bank.npz", fragment)


def test_a_kernel_bank_whose_header_is_not_an_object_is_refused(tmp_path):
    path = tmp_path / "bank.npz"
    with open(path, "wb") as f:
        np.savez(f, kernels__g=np.zeros((5, 3, 3, 3), np.float32), header_json=np.array("[1, 2]"))
    with pytest.raises(CheckpointError, match="not a kernel bank"):
        KernelBank.load(path)


def test_show_kernels_refuses_a_prior_file_with_a_pickle_payload(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"format": "bayesprior.dwp-prior/1", "groups": Payload(marker)}, tmp_path / "prior.pt")
    bank = _bank(tmp_path / "bank.npz")
    assert_one_line_error(run("show-kernels", bank, tmp_path / "prior.pt", "--out", tmp_path / "k.png"),
                          "prior.pt", "plain types")
    assert not marker.exists()


# --------------------------------------------------------------- small files that declare huge contents
@pytest.fixture
def nothing_is_loaded(monkeypatch):
    """Fail the test if a file is handed to torch.load or np.load: it should have been refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("the file was loaded although it declares more than it may")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(np, "load", refuse)


def _npy(shape, dtype="<f4", data=b"\0" * 16):
    """The bytes of an .npy file whose header declares `shape` and `dtype`, followed by `data` only."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


def _npz(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, payload in members.items():
            archive.writestr(f"{name}.npy", payload)
    return path


def test_an_npz_whose_header_declares_a_terabyte_is_refused_before_it_is_read(tmp_path, nothing_is_loaded):
    header = np.array(json.dumps({"format": BANK_FORMAT}))
    path = _npz(tmp_path / "bank.npz", {"header_json": _npy((), header.dtype.str, header.tobytes()),
                                        "kernels__g": _npy((10**12, 3, 3, 3))})
    assert_one_line_error(run("info", path), "bank.npz", "array 'kernels__g' declares 108,000,000,000,000 bytes",
                          "refused before reading")


def test_a_kernel_bank_with_a_compressed_inflating_header_is_refused_before_it_is_read(tmp_path, nothing_is_loaded):
    header = np.array(json.dumps({"format": BANK_FORMAT, "padding": " " * 1_000_000}))  # inflates 1000-fold
    path = _npz(tmp_path / "bank.npz", {"header_json": _npy((), header.dtype.str, header.tobytes())},
                zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    assert_one_line_error(run("info", path), "bank.npz", "array 'header_json' is compressed", "refused before reading")


def test_a_kernel_bank_header_above_its_cap_is_refused(tmp_path, monkeypatch):
    import bayesprior.kernels as kernels
    from bayesprior.safe_load import NpzLimits

    bank = _bank(tmp_path / "bank.npz")
    monkeypatch.setattr(kernels, "BANK_LIMITS", NpzLimits(max_arrays=8, max_bytes=2**20,
                                                          max_bytes_per_name={"header_json": 100}, compressed=False))
    assert_one_line_error(run("info", bank), "bank.npz", "array 'header_json' declares",
                          "more than the 100 it may have")


def test_a_torch_file_whose_records_inflate_is_refused_before_torch_reads_it(tmp_path, nothing_is_loaded):
    plain = tmp_path / "plain.pt"
    model_file(plain)
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record.filename))
        target.writestr("model/data/999", b"\0" * 10_000_000)  # 10 MB of zeros in some kilobytes
    assert path.stat().st_size < 1_000_000
    for command in (["info", path], ["predict", path, tmp_path, tmp_path / "out"]):
        assert_one_line_error(run(*command), "model.pt", "bytes of data in a file of", "refused before reading")
    assert not (tmp_path / "out").exists()


def test_a_torch_file_with_too_many_records_is_refused(tmp_path, monkeypatch):
    import bayesprior.safe_load as safe_load

    monkeypatch.setattr(safe_load, "MAX_TORCH_RECORDS", 3)
    assert_one_line_error(run("info", model_file(tmp_path / "model.pt")), "model.pt", "more than the 3 a torch file")


def test_info_on_a_device_says_it_is_no_regular_file_not_that_it_is_missing():
    line = assert_one_line_error(run("info", "/dev/zero"), "/dev/zero", "is not a regular file")
    assert "no such file" not in line


# ------------------------------------------------------------------------ other loaders' payloads
def test_a_preprocessing_cache_entry_with_a_pickle_payload_is_refused_and_rebuilt(tmp_path):
    data = dataset(tmp_path / "ds", n=2)
    config = PreprocessConfig(crop_nonzero=False)
    clean = prepare_dataset(data, config, cache_dir=tmp_path / "cache")
    entry = next((tmp_path / "cache").glob("*/00000.npz"))
    marker = tmp_path / "ran"
    with open(entry, "wb") as f:
        np.savez(f, image=np.array([Payload(marker)], dtype=object), record=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="corrupt preprocessing cache entry") as info:
        _load_prepared(entry)
    assert "\n" not in str(info.value) and not marker.exists()
    again = prepare_dataset(data, config, cache_dir=tmp_path / "cache")  # the entry is rebuilt, never trusted
    assert not marker.exists() and np.array_equal(again[0].image, clean[0].image)


def test_a_corrnormal_prior_file_with_a_pickle_payload_is_refused(tmp_path):
    from bayesprior_corrnormal import create_corrnormal_prior

    marker = tmp_path / "ran"
    torch.save({"format": "bayesprior.corrnormal-prior/1", "groups": Payload(marker)}, tmp_path / "prior.pt")
    with pytest.raises(CheckpointError, match="plain types") as info:
        create_corrnormal_prior(path=str(tmp_path / "prior.pt"), group="g")
    assert not marker.exists() and "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ synth, others
SYNTH = ["synth", "--kind", "ms", "--cases", "1", "--shape", "16,16,16"]


def test_synth_refuses_a_folder_of_someone_elses_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("mine")
    assert_one_line_error(run(*SYNTH, "--out", tmp_path / "data"), "not a bayesprior synthetic dataset")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["notes.txt"]


def test_synth_refuses_an_output_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("x")
    assert_one_line_error(run(*SYNTH, "--out", tmp_path / "data"), "is a file")


def test_synth_refuses_a_folder_another_process_writes_into(tmp_path):
    with folder_lock(tmp_path / "data", "dataset folder"):
        assert_one_line_error(run(*SYNTH, "--out", tmp_path / "data"), "dataset folder is in use")


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _synth(out, kind="ms", seed=1, shape="16,16,16", cases=1):
    return run("synth", "--kind", kind, "--cases", cases, "--shape", shape, "--seed", seed, "--out", out, "--quiet")


@pytest.mark.parametrize("other, fragment", [
    ({"kind": "tumour"}, "kind 'ms' -> 'tumour'"),
    ({"seed": 2}, "seed 1 -> 2"),
    ({"shape": "16,16,24"}, "shape [16, 16, 16] -> [16, 16, 24]"),
])
def test_synth_into_a_folder_of_another_synthetic_dataset_is_refused_and_keeps_it(tmp_path, other, fragment):
    out = tmp_path / "data"
    assert_ok(_synth(out, cases=2))
    before = _files(out)
    assert_one_line_error(_synth(out, **other), "holds a synthetic dataset made with other settings", fragment,
                          "choose an empty or new folder")
    assert _files(out) == before


def test_synth_again_with_the_same_settings_resumes_and_adds_cases(tmp_path):
    out = tmp_path / "data"
    assert_ok(_synth(out))
    first = (out / "imagesTr" / "SynMS_0001_0000.nii.gz").read_bytes()
    assert_ok(_synth(out, cases=2))
    assert (out / "imagesTr" / "SynMS_0001_0000.nii.gz").read_bytes() == first
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2


def test_synth_into_a_folder_of_an_older_synthetic_dataset_of_another_kind_is_refused(tmp_path):
    out = tmp_path / "data"
    assert_ok(_synth(out))
    (out / ".bayesprior-synth.json").unlink()  # older versions wrote none: dataset.json says what it is
    assert_one_line_error(_synth(out, kind="tumour"), "kind 'ms' -> 'tumour'")


def test_show_cases_describes_a_dataset_json_that_is_not_an_object(tmp_path):
    data = dataset(tmp_path / "ds", n=1)
    (data / "dataset.json").write_text('"just a string"')
    assert_one_line_error(run("show-cases", data, "--out", tmp_path / "c.png"), "holds a JSON str, not an object")


def test_arch_refuses_a_builder_option_of_the_wrong_kind(tmp_path):
    assert_one_line_error(run("arch", "unet3d", "-c", "widths=[1,2]"), "widths must be four channel counts")
    # a comma list without brackets is a string: named as written, with the way to write it
    assert_one_line_error(run("arch", "unet3d", "-c", "widths=4,4,4,4"),
                          "got '4,4,4,4' (on the command line: --arch-option 'widths=[8,16,32,64]')")
    assert_one_line_error(run("arch", "unet3d", "-c", "widths=4"), "widths must be four channel counts")


def test_demo_refuses_a_folder_another_process_works_in(tmp_path):
    with folder_lock(tmp_path / "demo", "experiment folder"):
        assert_one_line_error(run("demo", "--out", tmp_path / "demo", "--quiet"), "experiment folder is in use")
    assert not (tmp_path / "demo" / "data").exists()


class _ExplodingPlugin:
    from bayesprior import hookimpl

    @hookimpl
    def register_priors(self, register):
        raise RuntimeError("boom")


def test_plugins_lists_a_plugin_whose_hook_raises_and_still_lists_the_others(fresh_plugins):
    from bayesprior.plugins import register_plugin

    with pytest.warns(RuntimeWarning, match="boom"):
        register_plugin(_ExplodingPlugin(), "exploding-test")
        result = run("plugins", "--json")
    assert_ok(result)
    listed = {p["name"]: p for p in json.loads(result.stdout)}
    assert "boom" in listed["exploding-test"]["error"] and "gaussian" in json.dumps(listed)


def test_harvest_refuses_an_input_shape_that_would_be_ignored(tmp_path):
    model = model_file(tmp_path / "model.pt")
    assert_one_line_error(run("harvest", model, "--out", tmp_path / "bank.npz", "--input-shape", "16,16,16"),
                          "--input-shape has no effect with --group-by architecture")
