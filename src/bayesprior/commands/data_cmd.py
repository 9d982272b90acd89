"""`bayesprior synth` and `bayesprior show-cases`: make synthetic MRI datasets and look at datasets."""
from __future__ import annotations

import time
from pathlib import Path

import click

from ..data import read_dataset
from ..data.show import show_cases
from ..data.synth import synthesize_dataset
from ..progress import Progress
from .common import SHAPE


@click.command("synth")
@click.option("--kind", type=click.Choice(["ms", "tumour"]), required=True,
              help="ms: FLAIR with MS-like lesions (source); tumour: T2 with glioma-like tumours (target).")
@click.option("--cases", "n_cases", type=click.IntRange(min=1), required=True, help="Number of cases.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True, help="Output dataset folder.")
@click.option("--shape", type=SHAPE, default=None,
              help="Output shape X,Y,Z (spacing follows, isotropic); e.g. 40,48,40 (~4 mm).")
@click.option("--spacing", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Isotropic voxel size in mm (default 2).")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed; each case depends only on seed, kind, index.")
@click.option("--brats-mirror", is_flag=True, help="Tumour only: also write OUT/brats/HGG/<ID>/<ID>_{t2,flair,seg}.nii.gz.")
@click.option("--procedural", is_flag=True, help="Use the procedural brain instead of the MNI152 template.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-case lines.")
def synth_command(kind, n_cases, out_dir, shape, spacing, seed, brats_mirror, procedural, quiet):
    """Write a synthetic brain-MRI dataset in nnU-Net v2 layout (dataset.json, imagesTr, labelsTr, manifests).

    Example: bayesprior synth --kind tumour --cases 20 --out data/SynBraTS --shape 40,48,40 --seed 0
    """
    start = time.perf_counter()
    synthesize_dataset(kind, n_cases, out_dir, shape=shape, spacing=spacing, seed=seed,
                       brats_mirror=brats_mirror, procedural=procedural,
                       progress=lambda it: Progress(it, f"synth {kind}", "case", enabled=not quiet,
                                                    line_per_item=True))
    elapsed = time.perf_counter() - start
    click.echo(f"wrote {n_cases} {kind} cases to {out_dir} in {elapsed:.1f} s ({n_cases / elapsed:.2f} cases/s)")


@click.command("show-cases")
@click.argument("folder", type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="PNG file to write.")
@click.option("--layout", default=None, help="Dataset layout (default: detected).")
@click.option("--channel", default=None, help="Channel / sequence name or index, when there are several.")
@click.option("--max-cases", type=click.IntRange(min=1), default=8, show_default=True, help="Cases to show.")
@click.option("--columns", type=click.IntRange(min=1), default=4, show_default=True, help="Grid columns.")
@click.option("--allow-outside-paths", is_flag=True,
              help="Read files that the dataset names outside FOLDER (absolute or ../ paths in an MSD dataset.json).")
def show_cases_command(folder, out, layout, channel, max_cases, columns, allow_outside_paths):
    """Render a PNG grid: per case the axial slice with the most foreground and the label contour.

    Example: bayesprior show-cases data/SynBraTS --out synth_tumour.png
    """
    cases = read_dataset(folder, layout, channel=channel, allow_outside_paths=allow_outside_paths)[:max_cases]
    show_cases(cases, out, columns=columns, title=Path(folder).name)
    click.echo(f"wrote {out} ({len(cases)} cases)")


def register(cli: click.Group) -> None:
    cli.add_command(synth_command)
    cli.add_command(show_cases_command)
