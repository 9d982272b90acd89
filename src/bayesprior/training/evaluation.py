"""Evaluate predicted masks against labels: per-case DSC and IoU, means, ``per_case.csv`` and
``summary.json`` (keys in the spirit of nnU-Net's summary: ``mean``, ``metric_per_case``).

Files are matched by case id (file name without NIfTI suffix and without a ``_0000`` channel suffix).
Both masks are binarised as ``> 0`` (whole tumour for BraTS labels). The empty-reference policy is
explicit (see `bayesprior.training.metrics`); with ``exclude`` such cases get NaN, are left out of
the means and are counted in ``n_empty_reference``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data.nifti import strip_nifti_suffix
from ..errors import DataError
from .metrics import EMPTY_GT_POLICIES, confusion_counts, dice_score, iou_score
from .prediction import nifti_inputs


def _nifti_by_case(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in nifti_inputs(folder) if folder.is_dir() else []:
        if path.name.endswith(("_probability.nii.gz", "_entropy.nii.gz")):
            continue
        case_id = strip_nifti_suffix(path.name)  # masks carry no channel suffix: "Case_0001" is the case
        if case_id in files:
            raise DataError(path, f"names the same case {case_id!r} as {files[case_id].name}")
        files[case_id] = path
    return files


def _read_mask(path: Path) -> np.ndarray:
    import nibabel

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
    if empty_gt not in EMPTY_GT_POLICIES:
        from ..errors import ConfigError

        raise ConfigError(f"empty_gt must be one of {EMPTY_GT_POLICIES}, got {empty_gt!r}")
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
    rows = []
    for case_id in sorted(predictions):
        pred, ref = _read_mask(predictions[case_id]), _read_mask(labels[case_id])
        if pred.shape != ref.shape:
            raise DataError(predictions[case_id], f"shape {pred.shape} differs from its label's {ref.shape}")
        counts = confusion_counts(pred, ref)
        rows.append({"case_id": case_id, "dsc": dice_score(counts, empty_gt), "iou": iou_score(counts, empty_gt),
                     "tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "n_pred": counts.n_pred,
                     "n_ref": counts.n_ref, "prediction_file": str(predictions[case_id]),
                     "reference_file": str(labels[case_id])})

    def mean(key: str) -> float | None:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        return float(np.mean(values)) if values else None

    summary = {
        "mean": {"dsc": mean("dsc"), "iou": mean("iou")},
        "n_cases": len(rows),
        "n_scored": sum(1 for r in rows if not math.isnan(r["dsc"])),
        "n_empty_reference": sum(1 for r in rows if r["n_ref"] == 0),
        "empty_gt_policy": empty_gt,
        "metric_per_case": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                            for r in rows],
    }
    out_dir = Path(out_dir) if out_dir is not None else pred_dir
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(buffer.getvalue(), out_dir / "per_case.csv")
    atomic_write_json(summary, out_dir / "summary.json")
    return summary
