"""Deprecated alias of `bayesprior.inference.sliding_window_prediction`; removed in 0.3."""
from .._deprecation import warn_moved
from ..inference.sliding_window_prediction import (gaussian_importance_map, pad_to_multiple,  # noqa: F401
                                                   predict_probabilities, sliding_window, window_starts)

warn_moved(__name__, "bayesprior.inference.sliding_window_prediction")
