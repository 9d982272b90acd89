"""Intensity schemes against numpy, resampling to a spacing and back onto the file's grid, what a written
prediction keeps of its input, and the compressed preprocessing cache."""
import json
import zipfile

import nibabel
import numpy as np
import pytest

from bayesprior.data import Case, read_dataset, read_image, write_like
from bayesprior.data import preprocess as preprocess_module
from bayesprior.data.preprocess import (
    PreprocessConfig,
    affine_from_record,
    ct_normalised,
    ct_statistics,
    invert,
    prepare_dataset,
    preprocess,
    recorded_config,
)
from bayesprior.errors import ConfigError, DataError
from bayesprior.inference.prediction import mask_and_probability

from training_fixtures import oblique_lps_affine, write_nnunet_dataset

KEEP_GRID = {"crop_nonzero": False, "divisible_by": 1}


def _case(case_id="c1", shape=(12, 14, 10), seed=0, hu=False, affine=None):
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    inside = (slice(2, shape[0] - 2), slice(2, shape[1] - 2), slice(1, shape[2] - 1))
    image[inside] = rng.uniform(-1000, 1500, image[inside].shape) if hu else rng.uniform(5, 300, image[inside].shape)
    label = np.zeros(shape, np.uint8)
    label[4:8, 5:9, 3:7] = 1
    return Case(case_id, image, label, np.eye(4) if affine is None else affine, nibabel.Nifti1Header(), None, None)


def test_zscore_is_over_each_cases_nonzero_voxels():
    case = _case()
    out = preprocess(case, PreprocessConfig(intensity="zscore", **KEEP_GRID)).image
    nonzero = case.image != 0
    expected = (case.image[nonzero] - case.image[nonzero].mean()) / case.image[nonzero].std()
    np.testing.assert_allclose(out[nonzero], expected, rtol=1e-5, atol=1e-5)
    assert (out[~nonzero] == 0).all()


def test_ct_statistics_are_the_foreground_percentiles_mean_and_std_of_all_cases():
    cases = [_case(f"c{i}", seed=i, hu=True) for i in range(3)]
    voxels = np.concatenate([c.image[c.label > 0] for c in cases]).astype(np.float64)
    stats = ct_statistics(cases)
    assert stats == pytest.approx({"clip_low": np.percentile(voxels, 0.5), "clip_high": np.percentile(voxels, 99.5),
                                   "mean": voxels.mean(), "std": voxels.std()})
    assert all(type(v) is float for v in stats.values())  # plain types: a model file stores them


def test_ct_clips_to_the_dataset_percentiles_then_zscores_with_the_dataset_statistics():
    cases = [_case(f"c{i}", seed=i, hu=True) for i in range(3)]
    stats = ct_statistics(cases)
    config = PreprocessConfig(intensity="ct", intensity_statistics=stats, **KEEP_GRID)
    out = preprocess(cases[0], config)
    expected = (np.clip(cases[0].image, stats["clip_low"], stats["clip_high"]) - stats["mean"]) / stats["std"]
    np.testing.assert_allclose(out.image, expected, rtol=1e-5, atol=1e-5)
    assert out.record["intensity"] == {"mode": "ct", **stats}


@pytest.mark.parametrize("grid", [KEEP_GRID, {"crop_nonzero": True, "divisible_by": 8},
                                  {"crop_nonzero": False, "shape": (10, 20, 8), "divisible_by": 8},
                                  {"crop_nonzero": True, "spacing": (2.0, 1.5, 1.0), "divisible_by": 4}])
def test_ct_normalising_a_raw_prepared_case_equals_preprocessing_it_with_those_statistics(grid):
    cases = [_case(f"c{i}", seed=i, hu=True) for i in range(3)]
    stats = ct_statistics(cases[1:])
    direct = preprocess(cases[0], PreprocessConfig(intensity="ct", intensity_statistics=stats, **grid))
    later = ct_normalised(preprocess(cases[0], PreprocessConfig(intensity="none", **grid)), stats)
    np.testing.assert_allclose(later.image, direct.image, rtol=1e-6, atol=1e-6)
    assert later.record == direct.record and np.array_equal(later.label, direct.label)


def test_ct_normalised_refuses_a_case_that_is_already_normalised():
    prepared = preprocess(_case(hu=True), PreprocessConfig(intensity="minmax", **KEEP_GRID))
    with pytest.raises(ConfigError, match="c1: ct_normalised needs a case prepared with intensity 'none'"):
        ct_normalised(prepared, ct_statistics([_case(hu=True)]))


def test_ct_without_statistics_is_a_config_error():
    with pytest.raises(ConfigError, match="statistics"):
        preprocess(_case(), PreprocessConfig(intensity="ct"))


def test_ct_without_any_labelled_foreground_names_the_dataset():
    case = _case()
    case.label[:] = 0
    with pytest.raises(DataError, match="data/ct: .*foreground"):
        ct_statistics([case], where="data/ct")


@pytest.mark.parametrize("statistics", [{"mean": 1.0}, {"clip_low": 1, "clip_high": 0, "mean": 0, "std": 1},
                                        {"clip_low": 0, "clip_high": 1, "mean": "a", "std": 1}])
def test_bad_ct_statistics_are_a_config_error(statistics):
    with pytest.raises(ConfigError, match="intensity_statistics"):
        PreprocessConfig(intensity="ct", intensity_statistics=statistics)


def test_statistics_for_another_scheme_are_a_config_error():
    with pytest.raises(ConfigError, match="for intensity 'ct'"):
        PreprocessConfig(intensity="zscore", intensity_statistics={"clip_low": 0, "clip_high": 1, "mean": 0, "std": 1})


def test_a_config_without_statistics_keeps_the_dictionary_of_older_records():
    assert "intensity_statistics" not in PreprocessConfig().to_dict()
    stats = {"clip_low": -100.0, "clip_high": 300.0, "mean": 40.0, "std": 60.0}
    config = PreprocessConfig(intensity="ct", intensity_statistics=stats)
    assert PreprocessConfig(**json.loads(json.dumps(config.to_dict()))) == config


def test_prepare_dataset_computes_ct_statistics_from_the_cases_it_reads(tmp_path):
    write_nnunet_dataset(tmp_path / "data", n=3, size=16)
    prepared = prepare_dataset(tmp_path / "data", PreprocessConfig(intensity="ct"), cache_dir=tmp_path / "cache")
    expected = ct_statistics(read_dataset(tmp_path / "data"))
    assert recorded_config(prepared)["intensity_statistics"] == pytest.approx(expected)
    again = prepare_dataset(tmp_path / "data", PreprocessConfig(intensity="ct"), cache_dir=tmp_path / "cache")
    assert recorded_config(again) == recorded_config(prepared)  # from the cache, statistics included
    subset = prepare_dataset(tmp_path / "data", PreprocessConfig(intensity="ct"), cache_dir=tmp_path / "cache",
                             cases=["case00", "case02"])
    assert [p.case_id for p in subset] == ["case00", "case02"]
    assert recorded_config(subset)["intensity_statistics"] != recorded_config(prepared)["intensity_statistics"]


def test_spacing_resample_and_inverse_restore_the_original_shape_and_affine(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-120.0, -120.0, -77.0]
    shape = (60, 64, 40)
    image = np.zeros(shape, np.float32)
    image[8:52, 10:56, 5:35] = 100.0
    label = np.zeros(shape, np.uint8)
    label[20:36, 24:40, 12:24] = 1
    case = Case("p1", image, label, affine, nibabel.Nifti1Header(), None, None)
    prepared = preprocess(case, PreprocessConfig(spacing=(4.0, 4.0, 4.0)))
    assert prepared.record["shape_after_resample"] == [11, 12, 8]  # the 44x46x30 mm brain box at 4 mm
    assert prepared.record["output_zooms"] == pytest.approx([4.0, 46 / 12, 30 / 8])
    restored = invert(prepared.label, prepared.record)
    assert restored.shape == shape
    overlap = 2 * (restored & label).sum() / (restored.sum() + label.sum())
    assert overlap > 0.8
    write_like(restored, affine_from_record(prepared.record), nibabel.Nifti1Header(), tmp_path / "p1.nii.gz")
    _, written_affine, _ = read_image(tmp_path / "p1.nii.gz")
    np.testing.assert_allclose(written_affine, affine)


@pytest.mark.parametrize("codes", [(2, 4), (0, 1), (1, 0), (0, 0)])
def test_a_written_prediction_keeps_the_inputs_qform_and_sform_codes(tmp_path, codes):
    affine = oblique_lps_affine()
    source = nibabel.Nifti1Image(np.ones((6, 7, 8), np.float32), affine)
    source.set_qform(affine, code=codes[0])
    source.set_sform(affine, code=codes[1])
    nibabel.save(source, tmp_path / "in.nii.gz")
    data, read_affine, header = read_image(tmp_path / "in.nii.gz")
    write_like(data.astype(np.uint8), read_affine, header, tmp_path / "out.nii.gz", dtype=np.uint8)
    written = nibabel.load(tmp_path / "out.nii.gz")
    assert (int(written.header["qform_code"]), int(written.header["sform_code"])) == codes
    np.testing.assert_allclose(written.affine, read_affine, atol=1e-5)


def test_thresholding_the_inverted_probability_gives_the_inverted_mask():
    case = _case(shape=(30, 26, 20))
    prepared = preprocess(case, PreprocessConfig(resample_shape=(13, 11, 9), divisible_by=8))
    rng = np.random.default_rng(3)
    foreground = rng.uniform(0, 1, prepared.image.shape).astype(np.float32)
    probs = np.stack([1 - foreground, foreground])
    mask, probability = mask_and_probability(probs, prepared.record)
    assert mask.shape == probability.shape == case.image.shape
    assert 0 < mask.sum() < mask.size
    np.testing.assert_array_equal(mask, (probability > 0.5).astype(np.uint8))


def test_the_preprocessing_cache_is_compressed_and_old_uncompressed_entries_still_read(tmp_path):
    write_nnunet_dataset(tmp_path / "data", n=2, size=16)
    prepared = prepare_dataset(tmp_path / "data", PreprocessConfig(), cache_dir=tmp_path / "cache")
    entries = sorted((tmp_path / "cache").rglob("0000*.npz"))
    assert entries
    with zipfile.ZipFile(entries[0]) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    old = tmp_path / "old.npz"
    record = np.frombuffer(json.dumps(prepared[0].record).encode(), dtype=np.uint8)
    np.savez(old, image=prepared[0].image, label=prepared[0].label, record=record)
    loaded = preprocess_module._load_prepared(old)
    np.testing.assert_array_equal(loaded.image, prepared[0].image)
    assert loaded.record == prepared[0].record
