"""Deprecated alias of `bayesprior.inference.postprocess`; removed in 0.3."""
from .._deprecation import warn_moved
from ..inference.postprocess import largest_connected_component  # noqa: F401

warn_moved(__name__, "bayesprior.inference.postprocess")
