"""`bayesprior harvest`: collect the kernels of trained models into a kernel bank."""
from __future__ import annotations

import click

from ..atomic import remove_stale_temp_files_of
from ..kernel_structure import structure_rows, structure_table
from ..kernels import DEFAULT_NORM_THRESHOLD, harvest_kernels
from .common import Integers, refuse_without_effect, trust_file_option


@click.command("harvest")
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Kernel bank file to write (.npz).")
@click.option("--group-by", type=click.Choice(["architecture", "resolution"]), default="architecture",
              show_default=True, help="Groups declared by the architecture plugin, or layers grouped by input resolution.")
@click.option("--input-shape", type=Integers(minimum=1), default=None,
              help="Spatial size of an example input for --group-by resolution, e.g. 40,48,40.")
@click.option("--norm-threshold", type=click.FloatRange(min=0), default=None,
              help="Drop kernels whose L2 norm is below this (default 1e-2).")
@click.option("--kernel-size", type=click.IntRange(min=1), default=None,
              help="Harvest layers with this cubic kernel size (default: the most common > 1).")
@click.option("--quiet", is_flag=True, help="Print no tables, only the file written (and warnings).")
@trust_file_option
def harvest_command(checkpoints, out, group_by, input_shape, norm_threshold, kernel_size, quiet) -> None:
    """Collect the k x k x k kernels of one or more model files into a kernel bank, grouped.

    Kernels with a small L2 norm are dropped and counted. The bank records the checkpoints (with
    SHA-256), the groups and their layers, and the counts; its format is in docs/formats.md.

    Example: bayesprior harvest runs/src*/model.pt --out kernels.npz
    """
    if group_by == "architecture":
        refuse_without_effect(click.get_current_context(), ("input_shape",),
                              "with --group-by architecture (the architecture names the groups)")
    remove_stale_temp_files_of(out)
    threshold = DEFAULT_NORM_THRESHOLD if norm_threshold is None else norm_threshold
    bank = harvest_kernels(checkpoints, group_by=group_by, example_shape=input_shape,
                           norm_threshold=threshold, kernel_size=kernel_size)
    bank.save(out)
    if quiet:
        click.echo(f"wrote {out}")
        return
    click.echo(f"harvested {len(checkpoints)} checkpoint(s) of {bank.header['architecture']['name']}, "
               f"kernel {'x'.join(map(str, bank.kernel_size))}, norm threshold {threshold:g}")
    click.echo(bank.table())
    click.echo("held-out log-likelihood per kernel (nats): a random initialisation has gain ~0; "
               "a prior worth fitting needs a clear gain")
    click.echo(structure_table(structure_rows(bank.kernels)))
    click.echo(f"wrote {out}")


def register(cli: click.Group) -> None:
    cli.add_command(harvest_command)
