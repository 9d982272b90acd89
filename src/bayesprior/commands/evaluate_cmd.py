"""`bayesprior evaluate`: DSC and IoU of predicted masks against labels; calibration of probability maps."""
from __future__ import annotations

from pathlib import Path

import click

from ..atomic import remove_stale_temp_files_of
from ..evaluation.folders import RELIABILITY_FIGURE, evaluate_folders
from ..evaluation.metrics import EMPTY_GT_POLICIES
from ..evaluation.scoring import BODY_REGION, EVERY_VOXEL
from .case_choice import case_choice_options


@click.command("evaluate")
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("label_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--empty-gt", type=click.Choice(EMPTY_GT_POLICIES), default="exclude", show_default=True,
              help="Score of a case with an empty label: excluded (NaN, counted), 1 if the prediction is empty, or 0.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where per_case.csv and summary.json go (default: PRED_DIR).")
@click.option("--allow-missing", is_flag=True,
              help="Score the labelled cases that have a prediction; list the others instead of refusing.")
@click.option("--probabilities", "probability_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Folder of the <case>_probability maps (predict --probabilities or --samples writes "
                                 "them beside the masks): adds ECE, Brier score, voxel NLL and UEO, and "
                                 "reliability.png.")
@click.option("--allow-mixed-models", is_flag=True,
              help="Score a PRED_DIR whose manifest says its predictions come from several models or settings "
                   "(refused otherwise: the mean would mix them).")
@click.option("--allow-outside-paths", is_flag=True,
              help="Read label files that the dataset names outside LABEL_DIR (absolute or ../ paths in an MSD "
                   "dataset.json).")
@case_choice_options
def evaluate_command(pred_dir, label_dir, empty_gt, out_dir, allow_missing, probability_dir, allow_mixed_models,
                     allow_outside_paths, cases):
    """Per-case DSC and IoU (label > 0 is foreground), their means, per_case.csv and summary.json.

    Strict by default, as nnU-Net's evaluator: every label needs a prediction on the same grid (shape and
    affine) holding label values only; predictions that PRED_DIR's manifest (bayesprior_predictions.json)
    says come from several models or settings are refused without --allow-mixed-models.

    LABEL_DIR is a folder of labels <case id>.nii.gz, or a dataset folder of any registered layout (nnU-Net,
    MSD, BRATS), whose labels the layout finds.

    With --probabilities, whether the uncertainty is any good: expected calibration error (15 bins), Brier
    score, voxel NLL and the uncertainty-error overlap, per case and on average, and a reliability diagram.
    ECE, Brier and NLL are computed over the body mask (the non-zero voxels of the image each case was
    predicted from, which predict's manifest names), where a reader would score them, not over the air around
    the head; also (ece_band ...) over the label, the prediction and 5 mm around them, and (ece_all ...) over
    every voxel.

    --split-file F scores only the cases of its 'test' list (--subset val|train for another), --cases ID,... only
    those; summary.json records which cases were scored and what chose them.

    Example: bayesprior evaluate preds data/Dataset002_Tumour/labelsTs --probabilities preds

    Example: bayesprior evaluate preds data/BRATS2018 --split-file split.json --probabilities preds
    """
    report_dir = out_dir if out_dir is not None else pred_dir
    remove_stale_temp_files_of(report_dir / "per_case.csv", report_dir / "summary.json",
                               report_dir / RELIABILITY_FIGURE)
    summary = evaluate_folders(pred_dir, label_dir, out_dir, empty_gt=empty_gt, allow_missing=allow_missing,
                               probability_dir=probability_dir, cases=None if cases is None else cases.ids,
                               chosen_by=None if cases is None else cases.record(),
                               allow_mixed_models=allow_mixed_models, allow_outside_paths=allow_outside_paths)
    if summary["missing_predictions"]:
        missing = summary["missing_predictions"]
        click.echo(f"warning: {len(missing)} labelled case(s) have no prediction and are not scored: "
                   f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}", err=True)
    mean = summary["mean"]
    chosen = "" if cases is None else f" of {cases.describe()}"
    click.echo(f"{summary['n_scored']}/{summary['n_cases']} cases{chosen} scored "
               f"({summary['n_empty_reference']} with empty reference, policy {empty_gt}): "
               f"DSC {_score_text(mean['dsc'])}, IoU {_score_text(mean['iou'])}")
    if "calibration" in summary:
        calibration = summary["calibration"]
        if calibration["no_image"]:
            shown = calibration["no_image"]
            click.echo(f"warning: {len(shown)} case(s) have no known image (their predictions were not written by "
                       f"bayesprior predict), so their ECE, Brier and NLL are over every voxel: "
                       f"{', '.join(shown[:10])}{' ...' if len(shown) > 10 else ''}", err=True)
        region = calibration.get("region") or f"{BODY_REGION}, or {EVERY_VOXEL} where no image is known"
        for where, suffix in ((f"in the region: {region}", ""),
                              (f"in the band (label, prediction and {calibration['band_mm']:g} mm around)", "_band"),
                              (f"over {EVERY_VOXEL}", "_all")):
            click.echo(f"calibration {where}: ECE {_score_text(mean['ece' + suffix])}, "
                       f"Brier {_score_text(mean['brier' + suffix])}, NLL {_score_text(mean['nll' + suffix])}")
        click.echo(f"UEO (uncertainty-error overlap) {_score_text(mean['ueo'])}; reliability diagram of the region: "
                   f"{report_dir / RELIABILITY_FIGURE}")


def _score_text(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def register(cli: click.Group) -> None:
    cli.add_command(evaluate_command)
