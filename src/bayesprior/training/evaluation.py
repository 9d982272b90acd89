"""Deprecated alias of `bayesprior.evaluation.folders`; removed in 0.3."""
from .._deprecation import warn_moved
from ..evaluation.folders import evaluate_folders  # noqa: F401

warn_moved(__name__, "bayesprior.evaluation.folders")
