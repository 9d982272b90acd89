"""Reading and writing NIfTI volumes with every failure turned into a `DataError` naming the file.

The bytes are read and decompressed here (not by nibabel) so that a truncated or corrupted gzip stream, a
file that is not NIfTI at all, or a header that promises more data than the file holds is reported as one
clear problem instead of a traceback from gzip, zlib, nibabel or numpy. Memory stays bounded: a gzip stream is
decompressed only as far as its header's data reach, and a header may declare at most `MAX_VOXELS` voxels, so a
small file that inflates to gigabytes (a gzip bomb) is refused before it is held.
"""
from __future__ import annotations

import gzip
import io
import math
import struct
import warnings
import zlib
from pathlib import Path

import nibabel
import numpy as np

from ..atomic import atomic_path
from ..errors import DataError
from .naming import NIFTI_SUFFIXES, is_nifti_name, strip_nifti_suffix  # noqa: F401  (their old home)

MAX_VOXELS = 2**28  # the most voxels an image may have, as a file and after resampling (`preprocess`)
_SURPLUS_BYTES = 64 << 20  # a gzip stream may hold this much beyond the data its header declares (checked, dropped)
_CHUNK = 1 << 20


def _declared_bytes(head: bytes, path: Path) -> int | None:
    """The bytes a NIfTI-1/-2 file's header says it holds (data offset + voxels x bytes per voxel), read from
    its first 540 bytes; None when `head` is too short or holds no NIfTI header (`_header_class` says why
    later). A `DataError` for a header that declares more than `MAX_VOXELS` voxels."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
            dims = struct.unpack(order + "8h", head[40:56])
            bitpix, offset = struct.unpack(order + "h", head[72:74])[0], struct.unpack(order + "f", head[108:112])[0]
        elif len(head) >= 540 and struct.unpack(order + "i", head[:4])[0] == 540:
            dims = struct.unpack(order + "8q", head[16:80])
            bitpix, offset = struct.unpack(order + "h", head[14:16])[0], struct.unpack(order + "q", head[168:176])[0]
        else:
            continue
        shape = dims[1:1 + dims[0]] if 1 <= dims[0] <= 7 else ()
        if not shape or min(shape) < 1 or bitpix < 1 or not math.isfinite(offset) or not 0 <= offset < 2**40:
            return None  # nibabel names what is wrong with this header
        voxels = math.prod(shape)
        if voxels > MAX_VOXELS:
            raise DataError(path, f"header declares {'x'.join(map(str, shape))} = {voxels:,} voxels, more than the "
                                  f"{MAX_VOXELS:,} an image may have (bayesprior.data.nifti.MAX_VOXELS)")
        return int(offset) + voxels * ((bitpix + 7) // 8)
    return None


def _gunzip(raw: bytes, path: Path) -> bytes:
    """The decompressed bytes of gzip stream `raw` (several members and zero padding, as gzip allows), up to the
    data its header declares: the standard reader streams, so what lies beyond is read in chunks and dropped (the
    CRC is still checked) unless it exceeds `_SURPLUS_BYTES`, which is an error."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(540)
            limit = _declared_bytes(data, path) or len(data) + _SURPLUS_BYTES
            data += stream.read(max(0, limit - len(data)))
            surplus = 0
            while chunk := stream.read(_CHUNK):
                surplus += len(chunk)
                if surplus > _SURPLUS_BYTES:
                    raise DataError(path, f"decompresses to more than {_SURPLUS_BYTES >> 20} MiB beyond the "
                                          f"{limit:,} bytes its header declares")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(path, f"corrupt or truncated gzip stream ({type(exc).__name__}: {exc})") from None
    return data


def _raw_bytes(path: Path) -> bytes:
    if not path.exists():
        raise DataError(path, "file does not exist")
    if not path.is_file():
        raise DataError(path, "is not a file")
    if not is_nifti_name(path):
        raise DataError(path, "not a NIfTI file (expected a .nii or .nii.gz name)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(path, f"cannot be read: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, path)
    elif str(path).lower().endswith(".gz"):
        raise DataError(path, "named .nii.gz but is not gzip-compressed")
    else:
        _declared_bytes(raw[:540], path)  # refuses a header that declares more than MAX_VOXELS voxels
    return raw


def _header_class(raw: bytes, path: Path):
    if len(raw) < 348:
        raise DataError(path, f"too short to hold a NIfTI header ({len(raw)} bytes)")
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", raw[:4])[0]
        if sizeof_hdr == 348 and raw[344:347] in (b"n+1", b"ni1"):
            return nibabel.Nifti1Image
        if sizeof_hdr == 540 and len(raw) >= 540 and raw[4:7] in (b"n+2", b"ni2"):
            return nibabel.Nifti2Image
    raise DataError(path, "not a NIfTI file (no NIfTI-1/NIfTI-2 header magic)")


def load_nifti(path: str | Path):
    """Load a NIfTI file fully into memory, checking that the header and the data agree.

    Returns:
        a nibabel Nifti1Image or Nifti2Image whose data are backed by memory (no open file).
    Raises:
        DataError: missing file, not NIfTI, corrupt/truncated stream, inconsistent header.
    """
    path = Path(path)
    raw = _raw_bytes(path)
    image_class = _header_class(raw, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = image_class.from_bytes(raw)
            header = image.header
            shape = tuple(int(n) for n in header.get_data_shape())
            itemsize = header.get_data_dtype().itemsize
            offset = int(header.get_data_offset())
    except DataError:
        raise
    except Exception as exc:  # nibabel raises many types on a bad header; all mean the same to a user
        raise DataError(path, f"unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    if not shape or any(n < 1 for n in shape):
        raise DataError(path, f"header gives an empty or invalid shape {shape}")
    needed = offset + int(np.prod(shape, dtype=np.int64)) * itemsize
    if needed > len(raw):
        raise DataError(path, f"truncated: header promises {needed} bytes, file holds {len(raw)}")
    return image


def _as_float_array(image, path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            data = np.asarray(image.dataobj, dtype=np.float64)
    except Exception as exc:
        raise DataError(path, f"voxel data cannot be decoded ({type(exc).__name__}: {exc})") from None
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise DataError(path, f"contains {bad} NaN or infinite voxel values")
    return data


def _checked_affine(image, path: Path) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            affine = np.asarray(image.affine, dtype=np.float64)
    except Exception as exc:
        raise DataError(path, f"affine cannot be computed ({type(exc).__name__}: {exc})") from None
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise DataError(path, "affine is missing or not finite")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "affine is singular (zero voxel size)")
    return affine


def read_volume(path: str | Path, *, channel: int | None = None) -> tuple[np.ndarray, np.ndarray, nibabel.Nifti1Header]:
    """Read a 3D volume, or one channel of a 4D file (axis 3), as float32.

    Args:
        path: a .nii or .nii.gz file.
        channel: index along the 4th axis for 4D files; None requires a 3D file (a trailing axis of
            length 1 is accepted).
    Returns:
        (data float32 3D, affine 4x4 float64, header).
    Raises:
        DataError: anything wrong with the file (see `load_nifti`), a wrong number of dimensions, a channel
            index out of range, NaN or infinite values.
    """
    path = Path(path)
    image = load_nifti(path)
    shape = tuple(int(n) for n in image.header.get_data_shape())
    while len(shape) > 3 and shape[-1] == 1 and (channel is None or len(shape) > 4):
        shape = shape[:-1]
    if channel is None:
        if len(shape) != 3:
            raise DataError(path, f"expected a 3D volume, got shape {shape} ({len(shape)}D)")
    else:
        if len(shape) == 3 and channel == 0:
            pass
        elif len(shape) != 4:
            raise DataError(path, f"expected a 4D volume (x, y, z, channel), got shape {shape}")
        elif not 0 <= channel < shape[3]:
            raise DataError(path, f"channel {channel} out of range: the file has {shape[3]} channels")
    data = _as_float_array(image, path).reshape(shape)
    if data.ndim == 4:
        data = data[..., channel]
    affine = _checked_affine(image, path)
    header = image.header.copy()
    return np.ascontiguousarray(data, dtype=np.float32), affine, header


def read_image(path: str | Path) -> tuple[np.ndarray, np.ndarray, nibabel.Nifti1Header]:
    """Read a 3D NIfTI image as float32.

    Returns:
        (data, affine, header): data float32 with the voxel axes of the file, affine 4x4 float64.
    Raises:
        DataError: missing, corrupt, truncated, non-NIfTI, not 3D, NaN/Inf values, bad affine.
    """
    return read_volume(path)


def read_label_values(path: str | Path) -> tuple[np.ndarray, np.ndarray, nibabel.Nifti1Header]:
    """Read a 3D label map, checking that its values are non-negative integers.

    Returns:
        (labels int64, affine, header).
    Raises:
        DataError: as `read_image`, plus non-integer or negative label values.
    """
    data, affine, header = read_volume(path)
    rounded = np.rint(data)
    if not np.array_equal(rounded, data):
        raise DataError(path, "label map holds non-integer values")
    if rounded.min() < 0:
        raise DataError(path, f"label map holds negative values (min {rounded.min():g})")
    return rounded.astype(np.int64), affine, header


def nifti_bytes(array: np.ndarray, affine: np.ndarray, header=None, dtype=None, compress: bool = True) -> bytes:
    """Serialise an array as NIfTI-1 bytes (gzip with mtime 0 when `compress`, so output is reproducible)."""
    array = np.asarray(array)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if np.issubdtype(dtype, np.integer) and not np.issubdtype(array.dtype, np.integer):
            info = np.iinfo(dtype)
            array = np.clip(np.rint(array), info.min, info.max)
        array = array.astype(dtype)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == bool:
        array = array.astype(np.uint8)
    new_header = nibabel.Nifti1Header() if header is None else nibabel.Nifti1Header.from_header(header)
    image = nibabel.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=new_header)
    image.header.set_data_dtype(array.dtype)
    # stored values are written as they are, never rescaled by a slope inherited from the reference header
    image.header["scl_slope"] = 1.0
    image.header["scl_inter"] = 0.0
    # the reference's qform and sform codes are kept (a scanner's 1 and a template's 4 mean different spaces);
    # without a reference, or when its codes (both 0) could not carry this affine, both are set to 1
    affine = np.asarray(affine, dtype=np.float64)
    codes = (1, 1) if header is None else (int(new_header["qform_code"]), int(new_header["sform_code"]))
    image.set_qform(affine, code=codes[0])
    image.set_sform(affine, code=codes[1])
    if codes == (0, 0) and not np.allclose(image.header.get_best_affine(), affine, atol=1e-5):
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    raw = image.to_bytes()
    return gzip.compress(raw, compresslevel=6, mtime=0) if compress else raw


def write_like(array: np.ndarray, reference_affine: np.ndarray, reference_header, path: str | Path,
               dtype=None) -> Path:
    """Write `array` as NIfTI at `path` (atomically), keeping the reference affine and header fields.

    Args:
        array: 3D (or 4D) data on the reference grid.
        reference_affine: 4x4 affine of the grid (usually the input image's).
        reference_header: header to copy (orientation codes, units, description); may be None.
        path: output file, .nii or .nii.gz.
        dtype: stored data type; default keeps the array's (float64 is stored as float32).
    Returns:
        the path written.
    Raises:
        DataError: the path does not end in .nii/.nii.gz.
    """
    path = Path(path)
    if not is_nifti_name(path):
        raise DataError(path, "output name must end in .nii or .nii.gz")
    payload = nifti_bytes(array, reference_affine, reference_header, dtype,
                          compress=path.name.lower().endswith(".gz"))
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
