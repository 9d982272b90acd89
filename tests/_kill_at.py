"""Run the bayesprior command line and SIGKILL it at an exact point: when it is about to rename a finished
temporary file onto the N-th output whose path matches a glob, so the temporary file is left behind, as a
kill during a write would leave it.

    python tests/_kill_at.py '*/checkpoint.pt' 2 train data runs/x --epochs 3

Used by the SIGKILL tests (`kill_at` below runs it and checks that it was killed).
"""
from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch


def main() -> None:
    pattern, count, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    torch.set_num_threads(int(os.environ.get("KILL_AT_THREADS", "1")))
    real_replace = os.replace
    seen = 0

    def replace(src, dst, *rest, **kwargs):
        nonlocal seen
        if fnmatch.fnmatch(str(dst), pattern):
            seen += 1
            if seen == count:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *rest, **kwargs)

    os.replace = replace
    from bayesprior.cli import cli

    cli.main(args=args, prog_name="bayesprior")


def kill_at(pattern: str, count: int, args: list[str], env: dict[str, str] | None = None, timeout: int = 300) -> str:
    """Run ``bayesprior ARGS`` in a subprocess killed at the `count`-th rename onto a path matching `pattern`;
    assert that it was killed there (not finished, not failed); return its output."""
    result = subprocess.run([sys.executable, str(Path(__file__)), pattern, str(count), *args],
                            capture_output=True, text=True, timeout=timeout,
                            env=dict(os.environ, **(env or {}), KILL_AT_THREADS=str(torch.get_num_threads())))
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    return result.stdout + result.stderr


def temp_files(folder: Path) -> list[Path]:
    """Temporary files of ours under `folder` (`bayesprior.atomic` naming)."""
    from bayesprior.atomic import is_temp_name

    return [p for p in Path(folder).rglob("*") if is_temp_name(p.name)]


if __name__ == "__main__":
    main()
