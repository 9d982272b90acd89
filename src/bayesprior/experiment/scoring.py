"""Scoring a target run's trained network on its cases, and the figure slice each run keeps for the report.

The per-case scores are `bayesprior.evaluation.scoring.CaseScores`, as `bayesprior evaluate` computes them;
the predictions are `bayesprior predict`'s (`bayesprior.inference.prediction`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_path
from ..data.cases import apply_label_policy
from ..data.nifti import read_label_values, write_like
from ..data.preprocess import affine_from_record, header_from_record, invert
from ..errors import DataError
from ..evaluation.calibration import body_mask
from ..evaluation.scoring import BODY_REGION, CaseScores
from ..inference.prediction import PredictionSettings, mask_and_probability, predict_case
from ..safe_load import NpzLimits, load_npz
from .config import ExperimentConfig
from .runs import RunSpec

#: what a figure slice file may declare: a few 2D slices and a score
FIGURE_SLICE_LIMITS = NpzLimits(max_arrays=16, max_bytes=256 * 2**20)


def score_run(model: Any, cases: Sequence[Any], run: RunSpec, config: ExperimentConfig, out: Path,
              patch: Sequence[int] | None = None) -> dict[str, Any]:
    """Per-case DSC/IoU and calibration (ECE, Brier, NLL, UEO) of `cases`, averaged; the figure slice of the
    first case is saved under the experiment folder `out`.

    Scored on the preprocessed grid, or (``score_grid = 'original'``) on each image's own grid against
    the label file, with the mask and probability `predict` writes (the probabilities mapped back by the
    exact inverse of the preprocessing, then thresholded). With ``write_predictions`` each mask is written
    on the original grid with its image's affine and header. The calibration is that of the foreground
    probability the method predicts with: the Monte-Carlo mean over ``samples`` weight samples (the
    posterior mean for 0) of a Bayesian network, the softmax of a deterministic one; ``ece``, ``brier`` and
    ``nll`` over the case's body mask (its image's non-zero voxels), ``*_band`` over its label, prediction and
    the band around them, ``*_all`` over every voxel (`bayesprior.evaluation.calibration`).
    """
    c = config
    scores = CaseScores()
    for k, case in enumerate(cases):
        # whole-volume prediction, as the paper; windows of the training patch for patch-trained runs
        settings = PredictionSettings(roi=_prediction_window(case.image.shape, patch), samples=c.samples)
        probabilities = predict_case(model, case.image, settings)
        prediction = probabilities.argmax(0).astype(np.uint8)
        original = original_probability = None
        if c.score_grid == "original" or c.write_predictions:  # what `predict` writes for this case
            original, original_probability = mask_and_probability(probabilities, case.record)
        body = body_mask(case.image)  # the image's non-zero voxels stay zero under every intensity scheme but ct
        if c.score_grid == "original":
            row = scores.add(case.case_id, original, _original_label(case), probability=original_probability,
                             body=invert(body.astype(np.uint8), case.record, order=0) > 0,
                             spacing=case.record["zooms"])
        else:
            row = scores.add(case.case_id, prediction, case.label, probability=probabilities[1], body=body,
                             spacing=case.record["output_zooms"])
        if c.write_predictions and original is not None:  # (made above whenever write_predictions)
            write_like(original, affine_from_record(case.record), header_from_record(case.record),
                       out / "predictions" / run.run_id / f"{case.case_id}.nii.gz", dtype=np.uint8)
        if k == 0:
            save_figure_slice(out, run, case, prediction, row["dsc"])
    return {**scores.mean(), "calibration_region": BODY_REGION, "per_case": scores.per_case(*scores.metrics())}


def save_figure_slice(out: Path, run: RunSpec, case: Any, prediction: np.ndarray, dsc: float) -> None:
    """The axial slice of `case` with the most foreground, its label and `run`'s prediction, for the report's
    figure: ``results/figures/<run id>.npz`` under the experiment folder `out`."""
    z = int(np.argmax(case.label.reshape(-1, case.label.shape[-1]).sum(0)))  # slice with most foreground
    path = out / "results" / "figures" / f"{run.run_id}.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, image=case.image[..., z], label=case.label[..., z], pred=prediction[..., z],
                                dsc=np.float32(dsc))


def read_figure_slice(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a figure slice file (plain arrays only, within `FIGURE_SLICE_LIMITS`: a pickle is refused,
    never run).

    Raises:
        DataError: naming `path`, when it is no figure slice.
    """
    try:
        return load_npz(path, FIGURE_SLICE_LIMITS, DataError)
    except DataError as exc:
        raise DataError(path, f"is not a figure slice of this experiment ({exc.problem}); remove it and its result "
                              "to redo that run") from None


def _prediction_window(shape: Sequence[int], patch: Sequence[int] | None) -> tuple[int, ...]:
    """The whole volume, or windows of the training patch where it is smaller (both divisible by 8)."""
    if patch is None or any(int(p) % 8 for p in patch):
        return tuple(shape)
    return tuple(min(int(p), int(n)) for p, n in zip(patch, shape, strict=True))


def _original_label(case: Any) -> np.ndarray:
    """The label of a prepared case on its file's grid (the experiment's whole-foreground policy)."""
    label_path = case.record.get("label_path")
    if label_path is None:
        raise DataError(case.case_id, "has no label file to score on the original grid")
    values, _, _ = read_label_values(label_path)
    return apply_label_policy(values, "whole")
