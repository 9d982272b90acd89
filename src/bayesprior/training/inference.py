"""Deprecated alias of `bayesprior.inference.sliding_window`; removed in 0.3."""
from .._deprecation import warn_moved
from ..inference.sliding_window import (gaussian_importance_map, pad_to_multiple,  # noqa: F401
                                        predict_probabilities, sliding_window, window_starts)

warn_moved(__name__, "bayesprior.inference.sliding_window")
