"""Per-case scores and their summary: the one place where a prediction is scored against its reference.

    scores = CaseScores(empty_gt="exclude")
    for case_id, prediction, reference in cases:
        scores.add(case_id, prediction, reference)                # or probability=p: calibration too
    scores.mean()       # {"dsc": ..., "iou": ...}: over the scored cases, NaN if none
    scores.summary()    # the body of summary.json

Both masks are binarised as ``> 0``; see `bayesprior.evaluation.metrics` for the empty-reference policy.
Given the foreground probability of a case, its row also holds the calibration metrics of
`bayesprior.evaluation.calibration` (ECE, Brier, NLL over the case's body mask when given, over the band
around its reference and prediction, and over every voxel; UEO; scored for an empty reference too) and says
over which region ``ece``, ``brier`` and ``nll`` were computed (``calibration_region``); the voxels of that
region are pooled into `reliability` for the reliability diagram.
Used by `bayesprior evaluate` (`evaluate_folders`) and by the experiment's test-set scoring alike.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError
from .calibration import BAND_MM, CALIBRATION_METRICS, UEO_THRESHOLDS, ReliabilityBins, calibration_scores
from .metrics import EMPTY_GT_POLICIES, confusion_counts, dice_score, iou_score

METRICS = ("dsc", "iou")
#: what ``calibration_region`` says: ``ece``, ``brier`` and ``nll`` over the body mask, or over every voxel
BODY_REGION, EVERY_VOXEL = "body mask (the image's non-zero voxels)", "every voxel"


class CaseScores:
    """Accumulates one row of scores per case: DSC, IoU, the confusion counts, and calibration when given
    the foreground probability."""

    def __init__(self, empty_gt: str = "exclude"):
        if empty_gt not in EMPTY_GT_POLICIES:
            raise ConfigError(f"empty_gt must be one of {EMPTY_GT_POLICIES}, got {empty_gt!r}")
        self.empty_gt = empty_gt
        self.rows: list[dict[str, Any]] = []
        self.reliability = ReliabilityBins()

    def add(self, case_id: str, prediction: Any, reference: Any, probability: Any | None = None,
            body: Any | None = None, spacing: Any = None, **columns: Any) -> dict[str, Any]:
        """Score one case; `columns` (e.g. file names) are kept in its row. Returns the row.

        Args:
            probability: the case's foreground probability on the reference's grid; adds the calibration
                metrics to the row (every case of one `CaseScores` should have it, or none).
            body: the case's body mask (`bayesprior.evaluation.calibration.body_mask` of its image): the region of
                ``ece``, ``brier`` and ``nll``; None: every voxel.
            spacing: the voxel size in mm, for the band of ``*_band`` (default 1 mm).
        """
        counts = confusion_counts(prediction, reference)
        row = {"case_id": case_id, "dsc": dice_score(counts, self.empty_gt), "iou": iou_score(counts, self.empty_gt)}
        if probability is not None:
            row.update(calibration_scores(probability, reference, prediction, region=body, spacing=spacing))
            row["calibration_region"] = EVERY_VOXEL if body is None else BODY_REGION
            inside = (slice(None),) if body is None else np.asarray(body, dtype=bool)
            self.reliability.add(np.asarray(probability)[inside], np.asarray(reference)[inside])
        row.update({"tp": counts.tp, "fp": counts.fp, "fn": counts.fn, "n_pred": counts.n_pred,
                    "n_ref": counts.n_ref, **columns})
        self.rows.append(row)
        return row

    def metrics(self) -> tuple[str, ...]:
        """The metrics the rows hold: DSC and IoU, and the calibration metrics if probabilities were given."""
        calibrated = bool(self.rows) and all("ece" in r for r in self.rows)
        return METRICS + (CALIBRATION_METRICS if calibrated else ())

    def mean(self) -> dict[str, float]:
        """Mean of every metric over the cases with a score (NaN, under ``exclude``, is left out); NaN if none."""
        out = {}
        for metric in self.metrics():
            values = [r[metric] for r in self.rows if not math.isnan(r[metric])]
            out[metric] = float(np.mean(values)) if values else math.nan
        return out

    def per_case(self, *keys: str) -> dict[str, dict[str, Any]]:
        """Case id -> its row (only `keys` when given)."""
        return {r["case_id"]: {k: r[k] for k in (keys or r)} for r in self.rows}

    def summary(self) -> dict[str, Any]:
        """Means, counts and every row, JSON-ready (NaN written as null), in the spirit of nnU-Net's summary;
        with probabilities also ``calibration``: the region of ``ece``, ``brier`` and ``nll`` (``region``, or
        ``regions`` where cases differ), the band's width, and the pooled ECE and reliability bins of that region."""
        summary = {
            "mean": {k: _json_number(v) for k, v in self.mean().items()},
            "n_cases": len(self.rows),
            "n_scored": sum(1 for r in self.rows if not math.isnan(r["dsc"])),
            "n_empty_reference": sum(1 for r in self.rows if r["n_ref"] == 0),
            "empty_gt_policy": self.empty_gt,
            "metric_per_case": [{k: _json_number(v) for k, v in r.items()} for r in self.rows],
        }
        if "ece" in self.metrics():
            bins = self.reliability
            regions = sorted({r["calibration_region"] for r in self.rows})
            summary["calibration"] = {
                **({"region": regions[0]} if len(regions) == 1 else {"regions": regions}), "band_mm": BAND_MM,
                "pooled_ece": _json_number(bins.ece()), "n_bins": len(bins.count),
                "bin_edges": bins.edges.tolist(), "bin_count": bins.count.tolist(),
                "bin_mean_probability": [_json_number(float(v)) for v in bins.confidence()],
                "bin_foreground_frequency": [_json_number(float(v)) for v in bins.frequency()],
                "ueo_thresholds": list(UEO_THRESHOLDS)}
        return summary


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value
