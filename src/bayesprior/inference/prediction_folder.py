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
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..atomic import atomic_write_json
from ..errors import DataError

MANIFEST_NAME = "bayesprior_predictions.json"
MANIFEST_FORMAT = "bayesprior.predictions/1"


def run_id(run: Mapping[str, Any]) -> str:
    """A short id of a prediction run: the same model and settings give the same id."""
    text = json.dumps({k: run[k] for k in ("model_sha256", "settings")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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
        self.run_id = run_id(run)
        self.manifest = self._read()
        self.manifest["runs"][self.run_id] = dict(run)

    def _read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"format": MANIFEST_FORMAT, "runs": {}, "files": {}}
        try:
            manifest = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise DataError(self.path, f"prediction manifest cannot be read ({exc}); remove it only if no "
                                       "file of the folder needs protecting, or predict into another folder") from None
        if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
                or not isinstance(manifest.get("runs"), dict) or not isinstance(manifest.get("files"), dict)):
            raise DataError(self.path, f"not a prediction manifest (expected format {MANIFEST_FORMAT!r})")
        return manifest

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
