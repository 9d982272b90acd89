"""Loading files that may come from other people without running code they carry, or filling the memory.

A `torch.save`d file is a pickle: an object with a ``__reduce__`` can run any command when it is
unpickled. Every bayesprior format holds only plain types (str, numbers, bools, None, lists, tuples,
dicts, tensors), so every file is read with ``torch.load(weights_only=True)``, which refuses anything
else. A file written by an older version that needs the unsafe path is read only when the caller
trusts it explicitly: ``trust=True`` or, for a block of code (the CLI's ``--trust-file``),
``with trusting_files(): ...``; both warn.

A small file can also declare a huge content: a zip member that inflates a thousandfold, an ``.npy`` header
that promises terabytes. What a file declares is checked before anything is allocated: a torch archive may
hold at most `MAX_TORCH_RECORDS` records and no more bytes than the file's own size (``torch.save`` never
compresses), and an ``.npz`` is read by `load_npz` within `NpzLimits` (the shapes and dtypes of its arrays
are read from their ``.npy`` headers first).
"""
from __future__ import annotations

import math
import pickle
import warnings
import zipfile
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from .errors import CheckpointError, PathError

_TRUST = ContextVar("bayesprior_trust_files", default=False)
#: the option of the running command that reads a file with the unsafe unpickler (`offering_trust_option`)
_TRUST_OPTION: ContextVar[str | None] = ContextVar("bayesprior_trust_option", default=None)
PLAIN_TYPES = (str, int, float, bool, type(None), torch.Tensor)
#: the most records (tensor storages and the pickle) a torch file may hold
MAX_TORCH_RECORDS = 100_000


@contextmanager
def trusting_files() -> Iterator[None]:
    """Within this block, files that need the unsafe loader are loaded (with a warning) instead of refused."""
    token = _TRUST.set(True)
    try:
        yield
    finally:
        _TRUST.reset(token)


@contextmanager
def offering_trust_option(option: str) -> Iterator[None]:
    """Within this block, a file refused for holding more than plain types is said to be readable with `option`
    (``"--trust-file"``): the running command has it. Elsewhere the refusal advises what works everywhere."""
    token = _TRUST_OPTION.set(option)
    try:
        yield
    finally:
        _TRUST_OPTION.reset(token)


def _trust_advice(trust: bool | None) -> str:
    """How a refused file may be read, if its origin is trusted: the command's option where it has one; nothing
    where the caller never trusts (`trust=False`)."""
    if trust is False:
        return ""
    option = _TRUST_OPTION.get()
    if option is not None:
        return f". Load it with {option} only if you trust where it came from"
    return (". Only if you trust where it came from, read it with trust=True in Python "
            "(bayesprior.checkpoints.load_model) and save it again (bayesprior.save_model)")


def load_plain(path: str | Path, what: str, map_location: Any = "cpu", trust: bool | None = None) -> Any:
    """`torch.load` of `path` restricted to plain types.

    Args:
        path: the file.
        what: what the file should be, for messages (``"a model file"``).
        map_location: as for `torch.load`.
        trust: load with the unsafe unpickler (warns); None follows `trusting_files`.
    Raises:
        CheckpointError: naming the file, if it is missing or not a regular file, unreadable, holds other
            objects, or declares more data than it holds (`refuse_inflating_torch_file`).
    """
    path = Path(path)
    require_regular_file(path)
    refuse_inflating_torch_file(path)
    if trust if trust is not None else _TRUST.get():
        warnings.warn(f"{path}: loaded with the unsafe unpickler (trusted): it may run code it carries",
                      UserWarning, stacklevel=2)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as exc:
            raise CheckpointError(path, f"cannot be read as {what} ({type(exc).__name__}: {_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            # a legacy pickle's protocol is only a hint here: the file is read or refused in one line below
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "GLOBAL" in str(exc):  # torch's weights-only unpickler met a class or function
            raise CheckpointError(path, f"holds objects other than plain types ({_unsafe_global(exc)}); it could run "
                                        f"code when loaded, so it was refused{_trust_advice(trust)}") from None
        raise CheckpointError(path, f"cannot be read as {what} (not a torch file, or a damaged one)") from None
    except Exception as exc:
        if not looks_like_torch_file(path):  # a log, a text file, an .npz: torch's own error would only confuse
            kind = "a zip archive such as a kernel bank .npz, " if zipfile.is_zipfile(path) else ""
            raise CheckpointError(path, f"cannot be read as {what} ({kind}not a torch file)") from None
        raise CheckpointError(path, f"cannot be read as {what} ({type(exc).__name__}: {_first_line(exc)})") from None


def require_regular_file(path: Path, error: type[PathError] = CheckpointError) -> None:
    """Raise `error` naming `path` unless it is a regular file: missing, a folder, or a device or pipe
    (``/dev/zero`` would be read forever)."""
    if not path.exists():
        raise error(path, "no such file")
    if path.is_dir():
        raise error(path, "is a folder, not a file")
    if not path.is_file():
        raise error(path, "is not a regular file (a device, pipe or socket)")


def refuse_inflating_torch_file(path: Path) -> None:
    """`CheckpointError` if the torch zip archive at `path` declares more than it holds, before torch reads it:
    more than `MAX_TORCH_RECORDS` records, or records larger together than the file (compressed records, which
    ``torch.save`` never writes, but which torch would inflate in memory). A file that is no zip archive is left
    to `torch.load` (the legacy format reads its storages from the file itself)."""
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return  # not a zip archive, or a damaged one: torch.load says which
    if len(records) > MAX_TORCH_RECORDS:
        raise CheckpointError(path, f"holds {len(records):,} records, more than the {MAX_TORCH_RECORDS:,} a torch file "
                                    "may have (bayesprior.safe_load.MAX_TORCH_RECORDS); refused before reading")
    declared, size = sum(record.file_size for record in records), path.stat().st_size
    if declared > size:
        raise CheckpointError(path, f"declares {declared:,} bytes of data in a file of {size:,} bytes (compressed "
                                    "records, which torch.save never writes); refused before reading, as it could "
                                    "fill the memory")


@dataclass(frozen=True)
class NpzLimits:
    """The most an ``.npz`` may declare (`load_npz`), checked before any array is read.

    Attributes:
        max_arrays: members of the archive.
        max_bytes: the arrays' bytes together, as their ``.npy`` headers declare them (shape x item size).
        max_bytes_per_name: a tighter cap for some arrays by name (a JSON header: megabytes, not gigabytes).
        compressed: whether members may be compressed; False for formats written by ``np.savez``, so that no
            member holds more than the file's own size.
    """

    max_arrays: int
    max_bytes: int
    max_bytes_per_name: Mapping[str, int] = field(default_factory=dict)
    compressed: bool = True


def load_npz(path: str | Path, limits: NpzLimits, error: type[PathError] = CheckpointError) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at `path`, by name, read with ``allow_pickle=False`` once what its members
    declare (their ``.npy`` headers: shape and dtype) is within `limits`.

    Raises:
        `error` (naming the file): not a regular file, not a zip archive, a member that is no ``.npy`` array, that
            declares more than it holds or more than `limits` allow, Python objects (a pickle), or any failure
            to read the arrays.
    """
    path = Path(path)
    require_regular_file(path, error)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > limits.max_arrays:
                raise error(path, f"holds {len(members):,} arrays, more than the {limits.max_arrays:,} this file may "
                                  "have; refused before reading")
            total = 0
            for member in members:
                total += _declared_bytes(archive, member, limits, path, error)
                if total > limits.max_bytes:
                    raise error(path, f"its arrays declare {total:,} bytes or more, more than the "
                                      f"{limits.max_bytes:,} this file may have; refused before reading")
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except PathError:
        raise
    except Exception as exc:  # zipfile, numpy and the OS raise many types; all mean an unreadable file
        raise error(path, f"cannot be read as an .npz of plain arrays ({type(exc).__name__}: {_first_line(exc)})") \
            from None


def _declared_bytes(archive: zipfile.ZipFile, member: zipfile.ZipInfo, limits: NpzLimits, path: Path,
                    error: type[PathError]) -> int:
    """The bytes one ``.npz`` member's ``.npy`` header declares, checked against `limits` and its own size."""
    name = member.filename[: -len(".npy")] if member.filename.endswith(".npy") else member.filename
    if not limits.compressed and member.compress_type != zipfile.ZIP_STORED:
        raise error(path, f"array {name!r} is compressed, which this format never is; refused before reading")
    with archive.open(member) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise error(path, f"array {name!r} has .npy format version {version}, which bayesprior never writes")
    if dtype.hasobject:
        raise error(path, f"array {name!r} holds Python objects (a pickle, which could run code); refused")
    declared = math.prod(shape) * dtype.itemsize
    if declared > member.file_size:
        raise error(path, f"array {name!r} declares {declared:,} bytes ({shape}, {dtype}) but holds "
                          f"{member.file_size:,}; refused before reading")
    cap = limits.max_bytes_per_name.get(name)
    if cap is not None and declared > cap:
        raise error(path, f"array {name!r} declares {declared:,} bytes, more than the {cap:,} it may have; "
                          "refused before reading")
    return declared


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
