"""A PNG grid of cases: for each, the axial slice with the most foreground and the label contour over it."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..figures import pyplot, save_figure
from .cases import Case


def most_foreground_slice(label: np.ndarray | None, axis: int = 2) -> int:
    """Index along `axis` with the most foreground voxels (the middle slice if there is no label)."""
    if label is None or not label.any():
        return (label.shape[axis] if label is not None else 1) // 2
    other = tuple(a for a in range(label.ndim) if a != axis)
    return int(np.argmax((label > 0).sum(axis=other)))


def show_cases(cases: Sequence[Case], out: str | Path, columns: int = 4, title: str | None = None) -> Path:
    """Render the cases as a grid of axial slices with label contours; written atomically as PNG."""
    plt = pyplot()
    out = Path(out)
    count = max(1, len(cases))
    columns = max(1, min(columns, count))
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    # the grid is filled row by row: its last row may have more cells than cases left
    for ax, case in zip(axes.ravel(), cases, strict=False):
        index = most_foreground_slice(case.label if case.label is not None else np.zeros(case.image.shape, bool))
        if case.label is None:
            index = case.image.shape[2] // 2
        image = case.image[:, :, index].T
        brain = case.image[case.image != 0]
        high = float(np.percentile(brain, 99.5)) if brain.size else 1.0
        zooms = np.sqrt((case.affine[:3, :3] ** 2).sum(axis=0))
        ax.imshow(image, cmap="gray", origin="lower", vmin=0, vmax=high or 1.0, aspect=zooms[1] / zooms[0],
                  interpolation="nearest")
        if case.label is not None and case.label[:, :, index].any():
            ax.contour(case.label[:, :, index].T.astype(float), levels=[0.5], colors=["#ff3030"], linewidths=0.9)
        ax.set_title(f"{case.case_id}  z={index}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out, dpi=90)
