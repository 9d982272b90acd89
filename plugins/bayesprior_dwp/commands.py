"""CLI commands of the DWP plugin: `bayesprior fit-prior` and `bayesprior show-kernels`."""
from __future__ import annotations

from pathlib import Path

import click

from bayesprior.atomic import remove_stale_temp_files_of
from bayesprior.kernel_structure import structure_rows, structure_table, structure_warnings
from bayesprior.kernels import KernelBank

from .fit import fit_prior_file, heldout_scores
from .pictures import draw_kernel_figure
from .prior_file import load_prior_file


@click.command("fit-prior")
@click.argument("bank", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Prior file to write.")
@click.option("--latent-dim", type=click.IntRange(min=1), default=6, show_default=True,
              help="Size of the VAE latent z.")
@click.option("--hidden", type=click.IntRange(min=1), default=32, show_default=True,
              help="Width of the VAE hidden layers.")
@click.option("--max-epochs", type=click.IntRange(min=1), default=500, show_default=True, help="Epoch limit per group.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Kernels per Adam step.")
@click.option("--heldout-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              show_default=True, help="Share of kernels held out.")
@click.option("--group", "groups", multiple=True, help="Fit only this group (repeatable; default: all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of split, initialisation and sampling.")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-group lines.")
def fit_prior_command(bank, out, latent_dim, hidden, max_epochs, batch_size, heldout_fraction, groups, seed,
                      quiet) -> None:
    """Fit one kernel VAE per group of a kernel bank and write the DWP prior file.

    Adam 1e-3, ReduceLROnPlateau (patience 15, factor 0.1) on the held-out loss, stop at lr 1e-6 or
    --max-epochs. Prints the held-out ELBO per group (nats per kernel; higher is better).

    Example: bayesprior fit-prior kernels.npz --out prior.pt
    """
    remove_stale_temp_files_of(out)
    fits = fit_prior_file(bank, out, groups=list(groups) or None, latent_dim=latent_dim, hidden=hidden,
                          max_epochs=max_epochs, batch_size=batch_size, heldout_fraction=heldout_fraction, seed=seed,
                          progress=not quiet)
    kernel_bank = KernelBank.load(bank)
    rows = structure_rows({g: kernel_bank.kernels[g] for g in fits}, heldout_fraction, seed,
                          learned=heldout_scores(fits))
    epochs = {g: len(history) - 1 for g, (_, history) in fits.items()}
    click.echo("held-out log-likelihood per kernel (nats; the VAE's is its ELBO, a lower bound):")
    click.echo(structure_table(rows, extra={"epochs": epochs}))
    for line in structure_warnings(rows):
        click.echo(f"warning: {line}", err=True)
    click.echo(f"wrote {out}")


@click.command("show-kernels")
@click.argument("bank", type=click.Path(dir_okay=False))
@click.argument("prior", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Picture to write (.png).")
@click.option("--count", type=click.IntRange(min=1), default=8, show_default=True,
              help="Kernels shown per side and group.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the kernels picked and sampled.")
def show_kernels_command(bank, prior, out, count, seed) -> None:
    """Draw central slices of harvested kernels next to samples of each group's VAE (paper Figure 5).

    Example: bayesprior show-kernels kernels.npz prior.pt --out kernels.png
    """
    draw_kernel_figure(KernelBank.load(bank), load_prior_file(prior), Path(out), count=count, seed=seed)
    click.echo(f"wrote {out}")


def register(cli: click.Group) -> None:
    cli.add_command(fit_prior_command)
    cli.add_command(show_kernels_command)
