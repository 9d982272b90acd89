"""Find the layout of a folder among the registered dataset layouts and read its cases (`read_dataset`), the
images to predict (`prediction_files`) or the labels to score against (`label_files`), in any layout."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError, DataError, MissingSubsetError
from ..plugins import dataset_layout_registry
from .cases import Case, CaseFiles, label_policy_values
from .naming import case_ids, is_nifti_name, is_prediction_map, nifti_inputs, split_channel_suffix, strip_nifti_suffix

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


def find_layout(folder: str | Path) -> str | None:
    """Name of the first registered layout whose `detect(folder)` is true, or None."""
    for entry in dataset_layout_registry().entries():
        detect = entry.extras.get("detect")
        if detect is not None and detect(Path(folder)):
            return entry.name
    return None


def detect_layout(folder: str | Path) -> str:
    """Name of the first registered layout whose `detect(folder)` is true.

    Raises:
        DataError: no layout recognises the folder.
    """
    folder = check_folder(folder)
    found = find_layout(folder)
    if found is not None:
        return found
    registry = dataset_layout_registry()
    known = "; ".join(f"{e.name}: {e.description}" if e.description else e.name for e in registry.entries())
    raise DataError(folder, f"no known dataset layout recognised{_dataset_json_problem(folder)} "
                            f"(known layouts: {known or 'none'})")


def _dataset_json_problem(folder: Path) -> str:
    """What is wrong with the folder's dataset.json, the file most layouts are recognised by (or "")."""
    path = folder / "dataset.json"
    if not path.exists():
        return ": there is no dataset.json"
    unreadable = _unreadable_dataset_json(path)
    if unreadable is not None:
        return f": dataset.json {unreadable}"
    keys = ", ".join(sorted(json.loads(path.read_text()))[:8]) or "none"
    return f": dataset.json has the keys {keys}, which no layout expects (or its folders are missing)"


def _unreadable_dataset_json(path: Path) -> str | None:
    """Why the dataset.json at `path` cannot be read as a JSON object, or None if it can."""
    try:
        meta = json.loads(path.read_text())
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    except json.JSONDecodeError as exc:
        return f"is not valid JSON ({exc})"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if isinstance(meta, dict) else f"holds a JSON {type(meta).__name__}, not an object"


def _refuse_unreadable_dataset_json(folder: Path) -> None:
    """`DataError` if `folder` has a dataset.json that cannot be read: no layout recognises the folder then,
    and reading it as a plain folder would silently take other files than the dataset declares."""
    path = folder / "dataset.json"
    problem = _unreadable_dataset_json(path) if path.is_file() else None
    if problem is not None:
        raise DataError(path, f"{problem}, so the dataset's layout cannot be recognised")


def read_dataset(folder: str | Path, layout: str | None = None, *, channel: str | int | None = None,
                 labels: str | Sequence[int] = "whole", subset: str = "train",
                 allow_outside_paths: bool = False, cases: Sequence[str] | None = None) -> list[Case]:
    """Read every case of a dataset folder.

    Args:
        folder: dataset root (nnU-Net `DatasetXXX_Name`, MSD `TaskXX_Name`, or a BRATS folder with HGG/LGG).
        layout: registered layout name (`nnunet`, `msd`, `brats`, or a plugin's); None detects it.
        channel: channel / modality / sequence to read, by name or index; needed when there are several.
        labels: "whole" (foreground = label > 0) or the label values that count as foreground.
        subset: "train" (cases with labels) or "test" (images only, label None).
        allow_outside_paths: read files that lie outside `folder` (an MSD dataset.json may name
            absolute paths or ``../``); refused by default.
        cases: read only the cases with these ids (a layout that lists its files reads no other case).
    Returns:
        the cases sorted by case id.
    Raises:
        DataError: missing/empty folder, unknown layout, bad or inconsistent files, no cases, two cases
            with one id, a file outside the folder, a case id in `cases` that the dataset does not have.
        ConfigError: bad subset, channel or label policy.
    """
    if subset not in SUBSETS:
        raise ConfigError(f"subset must be one of {SUBSETS}, got {subset!r}")
    label_policy_values(labels)
    folder = check_folder(folder)
    name = layout or detect_layout(folder)
    entry = dataset_layout_registry().get(name)
    if entry.extras.get("files") is not None:
        listed = dataset_files(folder, name, channel=channel, subset=subset,
                               allow_outside_paths=allow_outside_paths, cases=cases)
        return [files.load(labels) for files in listed]
    found = entry.obj(folder, channel=channel, labels=labels, subset=subset)
    return _checked_cases(found, folder, f"no {subset} cases found ({name} layout)", allow_outside_paths, cases)


def dataset_files(folder: str | Path, layout: str | None = None, *, channel: str | int | None = None,
                  subset: str = "train", allow_outside_paths: bool = False,
                  cases: Sequence[str] | None = None) -> list[CaseFiles]:
    """The files of every case of a dataset folder (or of the cases `cases` names), sorted by case id, without
    reading them; the arguments and errors are `read_dataset`'s. The layout must list its files (``files=``)."""
    folder = check_folder(folder)
    name = layout or detect_layout(folder)
    lister = dataset_layout_registry().get(name).extras.get("files")
    if lister is None:
        raise DataError(folder, f"the {name} layout cannot list its files without reading them (its plugin "
                                "registers no files=)")
    found = lister(folder, channel=channel, subset=subset)
    return _checked_cases(found, folder, f"no {subset} cases found ({name} layout)", allow_outside_paths, cases)


def _checked_cases(found: Sequence, folder: Path, none_found: str, allow_outside_paths: bool,
                   cases: Sequence[str] | None) -> list:
    """The cases (or case files) a layout found, checked (some, one id each, inside the folder unless allowed),
    those that `cases` names, sorted by case id."""
    if not found:
        raise DataError(folder, none_found)
    _refuse_duplicate_ids(found)
    if not allow_outside_paths:
        _refuse_outside_files(folder, found)
    return sorted(_chosen(found, cases, folder), key=lambda c: c.case_id)


def dataset_case_ids(folder: str | Path, layout: str | None = None, *, channel: str | int | None = None,
                     subset: str = "train", allow_outside_paths: bool = False) -> list[str]:
    """The case ids of a dataset, sorted; read from the file listing when the layout gives one (`dataset_files`),
    else from the cases read. The arguments and errors are `read_dataset`'s."""
    folder = check_folder(folder)
    name = layout or detect_layout(folder)
    if dataset_layout_registry().get(name).extras.get("files") is not None:
        files = dataset_files(folder, name, channel=channel, subset=subset, allow_outside_paths=allow_outside_paths)
        return [item.case_id for item in files]
    cases = read_dataset(folder, name, channel=channel, subset=subset, allow_outside_paths=allow_outside_paths)
    return [case.case_id for case in cases]


def _chosen(found: Sequence, cases: Sequence[str] | None, folder: Path) -> list:
    """The items of `found` whose case id `cases` names (all of them for None); an unknown id is a DataError."""
    if cases is None:
        return list(found)
    wanted = set(cases)
    unknown = sorted(wanted - {item.case_id for item in found})
    if unknown:
        raise DataError(folder, f"has no case {', '.join(map(repr, unknown[:5]))}"
                                f"{' ...' if len(unknown) > 5 else ''} (asked for by --cases or --split-file)")
    return [item for item in found if item.case_id in wanted]


def prediction_files(folder: str | Path, layout: str | None = None, *, channel: str | int | None = None,
                     allow_outside_paths: bool = False) -> list[CaseFiles]:
    """The images to predict in `folder`, one per case, labels left out.

    A folder of a registered layout (a dataset, or one BRATS patient's folder) gives its test images, in the
    sequence or channel `channel`; never its training images instead: a dataset that declares no test images
    is an error that says how to predict the training images (point at their folder). Any other folder gives
    its NIfTI files (or those of its ``imagesTs``, `nifti_inputs`); when they carry nnU-Net channel suffixes
    of several channels (``_0000``, ``_0001``), `channel` (an index) picks one.

    Raises:
        MissingSubsetError: a dataset that declares no test images.
        DataError: no image, two images with one case id, unreadable or undeclared dataset files, a file
            outside the dataset (unless `allow_outside_paths`).
        ConfigError: several channels and no `channel`, or an unknown one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "is not a folder" if folder.exists() else "does not exist")
    name = layout or find_layout(folder)
    if name is None:
        _refuse_unreadable_dataset_json(folder)
        return _plain_folder_files(nifti_inputs(folder), channel, folder)
    try:
        return dataset_files(folder, name, channel=channel, subset="test", allow_outside_paths=allow_outside_paths)
    except MissingSubsetError as exc:  # say how to predict the training images; never read them unasked
        raise MissingSubsetError(exc.path, f"{exc.problem}; to predict its training images, give their folder "
                                           f"(e.g. {folder / 'imagesTr'})") from None


def _plain_folder_files(paths: Sequence[Path], channel: str | int | None, folder: Path) -> list[CaseFiles]:
    suffixes = [split_channel_suffix(strip_nifti_suffix(p.name)) for p in paths]
    several = _several_channels(suffixes)
    channels = sorted({index for _, index in suffixes if index is not None})
    if channel is None:
        if several:
            raise ConfigError(f"{folder}: holds channels {', '.join(f'_{c:04d}' for c in channels)} of each case; "
                              f"choose one by index with --channel (e.g. --channel {channels[0]})")
    elif several or channels == [0] and all(index == 0 for _, index in suffixes):
        text = str(channel).strip()
        if not text.isdigit() or int(text) not in channels:
            raise ConfigError(f"{folder}: --channel {channel} names no channel of its files (they have "
                              f"{', '.join(f'_{c:04d}' for c in channels)}); give the index, e.g. --channel "
                              f"{channels[0]}")
        paths = [p for p, (_, index) in zip(paths, suffixes, strict=True) if index == int(text)]
    else:
        raise ConfigError(f"{folder}: --channel {channel} has no effect: its files are not the channels of "
                          "cases (nnU-Net's _0000, _0001 suffixes); leave --channel out")
    return [CaseFiles(case_id, path) for path, case_id in zip(paths, case_ids(paths), strict=True)]


def _several_channels(suffixes: Sequence[tuple[str, int | None]]) -> bool:
    """Whether (case id, channel) pairs are nnU-Net's several channels per case: every case has the same
    channels 0..n-1, n > 1 (``Case_0001``, ``Case_0002`` are two cases, not channels 1 and 2 of ``Case``)."""
    per_case: dict[str, set] = {}
    for case_id, index in suffixes:
        per_case.setdefault(case_id, set()).add(index)
    sets = list(per_case.values())
    return all(s == set(range(len(sets[0]))) for s in sets) and len(sets[0]) > 1 if sets else False


def label_files(folder: str | Path, allow_outside_paths: bool = False) -> dict[str, Path]:
    """The label files to score against, by case id: those of a registered layout's dataset folder (BRATS
    ``*_seg``, nnU-Net ``labelsTr``, MSD ``training`` labels), else the NIfTI files of `folder` (or of its
    ``labelsTr``) named ``<case id>.nii.gz``.

    Raises:
        DataError: two files with one case id, unreadable dataset files or dataset.json, a label file that a
            layout names outside `folder` (unless `allow_outside_paths`), as for images.
    """
    folder = Path(folder)
    name = find_layout(folder) if folder.is_dir() else None
    if name is None and folder.is_dir():
        _refuse_unreadable_dataset_json(folder)
    lister = None if name is None else dataset_layout_registry().get(name).extras.get("label_files")
    if lister is not None:
        labels = dict(sorted(lister(folder).items()))
        if not allow_outside_paths:  # a dataset.json's ../ or absolute label path, as for its images
            _refuse_outside_paths(folder, labels.items())
        return labels
    if (folder / "labelsTr").is_dir() and not any(folder.glob("*.nii*")):
        folder = folder / "labelsTr"
    return nifti_by_case(folder)


def nifti_by_case(folder: Path) -> dict[str, Path]:
    """The NIfTI files of `folder` (not the probability or entropy maps beside predicted masks) by case id:
    the file name without its suffix (a mask carries no channel suffix, so ``Case_0001`` is the case). Only
    `folder` itself is read: its imagesTs/imagesTr hold images, never masks, so they are not looked into.

    Raises:
        DataError: two files name one case.
    """
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not (path.is_file() and is_nifti_name(path)) or is_prediction_map(path):
            continue
        case_id = strip_nifti_suffix(path.name)
        if case_id in files:
            raise DataError(path, f"names the same case {case_id!r} as {files[case_id].name}")
        files[case_id] = path
    return files


def _refuse_duplicate_ids(cases: Sequence[Case]) -> None:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            first = seen[case.case_id].image_path
            twice = "is listed twice" if Path(first) == Path(case.image_path) else f"is also the id of {first}"
            raise DataError(case.image_path, f"case id {case.case_id!r} {twice}; every case needs its own id, "
                                             "or it would be trained and counted twice")
        seen[case.case_id] = case


def _refuse_outside_files(folder: Path, cases: Sequence[Case | CaseFiles]) -> None:
    """`_refuse_outside_paths` for the image and label files of `cases`."""
    _refuse_outside_paths(folder, ((case.case_id, path) for case in cases
                                   for path in (case.image_path, case.label_path) if path is not None))


def _refuse_outside_paths(folder: Path, named: Iterable[tuple[str, Path]]) -> None:
    """`DataError` for a (case id, file) whose file lies outside `folder` once symbolic links are resolved: a
    ``../`` or absolute path, or a link inside the folder to a file elsewhere."""
    root = _resolved(folder)
    for case_id, path in named:
        real = _resolved(path)
        if os.path.commonpath([root, real]) != str(root):
            target = "" if real == Path(os.path.abspath(path)) else f" (it resolves to {real})"
            raise DataError(path, f"lies outside the dataset folder {folder}{target}, case {case_id!r}; "
                                  "pass --allow-outside-paths (allow_outside_paths=True) to read it anyway, "
                                  "e.g. for data linked there on purpose")


def _resolved(path: str | Path) -> Path:
    """`path` with every symbolic link resolved; `DataError` for a link loop."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a link loop, before Python 3.13
        raise DataError(path, f"cannot be resolved ({exc})") from None
