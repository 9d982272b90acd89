"""The package version, and the command line that is running: what every file bayesprior writes records of its
making. A module of its own so that any module can record them without importing the package."""
import shlex
import sys
from pathlib import Path

__version__ = "0.1.0"


def command_line() -> str:
    """The running command as a shell would take it back (``bayesprior train data runs/x --epochs 5``)."""
    argv = list(sys.argv) or [""]
    return shlex.join([Path(argv[0]).name, *argv[1:]])
