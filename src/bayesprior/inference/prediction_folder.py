"""The folder predictions are written to, and its manifest: which files bayesprior wrote there, from which
input, with which model (path and SHA-256) and settings.

``bayesprior_predictions.json`` (format ``bayesprior.predictions/1``)::

    {"format": "bayesprior.predictions/1",
     "runs": {"<run id>": {"model": "runs/target/model.pt", "model_sha256": "...", "settings": {...},
                           "preprocess": {...}}},
     "files": {"case_01.nii.gz": {"run": "<run id>", "input": "data/imagesTs/case_01_0000.nii.gz"}, ...}}

A file is entered in the manifest before it is written, so a run killed in between still owns it. A file
of the folder that the manifest does not list is someone else's: predicting over it is refused unless the
caller says ``overwrite``. Predicting into the folder of the inputs, or into their labels' folder, is
always refused.

One folder holds the predictions of one model with one set of settings (`same_predictor`: the model's
SHA-256, the prediction settings and the preprocessing; the device aside). A run with another model or other
settings into a folder that holds predictions is refused, naming both, unless the caller says ``overwrite``:
then the other runs' files are removed first, so that the folder never mixes them (`PredictionFolder`).
`predictors_of` tells `evaluate` which runs made the predictions it scores.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..atomic import atomic_write_json
from ..errors import DataError

MANIFEST_NAME = "bayesprior_predictions.json"
MANIFEST_FORMAT = "bayesprior.predictions/1"
#: prediction settings that say where a run ran, not what it predicts: runs that differ only in them may share
#: a folder
EXECUTION_SETTINGS = ("device",)


def run_id(run: Mapping[str, Any]) -> str:
    """A short id of a prediction run: the same model, settings and preprocessing give the same id."""
    text = json.dumps({k: run.get(k) for k in ("model_sha256", "settings", "preprocess")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _predictor(run: Mapping[str, Any]) -> dict[str, Any]:
    """What decides a run's predictions: the model's SHA-256, the settings (execution ones aside), the
    preprocessing."""
    settings = run.get("settings")
    if not isinstance(settings, dict):
        settings = {}
    return {"model_sha256": run.get("model_sha256"), "preprocess": run.get("preprocess"),
            "settings": {k: v for k, v in settings.items() if k not in EXECUTION_SETTINGS}}


def same_predictor(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Whether two runs' records (as the manifest keeps them) make the same predictions: same model (SHA-256),
    settings and preprocessing; where they ran (`EXECUTION_SETTINGS`) aside."""
    return _predictor(first) == _predictor(second)


def describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """How run `new` differs from run `old`, for a message: their models (file and SHA-256), or the settings and
    preprocessing values that differ (``overlap 0.5 -> 0.25``)."""
    if old.get("model_sha256") != new.get("model_sha256"):
        return (f"model {old.get('model')} (SHA-256 {str(old.get('model_sha256'))[:12]}) -> "
                f"{new.get('model')} (SHA-256 {str(new.get('model_sha256'))[:12]})")
    first, second = _predictor(old), _predictor(new)
    changes = []
    for part in ("settings", "preprocess"):
        before, after = first[part] or {}, second[part] or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{key} {_shown(before.get(key))} -> {_shown(after.get(key))}")
    return ", ".join(changes)


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def predictors_of(folder: str | Path, names: Iterable[str]) -> list[tuple[dict[str, Any], list[str]]]:
    """The runs that wrote the files `names` of a prediction folder, by what they predict (`same_predictor`):
    a list of (a run's record, the names it wrote). Files the manifest does not list are left out; a folder
    without a manifest gives [].

    Raises:
        DataError: a manifest that cannot be read.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.exists():
        return []
    return _group_by_predictor(read_manifest(path), names)


def _group_by_predictor(manifest: Mapping[str, Any], names: Iterable[str]) -> list[tuple[dict[str, Any], list[str]]]:
    groups: list[tuple[dict[str, Any], list[str]]] = []
    for name in names:
        entry = manifest["files"].get(name)
        run = manifest["runs"].get(entry.get("run")) if isinstance(entry, dict) else None
        if not isinstance(run, dict):
            continue
        for record, members in groups:
            if same_predictor(record, run):
                members.append(name)
                break
        else:
            groups.append((run, [name]))
    return groups


def read_manifest(path: Path) -> dict[str, Any]:
    """The prediction manifest at `path`. Raises `DataError` naming it if it cannot be read or is not one."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"prediction manifest cannot be read ({exc}); remove it only if no "
                              "file of the folder needs protecting, or predict into another folder") from None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
            or not isinstance(manifest.get("runs"), dict) or not isinstance(manifest.get("files"), dict)):
        raise DataError(path, f"not a prediction manifest (expected format {MANIFEST_FORMAT!r})")
    return manifest


def refuse_input_folders(out_dir: Path, inputs: Sequence[Path], in_dir: Path) -> None:
    """Raise `DataError` if `out_dir` is the folder of the inputs, `in_dir`, or a label folder beside them.

    ``predict MODEL ds/imagesTr ds/labelsTr`` would otherwise replace every label with a prediction.
    """
    out = os.path.realpath(out_dir)
    image_folders = {Path(os.path.realpath(p.parent)) for p in inputs} | {Path(os.path.realpath(in_dir))}
    label_folders = {Path(os.path.realpath(in_dir)) / name for name in ("labelsTr", "labelsTs")}
    for folder in list(image_folders):
        if folder.name.startswith("images"):
            label_folders.add(folder.parent / ("labels" + folder.name[len("images"):]))
    if Path(out) in image_folders:
        raise DataError(out_dir, "is the folder of the input images; predictions go to a folder of their own")
    if Path(out) in label_folders:
        raise DataError(out_dir, "is the label folder of the input images; predicting there would replace the "
                                 "labels, so choose another output folder")


class PredictionFolder:
    """The output folder of one prediction run and its manifest (see the module docstring).

    Args:
        folder: the output folder (created if missing).
        run: what the manifest records about this run: ``model``, ``model_sha256``, ``settings``,
            ``preprocess``.
    Raises:
        DataError: a manifest that cannot be read.
    """

    def __init__(self, folder: str | Path, run: Mapping[str, Any]):
        self.folder = Path(folder)
        self.path = self.folder / MANIFEST_NAME
        self.run = dict(run)
        self.run_id = run_id(run)
        self.manifest: dict[str, Any] = read_manifest(self.path) if self.path.exists() else \
            {"format": MANIFEST_FORMAT, "runs": {}, "files": {}}
        self.manifest["runs"][self.run_id] = self.run

    def other_predictors(self) -> list[tuple[dict[str, Any], list[str]]]:
        """The runs of another model or other settings (`same_predictor`) whose files are still in the folder,
        each with the names of those files."""
        present = [name for name in self.manifest["files"] if (self.folder / name).exists()]
        return [(record, names) for record, names in _group_by_predictor(self.manifest, present)
                if not same_predictor(record, self.run)]

    def refuse_other_predictors(self) -> None:
        """Raise `DataError` if the folder holds predictions of another model or other settings, naming both."""
        others = self.other_predictors()
        if others:
            record, names = others[0]
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            raise DataError(self.folder, f"holds predictions of another model or other settings "
                                         f"({describe_difference(record, self.run)}) in {', '.join(names[:3])}"
                                         f"{more}; one folder holds one model's predictions with one set of settings: "
                                         "predict into another folder, or pass --overwrite (overwrite=True) to "
                                         "replace them all")

    def remove_other_predictors(self) -> list[str]:
        """Delete the files of every run of another model or other settings, and drop them from the manifest;
        return their names. The files go first: a run killed in between leaves entries without files, which
        protect nothing and are dropped by the next `claim`."""
        removed = [name for _, names in self.other_predictors() for name in names]
        for name in removed:
            (self.folder / name).unlink(missing_ok=True)
        for name in removed:
            del self.manifest["files"][name]
        if removed:
            atomic_write_json(self.manifest, self.path)
        return removed

    def foreign_files(self, names: Sequence[str]) -> list[str]:
        """Those of `names` that exist in the folder but were not written by bayesprior (not in the manifest)."""
        return [n for n in names if (self.folder / n).exists() and n not in self.manifest["files"]]

    def refuse_foreign(self, names: Sequence[str]) -> None:
        """Raise `DataError` if a file of `names` exists in the folder and the manifest does not list it."""
        foreign = self.foreign_files(names)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise DataError(self.folder, f"holds files that bayesprior did not write ({', '.join(foreign[:3])}{more}) "
                                         "with the names of predictions; predict into another folder, or pass "
                                         "--overwrite (overwrite=True) to replace them")

    def claim(self, names: Sequence[str], input_path: Path) -> list[Path]:
        """Enter `names` in the manifest as this run's outputs from `input_path`, before they are written;
        return their paths. Runs that no file refers to any more are dropped from the manifest."""
        for name in names:
            self.manifest["files"][name] = {"run": self.run_id, "input": str(input_path)}
        used = {entry.get("run") for entry in self.manifest["files"].values() if isinstance(entry, dict)}
        self.manifest["runs"] = {k: v for k, v in self.manifest["runs"].items() if k in used}
        atomic_write_json(self.manifest, self.path)
        return [self.folder / name for name in names]


def recorded_inputs(folder: str | Path) -> dict[str, Path]:
    """The input image each file of a prediction folder was predicted from, by file name, as its manifest records
    them ({} for a folder without a readable manifest: predictions bayesprior did not write)."""
    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text())
        files = manifest["files"]
        return {name: Path(entry["input"]) for name, entry in files.items()
                if isinstance(entry, dict) and isinstance(entry.get("input"), str)}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return {}
