"""Medical Segmentation Decathlon (v1 dataset.json with a `training` list; images may be 4D)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from bayesprior.data import Case, CaseFiles, resolve_channel, strip_nifti_suffix
from bayesprior.errors import DataError, MissingSubsetError

from ._common import declared_label_values, read_dataset_json, try_dataset_json

REQUIRED_KEYS = ("modality", "labels", "training")


def detect(folder: Path) -> bool:
    """An MSD folder has a dataset.json with `modality` and a `training` list."""
    meta = try_dataset_json(folder)
    return meta is not None and "modality" in meta and isinstance(meta.get("training"), list)


def _resolve(folder: Path, relative: object, meta_path: Path) -> Path:
    if not isinstance(relative, str) or not relative:
        raise DataError(meta_path, f"entry {relative!r} is not a file path")
    # "../x" is collapsed; symbolic links are kept in the path, and resolved by the check that every file lies
    # inside the dataset folder (`bayesprior.data.datasets`), so a linked dataset folder stays inside itself
    path = Path(os.path.normpath(folder / relative))
    if not path.is_file():
        raise DataError(path, "listed in dataset.json but missing")
    return path


def files(folder: Path, *, channel: str | int | None = None, subset: str = "train") -> list[CaseFiles]:
    """The `training` (with labels) or `test` (images only) entries of an MSD task folder."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    meta = read_dataset_json(folder, REQUIRED_KEYS)
    if subset == "test" and "test" not in meta:
        raise MissingSubsetError(meta_path, "declares no test images (dataset.json has no 'test' list)")
    modality = meta["modality"]
    if not isinstance(modality, dict) or not modality:
        raise DataError(meta_path, "'modality' must be a non-empty mapping like {\"0\": \"FLAIR\"}")
    try:
        names = [str(modality[k]) for k in sorted(modality, key=int)]
    except ValueError:
        raise DataError(meta_path, f"'modality' keys must be channel indices, got {list(modality)}") from None
    index = resolve_channel(channel, names, folder)
    # a single-modality task stores 3D images; read them as such
    channel_index = index if len(names) > 1 else None
    allowed = tuple(sorted(declared_label_values(meta["labels"], meta_path)))
    cases = []
    if subset == "train":
        for entry in meta["training"]:
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DataError(meta_path, f"training entry {entry!r} lacks 'image' or 'label'")
            image_path = _resolve(folder, entry["image"], meta_path)
            label_path = _resolve(folder, entry["label"], meta_path)
            case_id = strip_nifti_suffix(image_path.name)
            cases.append(CaseFiles(case_id, image_path, label_path, channel_index, allowed))
    else:
        if not isinstance(meta["test"], list):
            raise DataError(meta_path, "'test' must be a list of image paths")
        for entry in meta["test"]:
            image_path = _resolve(folder, entry, meta_path)
            cases.append(CaseFiles(strip_nifti_suffix(image_path.name), image_path, None, channel_index))
    return cases


def label_files(folder: Path) -> dict[str, Path]:
    """The label of every `training` entry, by case id (the image's file name without its suffix)."""
    folder = Path(folder)
    meta = read_dataset_json(folder, ("training",))
    meta_path = folder / "dataset.json"
    found = {}
    for entry in meta["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise DataError(meta_path, f"training entry {entry!r} lacks 'image' or 'label'")
        found[strip_nifti_suffix(Path(str(entry["image"])).name)] = _resolve(folder, entry["label"], meta_path)
    return found


def read(folder: Path, *, channel: str | int | None = None, labels: str | Sequence[int] = "whole",
         subset: str = "train") -> list[Case]:
    """Read the `training` or `test` entries of an MSD task folder (`files`), with the label policy `labels`."""
    return [case.load(labels) for case in files(folder, channel=channel, subset=subset)]
