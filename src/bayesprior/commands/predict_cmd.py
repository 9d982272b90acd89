"""`bayesprior predict`: segment NIfTI volumes with a trained model."""
from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import click

from ..data.preprocess import INTENSITY_MODES
from ..inference.prediction import PredictionSettings, predict_folder
from ..progress import plain_lines
from .case_choice import case_choice_options
from .common import SHAPE, Device, Spacing, trust_file_option


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("in_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--samples", type=click.IntRange(min=0), default=0, show_default=True,
              help="Monte-Carlo samples for Bayesian models (also writes probability and entropy maps).")
@click.option("--probabilities", is_flag=True,
              help="Write <case>_probability and <case>_entropy maps for any model: a deterministic model's softmax, "
                   "a Bayesian one's posterior mean (or its --samples' mean), for evaluate --probabilities.")
@click.option("--roi", type=SHAPE, default="40,48,40", show_default=True,
              help="Sliding-window size D,H,W (multiples of 8).")
@click.option("--overlap", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
              help="Sliding-window overlap in [0, 1).")
@click.option("--largest-component", is_flag=True,
              help="Keep only the largest connected component (single masses only, never MS lesions).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the Monte-Carlo samples (each case's samples depend on it and the case id only).")
@click.option("--overwrite", is_flag=True,
              help="Replace files in OUT_DIR with the names of predictions that bayesprior did not write, and remove "
                   "the predictions of another model or other settings there first.")
@click.option("--layout", default=None, help="Dataset layout of IN_DIR (detected when omitted).")
@click.option("--channel", default=None, help="Channel or sequence to segment (name or index), as in train.")
@case_choice_options
@click.option("--allow-outside-paths", is_flag=True,
              help="Read files that the dataset names outside IN_DIR (absolute or ../ paths in an MSD dataset.json).")
@click.option("--spacing", type=Spacing(), default=None,
              help="Only for a model file that records no preprocessing: resample to this spacing (mm).")
@click.option("--resample-shape", type=SHAPE, default=None,
              help="Only for a model file that records no preprocessing: resample to D,H,W.")
@click.option("--shape", type=SHAPE, default=None,
              help="Only for a model file that records no preprocessing: crop/pad to D,H,W.")
@click.option("--intensity", type=click.Choice(INTENSITY_MODES), default=None,
              help="Only for a model file that records no preprocessing: the intensity normalisation.")
@click.option("--device", type=Device(), default="cpu", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar: one plain line per case (the default where "
                                                   "stderr is not a terminal).")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-case lines.")
@trust_file_option
def predict_command(model, in_dir, out_dir, samples, probabilities, roi, overlap, largest_component, seed, overwrite,
                    layout, channel, cases, allow_outside_paths, spacing, resample_shape, shape, intensity, device,
                    no_progress, quiet):
    """Segment every case in IN_DIR with MODEL; write masks <case id>.nii.gz to OUT_DIR with each input's
    affine and header, on the input's grid.

    IN_DIR is a folder of NIfTI images (or its imagesTs), or a dataset folder of any registered
    layout: an nnU-Net or MSD dataset, a BRATS folder or one patient's folder (--channel picks the sequence).
    Only test images are taken from a dataset (imagesTs, MSD's 'test' list); to predict training images,
    give their folder (e.g. DATASET/imagesTr). The preprocessing the model file records (spacing, shape,
    intensities and their statistics) is redone by itself; the preprocessing options are for model files that
    record none.

    OUT_DIR keeps a manifest (bayesprior_predictions.json) of the files written, with the model's
    SHA-256 and the settings. A file there that bayesprior did not write is never replaced without
    --overwrite, and OUT_DIR may not be the input folder or its labels' folder. OUT_DIR holds one model's
    predictions with one set of settings: another model or other settings are refused (--overwrite
    removes the earlier predictions first).

    --split-file F predicts only the cases of its 'test' list (--subset val|train for another), --cases ID,...
    only those cases.

    Example: bayesprior predict runs/target/model.pt data/Dataset002_Tumour/imagesTs preds --samples 10

    Example: bayesprior predict runs/t2/model.pt data/BRATS2018 preds --split-file split.json --probabilities
    """
    settings = PredictionSettings(roi=roi, overlap=overlap, samples=samples, largest_component=largest_component,
                                  device=device, seed=seed, probabilities=probabilities)
    values = {"spacing": spacing, "resample_shape": resample_shape, "shape": shape, "intensity": intensity}
    options = {name: value for name, value in values.items() if value is not None}  # PreprocessConfig fields
    with plain_lines() if no_progress else nullcontext():
        written = predict_folder(model, in_dir, out_dir, settings, progress=not quiet, overwrite=overwrite,
                                 layout=layout, channel=channel, allow_outside_paths=allow_outside_paths,
                                 preprocess_options=options or None, cases=None if cases is None else cases.ids)
    chosen = "" if cases is None else f" ({cases.describe()})"
    click.echo(f"wrote {len(written)} mask(s) to {out_dir}{chosen}")


def register(cli: click.Group) -> None:
    cli.add_command(predict_command)
