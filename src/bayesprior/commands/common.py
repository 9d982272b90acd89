"""What every command shares: the error handler, the option types that parse and check values before any
work starts, and ``--trust-file``. (The one text-table formatter is `bayesprior.tables.format_table`.)

The command group (`bayesprior.cli`) runs every command, plugins' included, inside `reported_errors`, so
bad input ends with one ``Error: ...`` line and exit code 1, never a traceback.
"""
from __future__ import annotations

import errno
import functools
import json
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

import click
import torch

from ..errors import BayespriorError
from ..experiment.runs import parse_shard
from ..safe_load import offering_trust_option, trusting_files


@contextmanager
def reported_errors() -> Iterator[None]:
    """Turn our errors and file-system errors into a one-line `click.ClickException` (exit code 1).

    A `BayespriorError` names the file or option at fault; an `OSError` (permission denied, not a
    folder, disk full ...) is reported with the path it concerns.
    """
    try:
        yield
    except BayespriorError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise  # output piped into `head`: click ends quietly
        raise click.ClickException(describe_os_error(exc)) from None


def describe_os_error(exc: OSError) -> str:
    """``"runs/x/model.pt: Permission denied"``: the path (both, for a rename) and the reason, on one line."""
    reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    if isinstance(exc, FileExistsError) and exc.filename is not None and not os.path.isdir(exc.filename):
        reason = "is a file where a folder is needed"  # what mkdir(exist_ok=True) meant by "File exists"
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def report_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a click callback inside `reported_errors` (for a command invoked outside the `bayesprior` group)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with reported_errors():
            return command(*args, **kwargs)

    return wrapper


def _comma_separated(param_type: click.ParamType, value: Any, number: type, expected: str,
                     param: click.Parameter | None, ctx: click.Context | None) -> tuple:
    """``"40,48,40"`` (or ``"40x48x40"``) as a tuple of `number`; a click usage error saying what was `expected`."""
    try:
        return tuple(number(v) for v in str(value).replace("x", ",").split(","))
    except ValueError:
        param_type.fail(f"expected {expected}, got {value!r}", param, ctx)


class Integers(click.ParamType):
    """Comma-separated integers (``40,48,40``; ``40x48x40`` also reads), checked for count and minimum."""

    name = "integers"

    def __init__(self, length: int | None = None, minimum: int | None = None):
        self.length = length
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        values = _comma_separated(self, value, int, "comma-separated integers like 40,48,40", param, ctx)
        if self.length is not None and len(values) != self.length:
            self.fail(f"expected {self.length} integers, got {value!r}", param, ctx)
        if self.minimum is not None and any(v < self.minimum for v in values):
            self.fail(f"every value must be >= {self.minimum}, got {value!r}", param, ctx)
        return values


#: a spatial shape: three positive sizes
SHAPE = Integers(length=3, minimum=1)


class Spacing(click.ParamType):
    """Voxel spacing in mm: one positive number for all three axes (``4``) or one per axis (``4,4,2.5``)."""

    name = "mm"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        values = _comma_separated(self, value, float, "a spacing in mm like 4 or 4,4,2.5", param, ctx)
        if len(values) not in (1, 3) or not all(0 < v < float("inf") for v in values):
            self.fail(f"expected one or three positive numbers (mm), got {value!r}", param, ctx)
        return values * 3 if len(values) == 1 else values


class KeyValue(click.ParamType):
    """``KEY=VALUE`` -> ``(key, value)``; VALUE is read as JSON when it parses (``-c 'widths=[8,16]'``),
    else kept as a string. Use with ``multiple=True`` and ``dict(...)`` the result."""

    name = "key=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        key, sep, raw = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"expected KEY=VALUE, got {value!r}", param, ctx)
        try:
            return key.strip(), json.loads(raw)
        except json.JSONDecodeError:
            return key.strip(), raw  # a bare word is a string


class Device(click.ParamType):
    """A torch device string (``cpu``, ``cuda``, ``cuda:1``), kept as the string."""

    name = "device"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            torch.device(value)
        except (RuntimeError, ValueError, TypeError):
            self.fail(f"{value!r} is not a torch device (e.g. cpu, cuda, cuda:1)", param, ctx)
        return str(value)


class Shard(click.ParamType):
    """``I/N``: shard I of N (`bayesprior.experiment.runs.parse_shard`)."""

    name = "i/n"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_shard(value)
        except BayespriorError as exc:
            self.fail(str(exc), param, ctx)


def given(ctx: click.Context, *names: str) -> list[str]:
    """The options among `names` (parameter names) that the user gave, as they are spelt (``--kl-weight``)."""
    out = []
    for name in names:
        source = ctx.get_parameter_source(name)
        if source is not None and source not in (click.core.ParameterSource.DEFAULT,
                                                 click.core.ParameterSource.DEFAULT_MAP):
            param = next(p for p in ctx.command.params if p.name == name)
            out.append(param.opts[0] if getattr(param, "opts", None) else name)
    return out


def refuse_without_effect(ctx: click.Context, names: Sequence[str], reason: str) -> None:
    """A `click.UsageError` if any option of `names` was given although it has no effect, for `reason`."""
    ineffective = given(ctx, *names)
    if ineffective:
        raise click.UsageError(f"{', '.join(ineffective)} {'has' if len(ineffective) == 1 else 'have'} no effect "
                               f"{reason}; leave {'it' if len(ineffective) == 1 else 'them'} out")


def trust_file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--trust-file``: read model files that need the unsafe unpickler (older files), with a warning."""

    @functools.wraps(command)
    def wrapper(*args: Any, trust_file: bool = False, **kwargs: Any) -> Any:
        if not trust_file:
            with offering_trust_option("--trust-file"):  # a refused file's message may name it
                return command(*args, **kwargs)
        click.echo("warning: --trust-file: model files are read with the unsafe unpickler; "
                   "use it only for files whose origin you trust", err=True)
        with trusting_files():
            return command(*args, **kwargs)

    return click.option("--trust-file", is_flag=True,
                        help="Read model files that hold more than plain types (older versions). "
                             "Such a file can run code: only for files you trust.")(wrapper)
