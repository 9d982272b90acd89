"""`bayesprior evaluate`: DSC and IoU of predicted masks against labels; calibration of probability maps."""
from __future__ import annotations

from pathlib import Path

import click

from ..atomic import remove_stale_temp_files_of
from ..evaluation.folders import RELIABILITY_FIGURE, evaluate_folders
from ..evaluation.metrics import EMPTY_GT_POLICIES


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
              default=None, help="Folder of the <case>_probability maps (predict --samples writes them beside the "
                                 "masks): adds ECE, Brier score, voxel NLL and UEO, and reliability.png.")
@click.option("--allow-mixed-models", is_flag=True,
              help="Score a PRED_DIR whose manifest says its predictions come from several models or settings "
                   "(refused otherwise: the mean would mix them).")
def evaluate_command(pred_dir, label_dir, empty_gt, out_dir, allow_missing, probability_dir, allow_mixed_models):
    """Per-case DSC and IoU (label > 0 is foreground), their means, per_case.csv and summary.json.

    Strict by default, as nnU-Net's evaluator: every label needs a prediction on the same grid (shape and
    affine) holding label values only; predictions that PRED_DIR's manifest (bayesprior_predictions.json)
    says come from several models or settings are refused without --allow-mixed-models.

    LABEL_DIR is a folder of labels <case id>.nii.gz, or a dataset folder of any registered layout (nnU-Net,
    MSD, BRATS), whose labels the layout finds.

    With --probabilities, whether the uncertainty is any good: expected calibration error (15 bins), Brier
    score, voxel NLL and the uncertainty-error overlap, per case and on average, and a reliability diagram.

    Example: bayesprior evaluate preds data/Dataset002_Tumour/labelsTs --probabilities preds
    """
    report_dir = out_dir if out_dir is not None else pred_dir
    remove_stale_temp_files_of(report_dir / "per_case.csv", report_dir / "summary.json",
                               report_dir / RELIABILITY_FIGURE)
    summary = evaluate_folders(pred_dir, label_dir, out_dir, empty_gt=empty_gt, allow_missing=allow_missing,
                               probability_dir=probability_dir, allow_mixed_models=allow_mixed_models)
    if summary["missing_predictions"]:
        missing = summary["missing_predictions"]
        click.echo(f"warning: {len(missing)} labelled case(s) have no prediction and are not scored: "
                   f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}", err=True)
    mean = summary["mean"]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    click.echo(f"{summary['n_scored']}/{summary['n_cases']} cases scored "
               f"({summary['n_empty_reference']} with empty reference, policy {empty_gt}): "
               f"DSC {fmt(mean['dsc'])}, IoU {fmt(mean['iou'])}")
    if "calibration" in summary:
        click.echo(f"calibration over {summary['n_cases']} cases: ECE {fmt(mean['ece'])}, Brier {fmt(mean['brier'])}, "
                   f"NLL {fmt(mean['nll'])}, UEO {fmt(mean['ueo'])}; {report_dir / RELIABILITY_FIGURE}")


def register(cli: click.Group) -> None:
    cli.add_command(evaluate_command)
