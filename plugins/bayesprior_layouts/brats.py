"""BRATS 2018 folders: HGG/ and LGG/ hold one folder per patient with *_t1/_t1ce/_t2/_flair/_seg.nii(.gz).

The patient folders may also lie directly in the dataset folder, and one patient's folder
(``<patient>/<patient>_t2.nii.gz``, ...) is a dataset of one case, so `predict` can be pointed at it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from bayesprior.data import Case, CaseFiles
from bayesprior.errors import ConfigError, DataError

SEQUENCES = ("t1", "t1ce", "t2", "flair")
ALIASES = {"t1w": "t1", "t1gd": "t1ce", "t1c": "t1ce", "t2w": "t2"}
BRATS_LABELS = (0, 1, 2, 4)
GRADE_FOLDERS = ("HGG", "LGG")


def _file(patient: Path, suffix: str) -> Path | None:
    for ending in (".nii.gz", ".nii"):
        matches = sorted(patient.glob(f"*_{suffix}{ending}"))
        if matches:
            return matches[0]
    return None


def _is_patient_folder(folder: Path) -> bool:
    """A patient's own folder: it holds ``<folder name>_<sequence>.nii(.gz)``."""
    return any((folder / f"{folder.name}_{s}{ending}").is_file() for s in SEQUENCES for ending in (".nii.gz", ".nii"))


def _patient_folders(folder: Path) -> list[Path]:
    if _is_patient_folder(folder):
        return [folder]
    grades = [folder / g for g in GRADE_FOLDERS if (folder / g).is_dir()]
    roots = grades or [folder]
    return sorted(p for root in roots for p in root.iterdir()
                  if p.is_dir() and any(_file(p, s) for s in SEQUENCES))


def detect(folder: Path) -> bool:
    """A BRATS folder has HGG/ or LGG/, or patient folders holding *_t1/_t1ce/_t2/_flair files, or is one."""
    if any((folder / g).is_dir() for g in GRADE_FOLDERS):
        return True
    return not (folder / "dataset.json").exists() and bool(_patient_folders(folder))


def _sequence_name(channel: str | int | None, available: list[str], folder: Path) -> str:
    if channel is None:
        if len(available) == 1:
            return available[0]
        raise ConfigError(f"{folder}: several sequences ({', '.join(available)}); choose one with --channel "
                          f"(e.g. --channel {available[-1]}), or channel= in Python")
    if isinstance(channel, int) and not isinstance(channel, bool):
        if 0 <= channel < len(SEQUENCES):
            return SEQUENCES[channel]
        raise ConfigError(f"{folder}: sequence index {channel} out of range (0..3 = {', '.join(SEQUENCES)})")
    name = ALIASES.get(str(channel).lower(), str(channel).lower())
    if name not in SEQUENCES:
        raise ConfigError(f"{folder}: unknown BRATS sequence {channel!r} (one of {', '.join(SEQUENCES)})")
    return name


def files(folder: Path, *, channel: str | int | None = None, subset: str = "train") -> list[CaseFiles]:
    """One sequence of every patient; "train" needs a *_seg file per patient, "test" ignores labels."""
    folder = Path(folder)
    patients = _patient_folders(folder)
    if not patients:
        raise DataError(folder, "no patient folders with BRATS sequence files (*_t2.nii.gz, ...) found")
    available = [s for s in SEQUENCES if _file(patients[0], s) is not None]
    sequence = _sequence_name(channel, available, folder)
    cases = []
    for patient in patients:
        image_path = _file(patient, sequence)
        if image_path is None:
            raise DataError(patient / f"{patient.name}_{sequence}.nii.gz", f"sequence {sequence} of patient "
                                                                           f"{patient.name!r} is missing")
        label_path = None
        if subset == "train":
            label_path = _file(patient, "seg")
            if label_path is None:
                raise DataError(patient / f"{patient.name}_seg.nii.gz",
                                f"segmentation of patient {patient.name!r} is missing")
        cases.append(CaseFiles(patient.name, image_path, label_path, allowed_values=BRATS_LABELS))
    return cases


def label_files(folder: Path) -> dict[str, Path]:
    """The *_seg file of every patient that has one, by case id (the patient folder's name)."""
    found = {patient.name: _file(patient, "seg") for patient in _patient_folders(Path(folder))}
    return {case_id: path for case_id, path in found.items() if path is not None}


def read(folder: Path, *, channel: str | int | None = None, labels: str | Sequence[int] = "whole",
         subset: str = "train") -> list[Case]:
    """Read one sequence of every patient (`files`), with the label policy `labels`."""
    return [case.load(labels) for case in files(folder, channel=channel, subset=subset)]
