"""`bayesprior experiment` (the paper's protocol from a TOML file) and `bayesprior demo` (a CPU-scale run)."""
from __future__ import annotations

import time
from pathlib import Path

import click

from ..errors import ConfigError
from ..experiment.config import load_config, parse_config
from ..experiment.pipeline import STAGES, Experiment
from .common import Shard

# The demo: the whole protocol on synthetic data, sized for a few minutes on 2 CPU cores
# (6 min 59 s on 2 idle cores, measured 2026-11-26 with the DWP settings below; its --help says so).
DEMO_CONFIG = {
    "source": {"synthetic": {"kind": "ms", "cases": 16, "shape": [40, 48, 40], "seed": 1000}},
    "target": {"synthetic": {"kind": "tumour", "cases": 18, "shape": [40, 48, 40], "seed": 2000}},
    "preprocess": {"crop_nonzero": False, "intensity": "minmax", "divisible_by": 8},
    "source_training": {"seeds": [0], "restarts": 0, "max_epochs": 24, "patience": 4, "val_fraction": 0.0},
    "prior": {"max_epochs": 100, "norm_threshold": 0.01, "options": {"latent_dim": 6}},
    # the settings of benchmarks/transfer_cpu.toml (the DWP's chosen there on validation cases), at one split,
    # one train size and 80 optimiser steps instead of 300
    "target_training": {"max_epochs": 20, "batch_size": 2, "ce_reduction": "sum", "forward_mode": "sample",
                        "per_method": {"dwp": {"kl_weight": 0.001, "prior_init": "source",
                                               "log_variance_init": -14.0}}},
    "protocol": {"train_sizes": [8], "test_size": 10, "splits": 1, "methods": ["dwp", "pr", "prf", "ri"]},
}


def _run(config, out: Path, shard: tuple[int, int], stage: str, quiet: bool, config_name: str,
         rerun_changed: bool = False, reuse_from: tuple[Path, ...] = ()) -> None:
    start = time.perf_counter()
    try:  # the settings that need the plugins are checked here, before any data are made
        experiment = Experiment(config, out, progress=not quiet, log=click.echo)
    except ConfigError as exc:
        raise ConfigError(f"{config_name}: {exc}") from None
    table = experiment.run(shard=shard, stage=stage, rerun_changed=rerun_changed, reuse_from=reuse_from)
    if table:
        click.echo("\n" + table)
        click.echo(f"tables, plots and figures in {out}  ({time.perf_counter() - start:.0f} s)")


@click.command("experiment")
@click.argument("config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default: runs/<config name>). Re-running resumes it.")
@click.option("--shard", type=Shard(), default="0/1", metavar="I/N", help="Run only shard I of N of the target runs.")
@click.option("--stage", type=click.Choice(STAGES), default="all",
              show_default=True, help="Do one stage only (run 'source' once before parallel shards).")
@click.option("--rerun-changed", is_flag=True,
              help="Redo the runs (and source stage) whose settings changed since they were made; the old "
                   "outputs move to OUT/superseded/; a run whose scoring alone changed is scored again, not "
                   "retrained. Without it, changed settings are refused.")
@click.option("--reuse-runs-from", "reuse_from", type=click.Path(exists=True, file_okay=False, path_type=Path),
              multiple=True, help="Another experiment folder: its finished runs trained exactly as runs here (same "
                                  "training settings, source and prior files, training cases) are copied in and only "
                                  "scored, e.g. a tuning grid's networks scored on the test set. Give it again for "
                                  "more folders; the first that has a run gives it.")
@click.option("--quiet", is_flag=True, help="No progress bars and no per-epoch lines (the stages' log stays).")
def experiment_command(config_file: Path, out: Path | None, shard: tuple[int, int], stage: str,
                       rerun_changed: bool, reuse_from: tuple[Path, ...], quiet: bool) -> None:
    """Run the paper's protocol (its Algorithms 2-3, Tables 3-4) from CONFIG_FILE.

    Source data -> source model zoo -> harvested kernels -> fitted priors; then, on the target, every
    split x train size x method is trained and evaluated on the split's fixed test set. Each run's
    result is written atomically with the settings that made it, so a killed experiment resumes and
    skips finished runs; a result made with other settings is refused, or redone with --rerun-changed.

    Example: bayesprior experiment benchmarks/transfer_cpu.toml --out runs/transfer_cpu --shard 0/2
    """
    config = load_config(config_file)
    _run(config, out or Path("runs") / config_file.stem, shard, stage, quiet, str(config_file), rerun_changed,
         reuse_from)


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bayesprior-demo"),
              show_default=True, help="Output folder; everything the demo writes goes here.")
@click.option("--quiet", is_flag=True, help="No progress bars and no per-epoch lines (the stages' log stays).")
def demo_command(out: Path, quiet: bool) -> None:
    """Synthesise an MS-like source and a tumour-like target, run a CPU-scale version of the paper's
    experiment (DWP, PR, PRf, RI) and print the table. It took 6 min 59 s on 2 CPU cores (measured
    2026-11-26, recorded in the README; slower on a busy machine); no data needed.

    Example: bayesprior demo --out bayesprior-demo
    """
    _run(parse_config(DEMO_CONFIG, Path("<demo>")), out, (0, 1), "all", quiet, "<demo>")
    click.echo("Synthetic data, CPU scale: the numbers show the pipeline works, not the paper's result.")
    for what, pattern, use in (("source model zoo", "source/zoo/seed*/*.pt", "[source] models, harvest"),
                               ("source network", "source/runs/seed*/model.pt", "train --source"),
                               ("DWP prior", "source/prior_dwp.pt", "train --prior-file, [prior] file")):
        found = sorted(out.glob(pattern))
        if found:
            click.echo(f"{what} ({use}): {', '.join(map(str, found))}")


def register(cli: click.Group) -> None:
    cli.add_command(experiment_command)
    cli.add_command(demo_command)
