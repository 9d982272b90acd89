"""nnU-Net v2 raw datasets: dataset.json, imagesTr/{CASE}_{XXXX}.ext, labelsTr/{CASE}.ext, imagesTs/."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bayesprior.data import Case, CaseFiles, channel_file_name, resolve_channel, split_channel_suffix
from bayesprior.errors import DataError, MissingSubsetError

from ._common import declared_label_values, read_dataset_json, try_dataset_json

REQUIRED_KEYS = ("channel_names", "labels", "numTraining", "file_ending")


def detect(folder: Path) -> bool:
    """An nnU-Net v2 folder has a dataset.json with `channel_names` and an imagesTr/ folder."""
    meta = try_dataset_json(folder)
    return meta is not None and "channel_names" in meta and (folder / "imagesTr").is_dir()


def _channel_names(meta: dict, path: Path) -> list[str]:
    names = meta["channel_names"]
    if not isinstance(names, dict) or not names:
        raise DataError(path, "'channel_names' must be a non-empty mapping like {\"0\": \"T2\"}")
    try:
        order = sorted(names, key=int)
    except ValueError:
        raise DataError(path, f"'channel_names' keys must be channel indices, got {list(names)}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise DataError(path, f"'channel_names' keys must be 0..{len(order) - 1}, got {order}")
    return [str(names[k]) for k in order]


def _case_ids(images_dir: Path, ending: str, n_channels: int) -> list[str]:
    """The case ids of an images folder; a file of the dataset's ending that belongs to no declared
    channel is an error, never silently ignored."""
    found: dict[str, set[int]] = {}
    for path in sorted(images_dir.iterdir()):
        if not path.name.endswith(ending) or path.name.startswith("."):
            continue
        case_id, channel = split_channel_suffix(path.name[: len(path.name) - len(ending)])
        if channel is None:
            raise DataError(path, f"has no channel suffix (expected names like {channel_file_name('CASE', 0, ending)})")
        if channel >= n_channels:
            raise DataError(path, f"is channel {channel}, but dataset.json declares {n_channels} channel(s) "
                                  "in 'channel_names'")
        found.setdefault(case_id, set()).add(channel)
    for case_id, channels in sorted(found.items()):
        missing = sorted(set(range(n_channels)) - channels)
        if missing:
            raise DataError(images_dir / channel_file_name(case_id, missing[0], ending),
                            f"case {case_id!r} lacks channel {missing[0]} (the dataset declares {n_channels})")
    return sorted(found)


def files(folder: Path, *, channel: str | int | None = None, subset: str = "train") -> list[CaseFiles]:
    """The training (imagesTr + labelsTr) or test (imagesTs) cases of an nnU-Net v2 dataset."""
    folder = Path(folder)
    meta_path = folder / "dataset.json"
    meta = read_dataset_json(folder, REQUIRED_KEYS)
    names = _channel_names(meta, meta_path)
    index = resolve_channel(channel, names, folder)
    ending = str(meta["file_ending"])
    allowed = tuple(sorted(declared_label_values(meta["labels"], meta_path)))
    images_dir = folder / ("imagesTr" if subset == "train" else "imagesTs")
    if not images_dir.is_dir():
        if subset == "test":
            raise MissingSubsetError(folder, "declares no test images (it has no imagesTs folder)")
        raise DataError(images_dir, "folder is missing")
    case_ids = _case_ids(images_dir, ending, len(names))
    if subset == "train":
        expected = meta["numTraining"]
        if expected != len(case_ids):
            raise DataError(meta_path, f"numTraining is {expected} but imagesTr holds {len(case_ids)} cases")
    cases = []
    for case_id in case_ids:
        image_path = images_dir / channel_file_name(case_id, index, ending)
        label_path = None
        if subset == "train":
            label_path = folder / "labelsTr" / f"{case_id}{ending}"
            if not label_path.is_file():
                raise DataError(label_path, f"label of case {case_id!r} is missing")
        cases.append(CaseFiles(case_id, image_path, label_path, allowed_values=allowed))
    return cases


def label_files(folder: Path) -> dict[str, Path]:
    """The labelsTr files by case id."""
    folder = Path(folder)
    ending = str(read_dataset_json(folder, REQUIRED_KEYS)["file_ending"])
    labels_dir = folder / "labelsTr"
    found = sorted(labels_dir.glob(f"*{ending}")) if labels_dir.is_dir() else []
    return {path.name[: len(path.name) - len(ending)]: path for path in found if not path.name.startswith(".")}


def read(folder: Path, *, channel: str | int | None = None, labels: str | Sequence[int] = "whole",
         subset: str = "train") -> list[Case]:
    """Read the training or test cases of an nnU-Net v2 dataset (`files`), with the label policy `labels`."""
    return [case.load(labels) for case in files(folder, channel=channel, subset=subset)]
