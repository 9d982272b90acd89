"""Write files so that a crash never leaves a partial file in place of a good one.

A file is written under a temporary name beside it, ``.<name>.<8 random characters>.tmp``, then renamed
onto its name. A process killed between the two leaves the temporary file; `remove_stale_temp_files`
removes such files (only names of exactly this form) on the next run, under the folder's lock.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`, on error removed.

    The rename is atomic on POSIX file systems, so readers see either the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None:  # e.g. a full disk while writing: say which output failed
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


#: ``.model.pt.k3j_x9q2.tmp``: the temporary names `atomic_path` makes (`tempfile.mkstemp`'s 8 characters)
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def is_temp_name(name: str) -> bool:
    """True for a file name of the form `atomic_path` gives its temporary files."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temp_files(folder: str | Path, recursive: bool = False, older_than: float | None = None,
                            targets: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove temporary files of ours left in `folder` by a killed process; return what was removed.

    Call it only while no other process can be writing there (under the folder's lock), or with
    `older_than` (seconds since the file was last modified) for folders that processes share.

    Args:
        folder: where to look (a missing folder holds nothing).
        recursive: look in every sub-folder too.
        older_than: remove only files not modified for this many seconds.
        targets: remove only temporary files whose final name (``model.pt`` of
            ``.model.pt.k3j_x9q2.tmp``) it accepts.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    removed = []
    now = time.time()
    for path in candidates:
        if not (is_temp_name(path.name) and path.is_file()):
            continue
        if targets is not None and not targets(path.name[1:-len(".xxxxxxxx.tmp")]):
            continue
        try:
            if older_than is not None and now - path.stat().st_mtime < older_than:
                continue
            path.unlink()
        except FileNotFoundError:
            continue  # removed meanwhile
        removed.append(path)
    return removed


def remove_stale_temp_files_of(*paths: str | Path) -> list[Path]:
    """Temporary files that a killed write of one of `paths` left beside it (for an output a command names)."""
    removed = []
    for path in paths:
        path = Path(path)
        removed += remove_stale_temp_files(path.parent, targets=_named(path.name))
    return removed


def _named(wanted: str) -> Callable[[str], bool]:
    return lambda name: name == wanted


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", path)
