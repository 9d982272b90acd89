"""Old import paths kept for one release: each use warns with a `DeprecationWarning` naming the new path.

A moved module leaves a short module at its old path that calls `warn_moved` and re-imports its names
from the new home. Names that left a module that still exists are served by a module ``__getattr__``
made with `moved_names`; it imports the new home by name when an old name is first asked for, so an
alias never adds an import edge (and never an import cycle) between the modules themselves.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Callable, Mapping

REMOVED_IN = "0.3"


def warn_moved(old: str, new: str, stacklevel: int = 2) -> None:
    """Warn that `old` (a module or a name) now lives at `new`."""
    warnings.warn(f"{old} has moved to {new}; the old path will be removed in bayesprior {REMOVED_IN}",
                  DeprecationWarning, stacklevel=stacklevel + 1)


def moved_names(module: str, moves: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving ``moves`` (old name -> ``"new.module"`` or ``"new.module:new_name"``)."""

    def __getattr__(name: str) -> Any:
        if name not in moves:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        target, _, new_name = moves[name].partition(":")
        new_name = new_name or name
        warn_moved(f"{module}.{name}", f"{target}.{new_name}", stacklevel=2)
        return getattr(importlib.import_module(target), new_name)

    return __getattr__


def moved_method(old: str, new: str) -> Callable[..., Any]:
    """A method that forwards ``self.method(*args)`` to the function ``new(self, *args)`` (``"module:name"``)."""
    target, _, new_name = new.partition(":")

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        warn_moved(old, f"{target}.{new_name}", stacklevel=2)
        return getattr(importlib.import_module(target), new_name)(self, *args, **kwargs)

    method.__doc__ = f"Deprecated: use `{target}.{new_name}` (this alias will be removed in bayesprior {REMOVED_IN})."
    return method
