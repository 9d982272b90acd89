"""What a network was trained on, as far as its inputs go, and whether two networks saw the same kind of input.

A model file records its preprocessing configuration (``extra["preprocess"]``, what `predict` redoes) and the
grid its training cases were on (``extra["input_grid"]``, `input_grid`): the voxel spacing and the shape of the
network's input after preprocessing, taken from the configuration where it sets them (``--spacing``,
``--shape``) and measured on the data where it does not (a 1 mm BRATS folder trained without ``--spacing``
is recorded at 1 mm, not "None"). A kernel bank, and so a prior file, records the summary of each model it
was harvested from (`preprocessing_summary`).

A network that starts from a source model, or is trained under a prior fitted to source kernels, learns best
from inputs like the source's: `preprocessing_differences` compares two summaries on `COMPARED_KEYS` (the
spacing within `SPACING_TOLERANCE`), and `describe_preprocessing` says a summary in one line. Files written
before these records existed give None ("not recorded"); what is unknown is not compared.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

#: the preprocessing a source and a target are compared on
COMPARED_KEYS = ("intensity", "crop_nonzero", "spacing")
#: spacings that differ by less than this fraction on every axis count as the same
SPACING_TOLERANCE = 0.05
NOT_RECORDED = "not recorded"
#: how a spacing or shape came about, as `describe_grid` says it
# keyed by a record's "spacing_from" / "shape_from", which older records lack (None)
_SPACING_ORIGIN: dict[str | None, str] = {"preprocessing": "resampled", "data": "measured"}
_SHAPE_ORIGIN: dict[str | None, str] = {"preprocessing": "cropped or padded", "data": "measured"}


def input_grid(prepared: Sequence[Any]) -> dict[str, Any] | None:
    """The grid of preprocessed cases (objects with ``.image`` and a preprocessing ``.record``): the voxel spacing
    in mm (the configuration's, or the median over the cases where it sets none), the smallest and largest input
    shape, and whether each came from the configuration (``"preprocessing"``) or was measured on the cases
    (``"data"``). None for cases without a preprocessing record."""
    records = [r for r in (getattr(case, "record", None) for case in prepared)
               if isinstance(r, dict) and "output_zooms" in r]
    if not records or len(records) < len(prepared):
        return None
    config = records[0].get("config") or {}
    spacing = config.get("spacing")  # as asked for: the grid's whole voxels make each case's a little off
    if spacing is None:
        spacing = np.median(np.asarray([r["output_zooms"] for r in records], dtype=np.float64), axis=0)
    shapes = np.asarray([np.shape(case.image) for case in prepared])
    return {"spacing": [round(float(v), 4) for v in spacing],
            "spacing_from": "preprocessing" if config.get("spacing") is not None else "data",
            "shape_min": shapes.min(axis=0).tolist(), "shape_max": shapes.max(axis=0).tolist(),
            "shape_from": "preprocessing" if config.get("shape") is not None else "data"}


def preprocessing_summary(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The comparable summary of a training record (a model file's ``extra``, a run's ``config.json``): its
    intensity scheme, cropping, spacing and shape, and the channel it read; None if it records no preprocessing."""
    record = record or {}
    preprocess = record.get("preprocess")
    if not isinstance(preprocess, Mapping):
        return None
    grid = record.get("input_grid")
    if not isinstance(grid, Mapping):
        grid = {}
    spacing = grid.get("spacing", preprocess.get("spacing"))
    return {"intensity": preprocess.get("intensity", "minmax"),
            "crop_nonzero": bool(preprocess.get("crop_nonzero", True)),
            "spacing": None if spacing is None else [float(v) for v in spacing],
            "spacing_from": grid.get("spacing_from", "preprocessing" if spacing is not None else None),
            "shape_min": grid.get("shape_min", preprocess.get("shape")),
            "shape_max": grid.get("shape_max", preprocess.get("shape")),
            "channel": record.get("channel")}


def preprocessing_differences(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """The `COMPARED_KEYS` on which two summaries differ; a value one of them does not know is not compared."""
    differ = []
    for key in COMPARED_KEYS:
        a, b = first.get(key), second.get(key)
        if a is None or b is None:
            continue
        if key == "spacing":
            if len(a) != len(b) or any(abs(x - y) > SPACING_TOLERANCE * max(x, y) for x, y in zip(a, b, strict=True)):
                differ.append(key)
        elif a != b:
            differ.append(key)
    return differ


def describe_preprocessing(summary: Mapping[str, Any] | None, keys: Sequence[str] = COMPARED_KEYS) -> str:
    """``"intensity=zscore, crop_nonzero=True, spacing=4.2 mm (resampled)"``: the `keys` of a summary."""
    if summary is None:
        return NOT_RECORDED
    parts = []
    for key in keys:
        value = summary.get(key)
        if key == "spacing":
            origin = _SPACING_ORIGIN.get(summary.get("spacing_from"))
            text = NOT_RECORDED if value is None else f"{_spacing(value)} mm" + (f" ({origin})" if origin else "")
            parts.append(f"spacing={text}")
        else:
            parts.append(f"{key}={NOT_RECORDED if value is None else value}")
    return ", ".join(parts)


def describe_grid(grid: Mapping[str, Any] | None) -> str:
    """``"spacing 4.2 mm (resampled), shape 40x48x40 (measured)"``, or "not recorded"."""
    if not isinstance(grid, Mapping) or grid.get("spacing") is None:
        return NOT_RECORDED
    low, high = grid.get("shape_min"), grid.get("shape_max")
    # both lists come from one array (`input_grid`), but are read from a file here: a damaged record is shown
    # as far as it goes, not refused by a display
    shape = "x".join(f"{a}" if a == b else f"{a}-{b}" for a, b in zip(low, high, strict=False)) \
        if low and high else NOT_RECORDED
    return (f"spacing {_spacing(grid['spacing'])} mm ({_SPACING_ORIGIN.get(grid.get('spacing_from'), 'the data')}), "
            f"shape {shape} ({_SHAPE_ORIGIN.get(grid.get('shape_from'), 'the data')})")


def _spacing(values: Sequence[float]) -> str:
    """``4.2`` for an isotropic spacing, ``1x1x2.5`` otherwise."""
    values = [float(v) for v in values]
    return f"{values[0]:g}" if max(values) - min(values) < 1e-6 else "x".join(f"{v:g}" for v in values)
