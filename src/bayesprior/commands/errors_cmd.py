"""Deprecated alias of `bayesprior.commands.common`; removed in 0.3."""
from .._deprecation import warn_moved
from .common import report_errors, trust_file_option  # noqa: F401

warn_moved(__name__, "bayesprior.commands.common")
