"""NIfTI reading/writing: round trips, and every kind of bad file gives a DataError naming it."""
import gzip
import struct
import zlib
from itertools import pairwise

import nibabel
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesprior.data import read_image, read_label_values, read_volume, write_like
from bayesprior.errors import DataError

OBLIQUE_LPS = np.array([[-0.9, 0.1, 0.0, 90.0], [0.0, -1.1, 0.2, 120.0], [0.05, 0.0, 2.5, -60.0], [0, 0, 0, 1]])


def _volume(shape=(6, 7, 5), seed=0):
    return np.random.default_rng(seed).uniform(0, 100, shape).astype(np.float32)


def test_write_like_round_trips_data_affine_and_orientation(tmp_path):
    data = _volume()
    header = nibabel.Nifti1Header()
    path = write_like(data, OBLIQUE_LPS, header, tmp_path / "x.nii.gz")
    read, affine, read_header = read_image(path)
    np.testing.assert_allclose(read, data, rtol=1e-6)
    np.testing.assert_allclose(affine, OBLIQUE_LPS, atol=1e-5)
    assert nibabel.aff2axcodes(affine) == nibabel.aff2axcodes(OBLIQUE_LPS)
    assert read_header.get_data_dtype() == np.float32


def test_write_like_stores_requested_integer_dtype(tmp_path):
    path = write_like(np.array([[[0.4, 1.6]]]), np.eye(4), None, tmp_path / "l.nii", dtype="uint8")
    values, _, header = read_label_values(path)
    assert header.get_data_dtype() == np.uint8 and values.tolist() == [[[0, 2]]]


def test_write_like_is_byte_reproducible(tmp_path):
    a = write_like(_volume(), np.eye(4), None, tmp_path / "a.nii.gz").read_bytes()
    b = write_like(_volume(), np.eye(4), None, tmp_path / "b.nii.gz").read_bytes()
    assert a == b


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "nothing.nii.gz")


def test_non_nifti_name_is_a_data_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match="not a NIfTI"):
        read_image(path)


def test_non_nifti_content_is_a_data_error(tmp_path):
    path = tmp_path / "fake.nii"
    path.write_bytes(b"\0" * 400)
    with pytest.raises(DataError, match="fake.nii.*not a NIfTI"):
        read_image(path)


def test_plain_file_named_nii_gz_is_a_data_error(tmp_path):
    path = tmp_path / "plain.nii.gz"
    path.write_bytes(b"this is not gzip at all" * 30)
    with pytest.raises(DataError, match="plain.nii.gz.*not gzip"):
        read_image(path)


def test_truncated_gzip_is_a_data_error(tmp_path):
    path = write_like(_volume((20, 20, 20)), np.eye(4), None, tmp_path / "t.nii.gz")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="t.nii.gz.*(corrupt|truncated)"):
        read_image(path)


def test_truncated_uncompressed_data_is_a_data_error(tmp_path):
    path = write_like(_volume((20, 20, 20)), np.eye(4), None, tmp_path / "t.nii")
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="truncated"):
        read_image(path)


def test_four_d_where_three_d_expected_is_a_data_error(tmp_path):
    path = write_like(np.zeros((4, 4, 4, 2), np.float32), np.eye(4), None, tmp_path / "four.nii.gz")
    with pytest.raises(DataError, match="expected a 3D volume"):
        read_image(path)
    data, _, _ = read_volume(path, channel=1)
    assert data.shape == (4, 4, 4)


def test_channel_out_of_range_is_a_data_error(tmp_path):
    path = write_like(np.zeros((4, 4, 4, 2), np.float32), np.eye(4), None, tmp_path / "four.nii.gz")
    with pytest.raises(DataError, match="channel 2 out of range"):
        read_volume(path, channel=2)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_values_are_a_data_error(tmp_path, bad):
    data = _volume()
    data[1, 2, 3] = bad
    path = write_like(data, np.eye(4), None, tmp_path / "bad.nii.gz")
    with pytest.raises(DataError, match="bad.nii.gz.*NaN or infinite"):
        read_image(path)


def test_non_integer_labels_are_a_data_error(tmp_path):
    path = write_like(np.full((3, 3, 3), 0.5, np.float32), np.eye(4), None, tmp_path / "l.nii.gz")
    with pytest.raises(DataError, match="non-integer"):
        read_label_values(path)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=6),
       values=st.lists(st.integers(min_value=0, max_value=255), min_size=6, max_size=6),
       compressed=st.booleans(), truncate=st.integers(min_value=0, max_value=400))
def test_corrupted_bytes_give_data_error_or_success(tmp_path, positions, values, compressed, truncate):
    name = "c.nii.gz" if compressed else "c.nii"
    path = write_like(_volume((8, 9, 7)), OBLIQUE_LPS, None, tmp_path / name)
    raw = bytearray(path.read_bytes())
    for position, value in zip(positions, values, strict=False):  # values has the most positions' length
        raw[position % len(raw)] = value
    if truncate:
        raw = raw[: max(1, len(raw) - truncate)]
    path.write_bytes(bytes(raw))
    try:
        data, affine, _ = read_image(path)
    except DataError as exc:
        assert str(path) in str(exc)
    else:
        assert data.ndim == 3 and np.isfinite(data).all() and affine.shape == (4, 4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=st.lists(st.integers(min_value=0, max_value=351), min_size=1, max_size=4),
       values=st.lists(st.integers(min_value=0, max_value=255), min_size=4, max_size=4))
def test_corrupted_header_inside_valid_gzip_gives_data_error_or_success(tmp_path, positions, values):
    path = write_like(_volume((8, 9, 7)), np.eye(4), None, tmp_path / "h.nii")
    raw = bytearray(path.read_bytes())
    for position, value in zip(positions, values, strict=False):  # values has the most positions' length
        raw[position] = value
    target = tmp_path / "h.nii.gz"
    target.write_bytes(gzip.compress(bytes(raw)))
    try:
        data, _, _ = read_image(target)
    except DataError as exc:
        assert "h.nii.gz" in str(exc)
    else:
        assert data.ndim == 3 and np.isfinite(data).all()


# --- memory stays bounded: gzip bombs and headers that declare too much ---------------------------------------


def _gzip_stream(*parts: tuple[bytes, int]) -> bytes:
    """One gzip member holding each (block, repeats) in turn, compressed as it goes (never held whole)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [packer.compress(block) for block, repeats in parts for _ in range(repeats)]
    return b"".join(out) + packer.flush()


def _nifti_with_shape(shape, dtype=np.uint8) -> bytes:
    """The uncompressed bytes of a NIfTI-1 file whose header declares `shape`, holding 8x8x8 voxels of data."""
    raw = bytearray(nibabel.Nifti1Image(np.zeros((8, 8, 8), dtype), np.eye(4)).to_bytes())
    struct.pack_into("<8h", raw, 40, len(shape), *shape, *[1] * (7 - len(shape)))  # the header's dim field
    return bytes(raw)


def test_a_gzip_bomb_is_refused_without_holding_what_it_inflates_to(tmp_path):
    image = nibabel.Nifti1Image(np.ones((8, 8, 8), np.uint8), np.eye(4)).to_bytes()
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(_gzip_stream((image, 1), (bytes(1 << 20), 80)))  # 80 MiB of zeros after 512 bytes of data
    assert path.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb.nii.gz.*more than 64 MiB beyond the \d[\d,]* bytes its header"):
        read_image(path)


def test_a_little_padding_after_the_data_of_a_gzip_file_is_read_and_dropped(tmp_path):
    data = np.arange(512, dtype=np.uint8).reshape(8, 8, 8)
    image = nibabel.Nifti1Image(data, np.eye(4)).to_bytes()
    path = tmp_path / "padded.nii.gz"
    path.write_bytes(_gzip_stream((image, 1), (bytes(1000), 1)))
    np.testing.assert_array_equal(read_image(path)[0], data)


def test_a_gzip_file_of_several_members_reads_as_one_stream(tmp_path):
    data = _volume((9, 7, 5))
    raw = nibabel.Nifti1Image(data, np.eye(4)).to_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # as `cat a.gz b.gz` makes
    np.testing.assert_array_equal(read_image(path)[0], data)


@pytest.mark.parametrize("compressed", [False, True])
def test_a_header_that_declares_more_than_max_voxels_is_refused_before_the_data_are_read(tmp_path, compressed):
    raw = _nifti_with_shape((2048, 2048, 1024))
    path = tmp_path / ("huge.nii.gz" if compressed else "huge.nii")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    with pytest.raises(DataError, match=r"huge.nii.*declares 2048x2048x1024 = 4,294,967,296 voxels, more than"):
        read_image(path)


def test_a_truncated_gzip_stream_inside_the_header_is_a_data_error(tmp_path):
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(_nifti_with_shape((8, 8, 8)))[:60])
    with pytest.raises(DataError, match="short.nii.gz.*(corrupt|truncated)"):
        read_image(path)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=3), padding=st.integers(0, 600))
def test_any_split_into_gzip_members_and_zero_padding_reads_the_same_volume(tmp_path, cuts, padding):
    data = _volume((9, 7, 5))
    raw = nibabel.Nifti1Image(data, np.eye(4)).to_bytes()
    edges = [0, *sorted(cuts), len(raw)]
    path = tmp_path / "members.nii.gz"
    path.write_bytes(b"".join(gzip.compress(raw[a:b]) + bytes(padding) for a, b in pairwise(edges)))
    np.testing.assert_array_equal(read_image(path)[0], data)
