"""Evaluation: overlap metrics, calibration of probabilities, per-case scoring with its summary, and scoring folders
of predicted masks.

Modules (each with one job): `metrics` (counts, DSC, IoU, the empty-reference policy), `calibration` (ECE, Brier
score, voxel NLL, uncertainty-error overlap, the reliability diagram), `scoring` (`CaseScores`: per-case rows and
their summary), `folders` (`evaluate_folders`: per_case.csv, summary.json, reliability.png).
"""
from .calibration import ReliabilityBins, calibration_scores
from .folders import evaluate_folders
from .metrics import EMPTY_GT_POLICIES, Counts, confusion_counts, dice_score, iou_score
from .scoring import CaseScores

__all__ = ["evaluate_folders", "CaseScores", "EMPTY_GT_POLICIES", "Counts", "confusion_counts", "dice_score",
           "iou_score", "calibration_scores", "ReliabilityBins"]
