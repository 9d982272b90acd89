"""Evaluate predicted masks against labels: per-case DSC and IoU, means, ``per_case.csv`` and
``summary.json`` (keys in the spirit of nnU-Net's summary: ``mean``, ``metric_per_case``).

Files are matched by case id (file name without NIfTI suffix; a mask carries no channel suffix). The labels
may be a folder of NIfTI files or a dataset folder of any registered layout, whose labels the layout finds
(`bayesprior.data.datasets.label_files`: BRATS ``<case>/<case>_seg``, nnU-Net ``labelsTr``, MSD).
Both masks are binarised as ``> 0`` (whole tumour for BraTS labels). The empty-reference policy is
explicit (see `bayesprior.evaluation.metrics`); with ``exclude`` such cases get NaN, are left out of
the means and are counted in ``n_empty_reference``. Scoring is `bayesprior.evaluation.scoring`'s.

As strict as nnU-Net's evaluator by default: a label without a prediction is an error (``allow_missing``
scores the others and lists the missing ones in ``summary.json``); a prediction must lie on its label's
grid (shape and affine) and hold label values only: non-negative integers among 0, 1 and the values
found in the labels (a float, NaN or negative "mask" is refused, never scored as ``> 0``).

With ``probability_dir`` (the ``<case>_probability.nii.gz`` maps `bayesprior predict --probabilities` writes)
each case is also scored for calibration (`bayesprior.evaluation.calibration`: ECE, Brier, NLL, UEO), the
summary gets the pooled reliability bins, and ``reliability.png`` is drawn. Every predicted case needs its map,
on its label's grid, holding probabilities in [0, 1]. ECE, Brier and NLL are computed over the case's body
mask, the non-zero voxels of the image it was predicted from (the prediction folder's manifest names it), over
the band around its label and prediction, and over every voxel; a case whose image is not known (predictions
that bayesprior did not write) gets every voxel as its region, and the summary lists it (``no_image``).
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data.cases import same_affine
from ..data.datasets import label_files, nifti_by_case
from ..data.naming import NIFTI_SUFFIXES, PROBABILITY_SUFFIX, is_prediction_map, strip_nifti_suffix
from ..data.nifti import read_image, read_label_values, read_volume
from ..errors import DataError
from ..inference.prediction_folder import describe_difference, predictors_of, recorded_inputs
from .calibration import body_mask, plot_reliability_diagram
from .scoring import CaseScores

RELIABILITY_FIGURE = "reliability.png"


def evaluate_folders(pred_dir: str | Path, label_dir: str | Path, out_dir: str | Path | None = None,
                     empty_gt: str = "exclude", allow_missing: bool = False,
                     probability_dir: str | Path | None = None, cases: Sequence[str] | None = None,
                     chosen_by: Mapping[str, Any] | None = None, allow_mixed_models: bool = False,
                     allow_outside_paths: bool = False) -> dict[str, Any]:
    """Score every prediction against its label (or only the cases `cases` names); write ``per_case.csv`` and
    ``summary.json`` to `out_dir` (default: `pred_dir`) and return the summary, which lists the scored case ids
    (``scored_cases``) and, given `chosen_by`, what chose them (``case_choice``: the split file and its list).

    Args:
        allow_missing: score the labelled cases that have a prediction and list the others in the summary
            (``missing_predictions``) instead of refusing.
        probability_dir: the folder of the cases' foreground-probability maps: adds the calibration
            metrics per case and in the summary, and writes ``reliability.png`` to `out_dir`.
        cases: the case ids to score: predictions of other cases are left alone, and each of these needs a
            label (and a prediction, unless `allow_missing`).
        chosen_by: recorded as the summary's ``case_choice`` (e.g. the split file and its list).
        allow_mixed_models: score predictions that `pred_dir`'s manifest says come from several models or
            settings (refused otherwise: the mean would mix them).
        allow_outside_paths: read label files that a dataset names outside `label_dir` (refused otherwise).
    Raises:
        DataError: a missing folder, a prediction without a label, a label without a prediction (unless
            `allow_missing`), predictions of several models or settings (unless `allow_mixed_models`), shapes
            or affines that differ, or a prediction holding other values than labels;
            with `probability_dir`, a missing, unreadable or off-grid map, or one holding values outside [0, 1].
    """
    scores = CaseScores(empty_gt)  # checks the policy before any file is read
    pred_dir, label_dir = Path(pred_dir), Path(label_dir)
    predictions, labels, missing = _matched_files(pred_dir, label_dir, cases, allow_missing, allow_outside_paths)
    if not allow_mixed_models:
        _refuse_mixed_models(pred_dir, [predictions[case_id].name for case_id in sorted(predictions)])
    probabilities = None if probability_dir is None else Path(probability_dir)
    images = {} if probabilities is None else _input_images(probabilities, pred_dir)
    no_image = _score_cases(scores, predictions, labels, probabilities, images)
    summary = dict(scores.summary(), missing_predictions=missing, scored_cases=[r["case_id"] for r in scores.rows])
    if chosen_by is not None:
        summary["case_choice"] = dict(chosen_by)
    if "calibration" in summary:
        summary["calibration"]["no_image"] = no_image
    _write_results(scores, summary, Path(out_dir) if out_dir is not None else pred_dir, probabilities is not None)
    return summary


def _matched_files(pred_dir: Path, label_dir: Path, cases: Sequence[str] | None, allow_missing: bool,
                   allow_outside_paths: bool) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
    """The predictions and labels to score by case id (those of `cases`, if given), and the labelled cases without
    a prediction; a `DataError` for a prediction without a label, and for a missing prediction unless
    `allow_missing`."""
    predictions = nifti_by_case(pred_dir)
    labels = label_files(label_dir, allow_outside_paths)
    if not predictions:
        raise DataError(pred_dir, "holds no prediction")
    if cases is not None:
        labels, predictions = _only_cases(labels, predictions, cases, label_dir)
    unlabelled = sorted(set(predictions) - set(labels))
    if unlabelled:
        raise DataError(label_dir, f"has no label for predicted case(s) {unlabelled[:5]}")
    missing = sorted(set(labels) - set(predictions))
    if missing and not allow_missing:
        raise DataError(pred_dir, f"has no prediction for {len(missing)} labelled case(s) {missing[:5]}; pass "
                                  "--allow-missing (allow_missing=True) to score the others and list these")
    return predictions, labels, missing


def _score_cases(scores: CaseScores, predictions: dict[str, Path], labels: dict[str, Path],
                 probability_dir: Path | None, images: Mapping[str, Path]) -> list[str]:
    """Add every predicted case to `scores`, in case-id order (with its probability map and body mask, given
    `probability_dir`); return the cases whose input image is not known. `DataError` for a prediction that is
    not on its label's grid or holds values that no label holds."""
    no_image = []
    predicted_values: dict[str, set[int]] = {}
    label_values = {0, 1}
    for case_id in sorted(predictions):
        pred, ref, ref_affine = _mask_and_label(predictions[case_id], labels[case_id])
        predicted_values[case_id] = set(np.unique(pred).tolist())
        label_values |= set(np.unique(ref).tolist())
        probability, body = None, None
        if probability_dir is not None:
            probability = _read_probability(probability_dir, case_id, ref.shape, ref_affine, labels[case_id])
            body = _body(images.get(case_id), ref.shape, ref_affine)
            if body is None:
                no_image.append(case_id)
        scores.add(case_id, pred, ref, probability, body=body, spacing=np.sqrt((ref_affine[:3, :3] ** 2).sum(axis=0)),
                   prediction_file=str(predictions[case_id]), reference_file=str(labels[case_id]))
    for case_id, values in predicted_values.items():
        if values - label_values:
            raise DataError(predictions[case_id], f"holds values {sorted(values - label_values)} that no label "
                                                  f"holds (labels: {sorted(label_values)}); is it a mask?")
    return no_image


def _mask_and_label(prediction: Path, label: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A predicted mask, its label and the label's affine; `DataError` unless both lie on one grid."""
    pred, pred_affine, _ = _read_mask(prediction, "prediction")
    ref, ref_affine, _ = _read_mask(label, "label")
    if pred.shape != ref.shape:
        raise DataError(prediction, f"shape {pred.shape} differs from its label's {ref.shape}")
    if not same_affine(pred_affine, ref_affine):
        raise DataError(prediction, f"lies on another grid than its label {label} "
                                    "(the affines differ): it was not predicted from this case's image")
    return pred, ref, ref_affine


def _write_results(scores: CaseScores, summary: dict[str, Any], out_dir: Path, reliability: bool) -> None:
    """``per_case.csv`` and ``summary.json`` in `out_dir`, and with `reliability` the pooled reliability diagram."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(scores.rows[0]))
    writer.writeheader()
    writer.writerows(scores.rows)
    atomic_write_text(buffer.getvalue(), out_dir / "per_case.csv")
    atomic_write_json(summary, out_dir / "summary.json")
    if reliability:
        plot_reliability_diagram(scores.reliability, out_dir / RELIABILITY_FIGURE,
                                 title=f"{len(scores.rows)} case(s), pooled ECE {scores.reliability.ece():.4f}")


def _only_cases(labels: dict[str, Path], predictions: dict[str, Path], cases: Sequence[str],
                label_dir: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The labels and predictions of the cases `cases` names; a case without a label is a `DataError`."""
    unlabelled = [c for c in cases if c not in labels]
    if unlabelled:
        raise DataError(label_dir, f"has no label of case(s) {', '.join(map(repr, unlabelled[:5]))}"
                                   f"{' ...' if len(unlabelled) > 5 else ''} (named by --cases or --split-file)")
    return ({c: labels[c] for c in cases}, {c: predictions[c] for c in cases if c in predictions})


def _refuse_mixed_models(pred_dir: Path, names: list[str]) -> None:
    """`DataError` if the manifest of `pred_dir` says that the predictions `names` come from several models or
    settings (`bayesprior.inference.prediction_folder.predictors_of`)."""
    runs = predictors_of(pred_dir, names)
    if len(runs) > 1:
        (first, first_names), (second, second_names) = runs[:2]
        raise DataError(pred_dir, f"holds predictions of {len(runs)} models or settings, which one mean would mix "
                                  f"({describe_difference(first, second)}: {len(first_names)} and "
                                  f"{len(second_names)} file(s), e.g. {first_names[0]} and {second_names[0]}); score "
                                  "one model's predictions at a time, or pass --allow-mixed-models "
                                  "(allow_mixed_models=True)")


def probability_file(folder: Path, case_id: str) -> Path:
    """The probability map of `case_id` in `folder` (``<case>_probability.nii.gz`` or ``.nii``); the
    ``.nii.gz`` name when neither exists."""
    for suffix in NIFTI_SUFFIXES:
        path = folder / f"{case_id}{PROBABILITY_SUFFIX}{suffix}"
        if path.is_file():
            return path
    return folder / f"{case_id}{PROBABILITY_SUFFIX}{NIFTI_SUFFIXES[0]}"


def _input_images(probability_dir: Path, pred_dir: Path) -> dict[str, Path]:
    """The image each case was predicted from, by case id, as the prediction folders' manifests record it."""
    images: dict[str, Path] = {}
    for folder in (pred_dir, probability_dir):  # the maps' own manifest last, so it wins
        for name, path in recorded_inputs(folder).items():
            if not is_prediction_map(Path(name)):
                images[strip_nifti_suffix(name)] = path
    return images


def _body(image_path: Path | None, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray | None:
    """The body mask of the image at `image_path` (of a 4D file, its first channel: the body is non-zero in every
    one), if it is there and on the label's grid; None otherwise (the case is then scored over every voxel)."""
    if image_path is None or not image_path.is_file():
        return None
    try:
        image, image_affine, _ = read_volume(image_path, channel=0)
    except DataError:
        return None
    if image.shape != tuple(shape) or not same_affine(image_affine, affine):
        return None
    return body_mask(image)


def _read_probability(folder: Path, case_id: str, shape: tuple[int, ...], affine: np.ndarray,
                      label: Path) -> np.ndarray:
    path = probability_file(folder, case_id)
    if not path.is_file():
        raise DataError(path, f"no probability map for case {case_id!r} (predict with --samples writes one)")
    probability, probability_affine, _ = read_image(path)  # refuses NaN and infinite values
    if probability.shape != shape:
        raise DataError(path, f"shape {probability.shape} differs from its label's {shape}")
    if not same_affine(probability_affine, affine):
        raise DataError(path, f"lies on another grid than its label {label} (the affines differ)")
    if probability.size and (probability.min() < 0 or probability.max() > 1):
        raise DataError(path, f"holds values outside [0, 1] ({float(probability.min()):.3g} to "
                              f"{float(probability.max()):.3g}); is it a probability map?")
    return probability


def _read_mask(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, Any]:
    try:
        return read_label_values(path)
    except DataError as exc:
        raise DataError(path, f"{what}: {exc.problem}") from None
