"""`read_dataset`: find the layout of a folder among the registered dataset layouts and read its cases."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, DataError
from ..plugins import dataset_layout_registry
from .cases import Case, label_policy_values

SUBSETS = ("train", "test")


def check_folder(folder: str | Path) -> Path:
    """The folder as a Path; DataError if it is missing, not a folder, or empty."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(folder, "dataset folder does not exist")
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    if not any(folder.iterdir()):
        raise DataError(folder, "dataset folder is empty")
    return folder


def detect_layout(folder: str | Path) -> str:
    """Name of the first registered layout whose `detect(folder)` is true.

    Raises:
        DataError: no layout recognises the folder.
    """
    folder = check_folder(folder)
    registry = dataset_layout_registry()
    for entry in registry.entries():
        detect = entry.extras.get("detect")
        if detect is not None and detect(folder):
            return entry.name
    known = "; ".join(f"{e.name}: {e.description}" if e.description else e.name for e in registry.entries())
    raise DataError(folder, f"no known dataset layout recognised{_dataset_json_problem(folder)} "
                            f"(known layouts: {known or 'none'})")


def _dataset_json_problem(folder: Path) -> str:
    """What is wrong with the folder's dataset.json, the file most layouts are recognised by (or "")."""
    path = folder / "dataset.json"
    if not path.exists():
        return ": there is no dataset.json"
    try:
        meta = json.loads(path.read_text())
    except UnicodeDecodeError:
        return ": dataset.json is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f": dataset.json is not valid JSON ({exc})"
    except OSError as exc:
        return f": dataset.json cannot be read ({exc.strerror or exc})"
    if not isinstance(meta, dict):
        return f": dataset.json holds a JSON {type(meta).__name__}, not an object"
    keys = ", ".join(sorted(meta)[:8]) or "none"
    return f": dataset.json has the keys {keys}, which no layout expects (or its folders are missing)"


def read_dataset(folder: str | Path, layout: str | None = None, *, channel: str | int | None = None,
                 labels: str | Sequence[int] = "whole", subset: str = "train",
                 allow_outside_paths: bool = False) -> list[Case]:
    """Read every case of a dataset folder.

    Args:
        folder: dataset root (nnU-Net `DatasetXXX_Name`, MSD `TaskXX_Name`, or a BRATS folder with HGG/LGG).
        layout: registered layout name (`nnunet`, `msd`, `brats`, or a plugin's); None detects it.
        channel: channel / modality / sequence to read, by name or index; needed when there are several.
        labels: "whole" (foreground = label > 0) or the label values that count as foreground.
        subset: "train" (cases with labels) or "test" (images only, label None).
        allow_outside_paths: read files that lie outside `folder` (an MSD dataset.json may name
            absolute paths or ``../``); refused by default.
    Returns:
        the cases sorted by case id.
    Raises:
        DataError: missing/empty folder, unknown layout, bad or inconsistent files, no cases, two cases
            with one id, a file outside the folder.
        ConfigError: bad subset, channel or label policy.
    """
    if subset not in SUBSETS:
        raise ConfigError(f"subset must be one of {SUBSETS}, got {subset!r}")
    label_policy_values(labels)
    folder = check_folder(folder)
    name = layout or detect_layout(folder)
    reader = dataset_layout_registry().get(name).obj
    cases = reader(folder, channel=channel, labels=labels, subset=subset)
    if not cases:
        raise DataError(folder, f"no {subset} cases found ({name} layout)")
    _refuse_duplicate_ids(cases)
    if not allow_outside_paths:
        _refuse_outside_files(folder, cases)
    return sorted(cases, key=lambda c: c.case_id)


def _refuse_duplicate_ids(cases: Sequence[Case]) -> None:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            first = seen[case.case_id].image_path
            twice = "is listed twice" if Path(first) == Path(case.image_path) else f"is also the id of {first}"
            raise DataError(case.image_path, f"case id {case.case_id!r} {twice}; every case needs its own id, "
                                             "or it would be trained and counted twice")
        seen[case.case_id] = case


def _refuse_outside_files(folder: Path, cases: Sequence[Case]) -> None:
    root = os.path.abspath(folder)
    for case in cases:
        for path in (case.image_path, case.label_path):
            if path is not None and os.path.commonpath([root, os.path.abspath(path)]) != root:
                raise DataError(path, f"lies outside the dataset folder {folder} (case {case.case_id!r}); "
                                      "pass --allow-outside-paths (allow_outside_paths=True) to read it anyway")
