"""Lock files: one process at a time in a run folder, an experiment folder or a prediction folder.

``with folder_lock(folder, "run folder"): ...`` holds ``folder/.bayesprior.lock`` with `fcntl.flock`.
A second process that asks for the same folder gets a `FolderInUseError` at once, naming the folder and
the process that holds it. The operating system releases the lock when its process ends, however it ends
(SIGKILL included), so a lock left behind by a killed process is free again at once: recovery from a stale
lock needs no timeout and no guess about process ids. The last holder removes the file.

``shared=True`` takes a shared lock: any number of shared holders at once, but no exclusive one (the
parallel shards of one experiment share its folder; a whole run of it excludes them). On a platform
without `fcntl` (Windows) the lock is not taken.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import FolderInUseError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # no fcntl on Windows: the lock is not taken there

LOCK_NAME = ".bayesprior.lock"


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder", shared: bool = False) -> Iterator[Path]:
    """Hold the lock of `folder` (created if missing) for the block; yield the lock file's path.

    Args:
        folder: the folder to lock.
        what: what the folder is, for the message (``"run folder"``).
        shared: a shared lock instead of an exclusive one.
    Raises:
        FolderInUseError: another process holds the lock (exclusively, or shared when `shared` is False).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield path
        return
    fd = _acquire(path, folder, what, shared)
    try:
        yield path
    finally:
        _release(path, fd)


def _acquire(path: Path, folder: Path, what: str, shared: bool) -> int:
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUseError(folder, f"{what} is in use by another bayesprior process ({holder}); "
                                           "wait for it to finish, or stop it") from None
        # the last holder may have removed the file between our open and our lock: then lock the new one
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    if not shared or os.fstat(fd).st_size == 0:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                                 "command": " ".join(sys.argv)[:300]}).encode())
    return fd


def _release(path: Path, fd: int) -> None:
    try:
        # only a holder that can have the lock to itself removes the file (the last of shared holders)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "holder unknown"
    command = f": {info['command']}" if info.get("command") else ""
    return f"pid {info['pid']} on {info.get('host', '?')}, since {info.get('since', '?')}{command}"
