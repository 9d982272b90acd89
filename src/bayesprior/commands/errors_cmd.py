"""Turn our errors into clean command-line messages (no traceback for bad input)."""
from __future__ import annotations

import functools
from typing import Any, Callable

import click

from ..errors import BayespriorError


def report_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a click callback so a `BayespriorError` ends the command with its message and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except BayespriorError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
