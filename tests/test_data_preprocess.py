"""Preprocessing: each step, its inverse onto the file's grid, and the on-disk cache."""
import nibabel
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior.data import Case, read_image, write_like
from bayesprior.data import preprocess as preprocess_module
from bayesprior.data.preprocess import (
    PreprocessConfig,
    affine_from_record,
    header_from_record,
    invert,
    prepare_dataset,
    preprocess,
)
from bayesprior.errors import ConfigError, DataError

OBLIQUE_LPS = np.array([[-0.9, 0.1, 0.0, 90.0], [0.0, -1.1, 0.2, 120.0], [0.05, 0.0, 2.5, -60.0], [0, 0, 0, 1]])


def _case(shape=(21, 26, 17), affine=OBLIQUE_LPS):
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    image[3:18, 4:22, 2:15] = rng.uniform(10, 200, (15, 18, 13))
    image[8, 10, 7] = 0  # a hole inside the brain must not shrink the box
    label = np.zeros(shape, np.uint8)
    label[7:12, 9:15, 5:10] = 1
    header = nibabel.Nifti1Header()
    return Case("c1", image, label, affine, header, None, None)


def test_prepared_shape_is_divisible_and_brain_box_is_cropped():
    prepared = preprocess(_case(), PreprocessConfig(divisible_by=8))
    assert all(n % 8 == 0 for n in prepared.image.shape)
    assert prepared.record["crop_box"] == [[3, 18], [4, 22], [2, 15]]
    assert prepared.image.dtype == np.float32 and prepared.label.dtype == np.uint8
    assert prepared.image.min() == 0.0 and prepared.image.max() == pytest.approx(1.0)


def test_invert_restores_label_on_the_original_grid():
    case = _case()
    prepared = preprocess(case, PreprocessConfig(shape=(24, 24, 16)))
    assert prepared.image.shape == (24, 24, 16)
    restored = invert(prepared.label, prepared.record)
    assert restored.shape == case.image.shape
    np.testing.assert_array_equal(restored, case.label)


def test_invert_after_resampling_restores_shape_and_most_of_the_label():
    case = _case()
    prepared = preprocess(case, PreprocessConfig(resample_shape=(30, 20, 12), label_resampling="linear"))
    restored = invert(prepared.label, prepared.record, order=0)
    assert restored.shape == case.image.shape
    overlap = (restored & case.label).sum() * 2 / (restored.sum() + case.label.sum())
    assert overlap > 0.8


def test_spacing_resampling_uses_the_affine_voxel_sizes():
    case = _case(affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    prepared = preprocess(case, PreprocessConfig(spacing=(2.0, 2.0, 2.0), divisible_by=1))
    assert prepared.record["shape_after_resample"] == [8, 9, 13]
    assert invert(prepared.label, prepared.record).shape == case.image.shape


def test_invert_keeps_leading_channel_axes():
    case = _case()
    prepared = preprocess(case, PreprocessConfig())
    probabilities = np.stack([1 - prepared.label, prepared.label]).astype(np.float32)
    restored = invert(probabilities, prepared.record, order=1)
    assert restored.shape == (2,) + case.image.shape


def test_inverted_prediction_written_with_record_keeps_affine_and_orientation(tmp_path):
    case = _case()
    prepared = preprocess(case, PreprocessConfig(shape=(16, 16, 16), intensity="zscore"))
    restored = invert(prepared.label, prepared.record)
    path = write_like(restored, affine_from_record(prepared.record), header_from_record(prepared.record),
                      tmp_path / "pred.nii.gz", dtype="uint8")
    data, affine, _ = read_image(path)
    assert data.shape == case.image.shape
    np.testing.assert_allclose(affine, OBLIQUE_LPS, atol=1e-5)
    assert nibabel.aff2axcodes(affine) == nibabel.aff2axcodes(OBLIQUE_LPS)


def test_zscore_normalises_inside_the_brain_only():
    prepared = preprocess(_case(), PreprocessConfig(intensity="zscore", crop_nonzero=False))
    brain = preprocess(_case(), PreprocessConfig(intensity="none", crop_nonzero=False)).image != 0
    assert abs(prepared.image[brain].mean()) < 1e-3 and abs(prepared.image[brain].std() - 1) < 1e-2
    assert (prepared.image[~brain] == 0).all()


def test_invert_rejects_a_wrong_shape():
    prepared = preprocess(_case(), PreprocessConfig())
    with pytest.raises(DataError, match="does not match the preprocessed shape"):
        invert(np.zeros((3, 3, 3)), prepared.record)


@pytest.mark.parametrize("kwargs", [{"intensity": "robust"}, {"shape": (1, 2)}, {"divisible_by": 0},
                                    {"label_resampling": "cubic"}, {"spacing": (1, 1, 1), "resample_shape": (4, 4, 4)}])
def test_bad_configuration_is_a_config_error(kwargs):
    with pytest.raises(ConfigError):
        PreprocessConfig(**kwargs)


def test_prepare_dataset_second_call_hits_the_cache(tmp_path, monkeypatch):
    from test_data_layouts import make_nnunet

    root = make_nnunet(tmp_path / "ds", channels=("T2",))
    config = PreprocessConfig(divisible_by=4)
    first = prepare_dataset(root, config, cache_dir=tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("preprocess ran again")

    monkeypatch.setattr(preprocess_module, "preprocess", fail)
    second = prepare_dataset(root, config, cache_dir=tmp_path / "cache")
    assert [p.case_id for p in second] == [p.case_id for p in first]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.label, b.label)
        assert a.record == b.record


def test_prepare_dataset_cache_is_keyed_by_configuration_and_files(tmp_path):
    from test_data_layouts import make_nnunet

    root = make_nnunet(tmp_path / "ds", channels=("T2",))
    cache = tmp_path / "cache"
    prepare_dataset(root, PreprocessConfig(), cache_dir=cache)
    prepare_dataset(root, PreprocessConfig(intensity="zscore"), cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    write_like(np.ones((6, 7, 5), np.float32), np.eye(4), None, root / "imagesTs" / "extra_0000.nii.gz")
    prepare_dataset(root, PreprocessConfig(), cache_dir=cache)
    assert len(list(cache.iterdir())) == 3


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(*[st.integers(4, 14)] * 3), data=st.data(), divisible_by=st.sampled_from([1, 4, 8]),
       pad_extra=st.integers(0, 5))
def test_invert_of_preprocess_restores_any_label_inside_the_brain(shape, data, divisible_by, pad_extra):
    starts = [data.draw(st.integers(0, n - 2)) for n in shape]
    stops = [data.draw(st.integers(s + 1, n)) for s, n in zip(starts, shape, strict=True)]
    image = np.zeros(shape, np.float32)
    box = tuple(slice(a, b) for a, b in zip(starts, stops, strict=True))
    image[box] = 1 + np.random.default_rng(0).random(image[box].shape)
    label = np.zeros(shape, np.uint8)
    label[box] = np.random.default_rng(1).integers(0, 2, image[box].shape)
    target = tuple(b - a + pad_extra for a, b in zip(starts, stops, strict=True))
    case = Case("h", image, label, OBLIQUE_LPS, nibabel.Nifti1Header(), None, None)
    prepared = preprocess(case, PreprocessConfig(shape=target, divisible_by=divisible_by))
    assert all(n % divisible_by == 0 for n in prepared.image.shape)
    np.testing.assert_array_equal(invert(prepared.label, prepared.record), label)
