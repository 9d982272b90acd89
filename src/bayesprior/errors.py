"""Exception types of bayesprior.

Every error the library raises on bad input is one of these, and its message names the file, layer or
argument at fault, so a user never has to read a traceback from nibabel, numpy or torch internals.
"""
from __future__ import annotations

from pathlib import Path


class BayespriorError(Exception):
    """Base class of every error raised by bayesprior on bad input or configuration."""


class ConfigError(BayespriorError, ValueError):
    """An argument or configuration value is invalid; the message names it and its value."""


class PluginError(BayespriorError):
    """A plugin could not be loaded, or a name is not registered / registered twice."""


class PriorMismatchError(BayespriorError):
    """A prior does not fit the layer it was assigned to (shape, kernel size, group)."""


class PathError(BayespriorError):
    """An error about one file or folder: the message is ``"<path>: <problem>"``.

    Attributes:
        path: the file or folder at fault.
        problem: a short human-readable description of what is wrong.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class CheckpointError(PathError):
    """A checkpoint or saved model is missing, corrupt, or does not match the model."""


class DataError(PathError):
    """A data file or dataset folder is unreadable or inconsistent."""


class MissingSubsetError(DataError):
    """A dataset declares no cases of the subset asked for (no ``imagesTs`` folder, no ``test`` list): not a
    broken dataset, so a caller may say what to do instead, but never silently read another subset."""


class FolderInUseError(PathError):
    """Another process holds the lock of a run, experiment or prediction folder (see `bayesprior.locks`)."""


class NonFiniteError(BayespriorError):
    """A value that must be finite (a loss, weights, kernels, a score) is NaN or infinite; the message
    names where it was found."""
