"""Loading files that may come from other people without running code they carry.

A `torch.save`d file is a pickle: an object with a ``__reduce__`` can run any command when it is
unpickled. Every bayesprior format holds only plain types (str, numbers, bools, None, lists, tuples,
dicts, tensors), so every file is read with ``torch.load(weights_only=True)``, which refuses anything
else. A file written by an older version that needs the unsafe path is read only when the caller
trusts it explicitly: ``trust=True`` or, for a block of code (the CLI's ``--trust-file``),
``with trusting_files(): ...``; both warn.
"""
from __future__ import annotations

import pickle
import warnings
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator

import torch

from .errors import CheckpointError

_TRUST = ContextVar("bayesprior_trust_files", default=False)
PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)


@contextmanager
def trusting_files() -> Iterator[None]:
    """Within this block, files that need the unsafe loader are loaded (with a warning) instead of refused."""
    token = _TRUST.set(True)
    try:
        yield
    finally:
        _TRUST.reset(token)


def load_plain(path: str | Path, what: str, map_location: Any = "cpu", trust: bool | None = None) -> Any:
    """`torch.load` of `path` restricted to plain types.

    Args:
        path: the file.
        what: what the file should be, for messages (``"a model file"``).
        map_location: as for `torch.load`.
        trust: load with the unsafe unpickler (warns); None follows `trusting_files`.
    Raises:
        CheckpointError: naming the file, if it is missing, unreadable, or holds other objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    if trust if trust is not None else _TRUST.get():
        warnings.warn(f"{path}: loaded with the unsafe unpickler (trusted): it may run code it carries",
                      UserWarning, stacklevel=2)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CheckpointError(path, f"cannot be read as {what} ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # torch's weights-only unpickler met a class or function
            raise CheckpointError(path, f"holds objects other than plain types ({_unsafe_global(exc)}); it could run "
                                        "code when loaded, so it was refused. Load it with --trust-file (or "
                                        "trust=True) only if you trust where it came from") from None
        raise CheckpointError(path, f"cannot be read as {what} (not a torch file, or a damaged one)") from None
    except Exception as exc:
        if not looks_like_torch_file(path):  # a log, a text file, an .npz: torch's own error would only confuse
            kind = "a zip archive such as a kernel bank .npz, " if zipfile.is_zipfile(path) else ""
            raise CheckpointError(path, f"cannot be read as {what} ({kind}not a torch file)") from None
        raise CheckpointError(path, f"cannot be read as {what} ({type(exc).__name__}: {_first_line(exc)})") from None


def looks_like_torch_file(path: Path) -> bool:
    """Whether the file at `path` (which must exist) is what `torch.save` writes, whatever its name."""
    # torch.save writes a zip archive holding <name>/data.pkl; files of torch < 1.6 are pickles, which start
    # with the PROTO opcode
    with open(path, "rb") as stream:
        if stream.read(1) == b"\x80":
            return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/data.pkl") for name in archive.namelist())


def is_plain(obj: Any) -> bool:
    """True if `obj` is built only of plain types (what every bayesprior file format may hold)."""
    if isinstance(obj, dict):
        return all(isinstance(k, (str, int)) and is_plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(is_plain(v) for v in obj)
    return type(obj) in PLAIN_TYPES or isinstance(obj, torch.Tensor)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no details"


def _unsafe_global(exc: BaseException) -> str:
    # torch names the offending global as "Unsupported global: GLOBAL module.name"
    line = next(line for line in str(exc).splitlines() if "GLOBAL" in line)
    return line.strip().rstrip(".")[:160]
