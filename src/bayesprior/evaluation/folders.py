"""Evaluate predicted masks against labels: per-case DSC and IoU, means, ``per_case.csv`` and
``summary.json`` (keys in the spirit of nnU-Net's summary: ``mean``, ``metric_per_case``).

Files are matched by case id (file name without NIfTI suffix; a mask carries no channel suffix).
Both masks are binarised as ``> 0`` (whole tumour for BraTS labels). The empty-reference policy is
explicit (see `bayesprior.evaluation.metrics`); with ``exclude`` such cases get NaN, are left out of
the means and are counted in ``n_empty_reference``. Scoring is `bayesprior.evaluation.scoring`'s.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import nibabel
import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data.naming import is_prediction_map, nifti_inputs, strip_nifti_suffix
from ..errors import DataError
from .scoring import CaseScores


def _nifti_by_case(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in nifti_inputs(folder) if folder.is_dir() else []:
        if is_prediction_map(path):
            continue
        case_id = strip_nifti_suffix(path.name)  # masks carry no channel suffix: "Case_0001" is the case
        if case_id in files:
            raise DataError(path, f"names the same case {case_id!r} as {files[case_id].name}")
        files[case_id] = path
    return files


def _read_mask(path: Path) -> np.ndarray:
    try:
        return np.asarray(nibabel.load(str(path)).dataobj)
    except Exception as exc:
        raise DataError(path, f"cannot be read as NIfTI ({type(exc).__name__}: {exc})") from None


def evaluate_folders(pred_dir: str | Path, label_dir: str | Path, out_dir: str | Path | None = None,
                     empty_gt: str = "exclude") -> dict[str, Any]:
    """Score every prediction that has a label; write ``per_case.csv`` and ``summary.json`` to `out_dir`
    (default: `pred_dir`) and return the summary.

    Raises:
        DataError: a missing folder, a prediction without a label, or shapes that differ.
    """
    scores = CaseScores(empty_gt)  # checks the policy before any file is read
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    predictions = _nifti_by_case(pred_dir)
    if (label_dir / "labelsTr").is_dir() and not any(label_dir.glob("*.nii*")):
        label_dir = label_dir / "labelsTr"
    labels = _nifti_by_case(label_dir)
    if not predictions:
        raise DataError(pred_dir, "holds no prediction")
    missing = sorted(set(predictions) - set(labels))
    if missing:
        raise DataError(label_dir, f"has no label for predicted case(s) {missing[:5]}")
    for case_id in sorted(predictions):
        pred, ref = _read_mask(predictions[case_id]), _read_mask(labels[case_id])
        if pred.shape != ref.shape:
            raise DataError(predictions[case_id], f"shape {pred.shape} differs from its label's {ref.shape}")
        scores.add(case_id, pred, ref, prediction_file=str(predictions[case_id]),
                   reference_file=str(labels[case_id]))
    summary = scores.summary()
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(scores.rows[0]))
    writer.writeheader()
    writer.writerows(scores.rows)
    atomic_write_text(buffer.getvalue(), out_dir / "per_case.csv")
    atomic_write_json(summary, out_dir / "summary.json")
    return summary
