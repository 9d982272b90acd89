"""Overlap metrics of binary masks: TP/FP/FN counts, DSC and IoU, with an explicit empty-GT policy.

Both masks are binarised as ``> 0``. DSC = 2 TP / (2 TP + FP + FN), IoU = TP / (TP + FP + FN).
When the ground truth is empty the score depends on `empty_gt`:

- ``"exclude"`` (default, as nnU-Net and MONAI): NaN, left out of means and counted separately;
- ``"one"``: 1 if the prediction is empty too, else 0 (MONAI's ``ignore_empty=False``);
- ``"zero"``: always 0 (the paper's reference code).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError

EMPTY_GT_POLICIES = ("exclude", "one", "zero")


class Counts(NamedTuple):
    tp: int
    fp: int
    fn: int
    n_pred: int
    n_ref: int


def confusion_counts(prediction, reference) -> Counts:
    """TP, FP, FN and the mask sizes of two arrays of the same shape (binarised as > 0)."""
    pred = np.asarray(prediction) > 0
    ref = np.asarray(reference) > 0
    if pred.shape != ref.shape:
        raise ConfigError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    return Counts(tp, n_pred - tp, n_ref - tp, n_pred, n_ref)


def _check_policy(empty_gt: str) -> None:
    if empty_gt not in EMPTY_GT_POLICIES:
        raise ConfigError(f"empty_gt must be one of {EMPTY_GT_POLICIES}, got {empty_gt!r}")


def _empty_score(counts: Counts, empty_gt: str) -> float:
    _check_policy(empty_gt)
    if empty_gt == "exclude":
        return math.nan
    if empty_gt == "one":
        return 1.0 if counts.n_pred == 0 else 0.0
    return 0.0


def dice_score(counts: Counts, empty_gt: str = "exclude") -> float:
    """DSC from counts; see the module docstring for an empty reference."""
    _check_policy(empty_gt)
    if counts.n_ref == 0:
        return _empty_score(counts, empty_gt)
    return 2 * counts.tp / (2 * counts.tp + counts.fp + counts.fn)


def iou_score(counts: Counts, empty_gt: str = "exclude") -> float:
    """IoU (Jaccard) from counts; see the module docstring for an empty reference."""
    _check_policy(empty_gt)
    if counts.n_ref == 0:
        return _empty_score(counts, empty_gt)
    return counts.tp / (counts.tp + counts.fp + counts.fn)
