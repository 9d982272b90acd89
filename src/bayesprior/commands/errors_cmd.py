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


def trust_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--trust-file``: read model files that need the unsafe unpickler (older files), with a warning."""

    @functools.wraps(command)
    def wrapper(*args: Any, trust_file: bool = False, **kwargs: Any) -> Any:
        if not trust_file:
            return command(*args, **kwargs)
        from ..safe_load import trusting_files

        click.echo("warning: --trust-file: model files are read with the unsafe unpickler; "
                   "use it only for files whose origin you trust", err=True)
        with trusting_files():
            return command(*args, **kwargs)

    return click.option("--trust-file", is_flag=True,
                        help="Read model files that hold more than plain types (older versions). "
                             "Such a file can run code: only for files you trust.")(wrapper)
