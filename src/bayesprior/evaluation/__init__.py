"""Evaluation: overlap metrics, per-case scoring with its summary, and scoring folders of predicted masks.

Modules (each with one job): `metrics` (counts, DSC, IoU, the empty-reference policy), `scoring`
(`CaseScores`: per-case rows and their summary), `folders` (`evaluate_folders`: per_case.csv, summary.json).
"""
from .folders import evaluate_folders
from .metrics import EMPTY_GT_POLICIES, Counts, confusion_counts, dice_score, iou_score
from .scoring import CaseScores

__all__ = ["evaluate_folders", "CaseScores", "EMPTY_GT_POLICIES", "Counts", "confusion_counts", "dice_score",
           "iou_score"]
