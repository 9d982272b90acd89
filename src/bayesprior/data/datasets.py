"""`read_dataset`: find the layout of a folder among the registered dataset layouts and read its cases."""
from __future__ import annotations

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
    raise DataError(folder, f"no known dataset layout recognised (known: {', '.join(registry.names()) or 'none'})")


def read_dataset(folder: str | Path, layout: str | None = None, *, channel: str | int | None = None,
                 labels: str | Sequence[int] = "whole", subset: str = "train") -> list[Case]:
    """Read every case of a dataset folder.

    Args:
        folder: dataset root (nnU-Net `DatasetXXX_Name`, MSD `TaskXX_Name`, or a BRATS folder with HGG/LGG).
        layout: registered layout name (`nnunet`, `msd`, `brats`, or a plugin's); None detects it.
        channel: channel / modality / sequence to read, by name or index; needed when there are several.
        labels: "whole" (foreground = label > 0) or the label values that count as foreground.
        subset: "train" (cases with labels) or "test" (images only, label None).
    Returns:
        the cases sorted by case id.
    Raises:
        DataError: missing/empty folder, unknown layout, bad or inconsistent files, no cases.
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
    return sorted(cases, key=lambda c: c.case_id)
