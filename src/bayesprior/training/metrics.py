"""Deprecated alias of `bayesprior.evaluation.metrics`; removed in 0.3."""
from .._deprecation import warn_moved
from ..evaluation.metrics import (EMPTY_GT_POLICIES, Counts, confusion_counts, dice_score,  # noqa: F401
                                  iou_score)

warn_moved(__name__, "bayesprior.evaluation.metrics")
