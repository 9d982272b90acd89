"""Figures written as PNG files: matplotlib on the file-only Agg backend, saved atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .atomic import atomic_path


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display needed).

    Imported on first use: matplotlib takes about a second to import and most commands draw nothing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write `fig` to `path` as PNG, atomically (never a half-written picture), and close it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return Path(path)
