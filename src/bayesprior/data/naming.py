"""How NIfTI files name their cases: the suffixes, the nnU-Net ``_0000`` channel suffix, case ids.

One place for the conventions every reader and writer shares: `Case_0001_0000.nii.gz` is channel 0 of
case ``Case_0001`` (nnU-Net v2); a predicted mask is ``<case>.nii.gz``, with ``<case>_probability`` and
``<case>_entropy`` maps beside it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DataError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: maps written beside a predicted mask (``<case>_probability.nii.gz``); they are not masks themselves
PROBABILITY_SUFFIX, ENTROPY_SUFFIX = "_probability", "_entropy"
PREDICTION_MAP_SUFFIXES = (PROBABILITY_SUFFIX, ENTROPY_SUFFIX)


def is_nifti_name(path: str | Path) -> bool:
    """True if the file name ends in .nii or .nii.gz (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """'case_0000.nii.gz' -> 'case_0000'."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def channel_file_name(case_id: str, channel: int, ending: str = ".nii.gz") -> str:
    """The nnU-Net file name of one channel of a case: ``("Case_0001", 0)`` -> ``"Case_0001_0000.nii.gz"``."""
    return f"{case_id}_{channel:04d}{ending}"


def split_channel_suffix(stem: str) -> tuple[str, int | None]:
    """``"Case_0001_0000"`` -> ``("Case_0001", 0)``; a stem without a four-digit channel suffix -> ``(stem, None)``."""
    case_id, _, channel = stem.rpartition("_")
    if case_id and len(channel) == 4 and channel.isdigit():
        return case_id, int(channel)
    return stem, None


def case_id_of(path: Path) -> str:
    """File name without the NIfTI suffix and without an nnU-Net channel suffix (``_0000``)."""
    return split_channel_suffix(strip_nifti_suffix(path.name))[0]


def case_ids(paths: Sequence[Path]) -> list[str]:
    """Case ids of input images: without the channel suffix when that keeps them distinct.

    In a plain folder of ``Case_0001.nii.gz``, ``Case_0002.nii.gz`` the four digits name the case, not a
    channel; stripping them would give every file the same id and overwrite the predictions.

    Raises:
        DataError: two files that would still share a case id (``a.nii`` and ``a.nii.gz``), naming both.
    """
    stripped = [case_id_of(p) for p in paths]
    if len(set(stripped)) == len(stripped):
        return stripped
    ids = [strip_nifti_suffix(p.name) for p in paths]
    first: dict[str, Path] = {}
    for path, case_id in zip(paths, ids, strict=True):
        if case_id in first:
            raise DataError(path, f"and {first[case_id]} both name case {case_id!r}; one of them would overwrite "
                                  "the other's prediction, so rename or remove one")
        first[case_id] = path
    return ids


def is_prediction_map(path: Path) -> bool:
    """True for the probability and entropy maps written beside a predicted mask."""
    return strip_nifti_suffix(path.name).endswith(PREDICTION_MAP_SUFFIXES)


def nifti_inputs(folder: str | Path) -> list[Path]:
    """The NIfTI files of `folder`, or, when it holds none, those of its nnU-Net ``imagesTs`` (test images).

    The training images of an ``imagesTr`` beside are never taken instead: only when `folder` is that folder.

    Raises:
        DataError: not a folder; no NIfTI file in `folder` and none in its ``imagesTs`` (an ``imagesTr``
            inside is named, with how to predict it).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    own = _nifti_files(folder)
    if own:
        return own
    test_images = folder / "imagesTs"
    if test_images.is_dir():
        found = _nifti_files(test_images)
        if not found:
            raise DataError(test_images, "holds no NIfTI file (.nii or .nii.gz)")
        return found
    if (folder / "imagesTr").is_dir():
        raise DataError(folder, "holds no NIfTI file (.nii or .nii.gz) and no imagesTs folder of test images; to "
                                f"predict the training images, give their folder ({folder / 'imagesTr'})")
    raise DataError(folder, "holds no NIfTI file (.nii or .nii.gz), nor does an imagesTs inside it")


def _nifti_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.is_file() and p.name.endswith(NIFTI_SUFFIXES))
