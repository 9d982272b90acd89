"""`bayesprior train`: train a segmentation model on a NIfTI dataset (any method, any prior)."""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from ..data.datasets import dataset_case_ids
from ..data.preprocess import INTENSITY_MODES, PreprocessConfig, prepare_dataset, recorded_config
from ..data.provenance import input_grid, preprocessing_summary
from ..errors import ConfigError
from ..plugins import prior_source_file
from ..progress import labelled, plain_lines
from ..training.config import LR_MONITORS, PRIOR_LAYERS, TrainConfig
from ..training.distributed import init_from_environment
from ..training.methods import SOURCE_UNUSED, TrainingMethod, build_model, prior_file_given_twice, training_method
from ..training.recipes import DEFAULT_RECIPE, RECIPES, recipe
from ..training.splits import CaseSplit, check_known_cases, read_split_file, validation_split
from ..training.tensorboard import TensorBoardLog, summary_writer_class
from ..training.trainer import seed_everything, train
from ..training.transfer_checks import preprocessing_warnings, source_mismatch_warnings, transfer_origins
from .case_choice import parse_case_list
from .common import SHAPE, Device, Integers, KeyValue, Spacing, refuse_without_effect, trust_file_option


def _check_method(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        training_method(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


@click.command("train")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--method", default="ri", show_default=True, callback=_check_method,
              help="ri, pr, prf, or a registered prior name (gaussian, loguniform, dwp, ...).")
@click.option("--architecture", default="unet3d", show_default=True, help="Registered architecture.")
@click.option("--arch-option", type=KeyValue(), multiple=True,
              help="Architecture builder argument key=value, JSON value (repeatable).")
@click.option("--source", type=click.Path(exists=True, dir_okay=False), help="Source model file (pr, prf, priors).")
@click.option("--prior-file", "prior_path", type=click.Path(exists=True),
              help="Prior file (e.g. from fit-prior), passed to the prior as `path`.")
@click.option("--prior-option", type=KeyValue(), multiple=True,
              help="Prior factory argument key=value, JSON value (repeatable).")
@click.option("--init-from-prior", is_flag=True, help="Start posterior means at samples of the prior.")
@click.option("--recipe", "recipe_name", type=click.Choice(list(RECIPES)), default=None,
              help="The defaults of a Bayesian method's settings: " + "; ".join(
                  f"{r.name}: {r.description}" for r in RECIPES.values())
              + f". --kl-weight, --forward-mode and --log-variance-init override them. [default: {DEFAULT_RECIPE}]")
@click.option("--epochs", "max_epochs", type=click.IntRange(min=1), default=500, show_default=True,
              help="Maximum number of epochs (each epoch's line says its seconds and the time left at that pace).")
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True, help="Global batch size.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Adam learning rate.")
@click.option("--seeds", type=Integers(minimum=0), default="0", show_default=True,
              help="Comma-separated seeds; one run each. The first also picks the validation cases.")
@click.option("--restarts", type=click.IntRange(min=0), default=0, show_default=True,
              help="Cyclical restarts after convergence; each minimum is saved to RUN_DIR/zoo.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="Fraction of cases held out to monitor (0: monitor the training loss, or its data term: --lr-monitor).")
@click.option("--ce-reduction", type=click.Choice(["sum", "mean"]), default="sum", show_default=True)
@click.option("--dice-batch/--dice-per-case", default=True, show_default=True)
@click.option("--kl-weight", type=click.FloatRange(min=0), default=None,
              help="beta of the ELBO [default: --recipe's, 0.001 (benchmark) or 1 (paper)].")
@click.option("--forward-mode", type=click.Choice(["lrt", "sample"]), default=None,
              help="Bayesian forward: local reparameterisation, or one weight sample per step (cheaper) "
                   "[default: --recipe's, sample (benchmark) or lrt (paper)].")
@click.option("--log-variance-init", default=None, type=float,
              help="Initial log-variance of every posterior weight (Bayesian methods) [default: --recipe's, -14 "
                   "(benchmark) or -10 (paper)].")
@click.option("--posterior-std-ratio", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Instead of --log-variance-init: start each layer's posterior std at this fraction of its "
                   "weights' RMS (e.g. 0.1), the same signal-to-noise ratio at any weight scale.")
@click.option("--lr-monitor", type=click.Choice(LR_MONITORS), default="loss", show_default=True,
              help="What the learning-rate schedule watches without validation cases: the training loss (KL and "
                   "penalty included), or its data term alone (a Bayesian run whose KL keeps falling while its fit "
                   "has stopped improving).")
@click.option("--prior-layers", type=click.Choice(PRIOR_LAYERS), default="groups", show_default=True,
              help="Layers under the prior (Bayesian methods): the architecture's layer groups (the U-Net's 3x3x3 "
                   "kernels), or all: those and every other convolution and linear layer (1x1x1, output), which "
                   "'groups' leaves plain and unregularised. Not for a prior fitted per group (dwp).")
@click.option("--init-scale", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Factor on the He initialisation (ri). Small values let source kernels forget their random start.")
@click.option("--weight-decay", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Decoupled weight decay (AdamW) for ri, pr, prf; 0 uses Adam.")
@click.option("--patch", type=SHAPE, default=None,
              help="Train on random patches D,H,W (multiples of 8) instead of whole volumes.")
@click.option("--foreground-fraction", default=1 / 3, show_default="1/3", type=click.FloatRange(0, 1),
              help="Share of patches centred on a foreground voxel (nnU-Net's oversampling).")
@click.option("--steps-per-epoch", default=None, type=click.IntRange(min=1),
              help="Optimiser steps per epoch (default: one pass over the cases).")
@click.option("--augment", is_flag=True, help="Random mirroring of every axis and intensity scaling in [0.9, 1.1].")
@click.option("--patience", default=10, show_default=True, type=click.IntRange(min=0),
              help="Epochs without improvement before the learning rate is divided by 10.")
@click.option("--kl-warmup", default=0, show_default=True, type=click.IntRange(min=0),
              help="Epochs over which the KL weight rises linearly to --kl-weight (0: none).")
@click.option("--amp", is_flag=True, help="Mixed precision forward (autocast); the loss and KL stay float32.")
@click.option("--amp-dtype", type=click.Choice(["bf16", "fp16"]), default="bf16", show_default=True,
              help="Precision of --amp (fp16 adds a gradient scaler).")
@click.option("--channels-last", is_flag=True, help="Channels-last-3d memory order (can be faster on GPUs).")
@click.option("--skip-nonfinite-loss", is_flag=True,
              help="Skip the step of a batch whose loss is NaN or infinite (counted in log.jsonl) instead of stopping.")
@click.option("--penalty-weight", default=None, type=click.FloatRange(min=0),
              help="Weight of a penalty method's term (l2sp: alpha of alpha/2 ||w - w_source||^2; default: the "
                   "method's own).")
@click.option("--swag-epochs", default=0, show_default=True, type=click.IntRange(min=0),
              help="After training, this many epochs at a constant learning rate, collecting SWAG moments of the "
                   "weights into RUN_DIR/swag.pt (the swag prior's file); model.pt stays the trained network.")
@click.option("--swag-rank", default=5, show_default=True, type=click.IntRange(min=2),
              help="Deviations kept for SWAG's low-rank part (at most --swag-epochs).")
@click.option("--swag-lr", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Constant learning rate of the SWAG epochs (default: --lr).")
@click.option("--layout", default=None, help="Dataset layout (detected when omitted).")
@click.option("--channel", default=None, help="Channel or modality to read (name or index).")
@click.option("--cases", "case_list", default=None,
              help="Train on these cases only: comma-separated case ids (with --split-file, some of its 'train').")
@click.option("--split-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON with case-id lists 'train', 'val', 'test': train on 'train', monitor on 'val'.")
@click.option("--spacing", type=Spacing(), default=None,
              help="Resample to this voxel spacing in mm: 4 (isotropic) or 4,4,2.5 (per axis).")
@click.option("--resample-shape", type=SHAPE, default=None, help="Resample every case to D,H,W voxels.")
@click.option("--shape", type=SHAPE, default=None,
              help="Crop/pad every case to D,H,W after cropping to the brain (and resampling).")
@click.option("--intensity", type=click.Choice(INTENSITY_MODES), default="minmax", show_default=True,
              help="Intensity normalisation: minmax to [0,1]; zscore over each case's non-zero voxels; ct: clip "
                   "to the training cases' foreground 0.5-99.5 percentiles, z-score with their mean and std "
                   "(stored in model.pt); none.")
@click.option("--no-crop", is_flag=True, help="Do not crop to the non-zero bounding box.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Preprocessing cache (default: $BAYESPRIOR_CACHE_DIR or ~/.cache/bayesprior).")
@click.option("--no-cache", is_flag=True, help="Preprocess without reading or writing the cache.")
@click.option("--allow-outside-paths", is_flag=True,
              help="Read files that the dataset names outside DATA_DIR (absolute or ../ paths in an MSD dataset.json).")
@click.option("--device", type=Device(), default="cpu", show_default=True)
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write TensorBoard event files here (loss, data term, KL, validation loss and DSC, lr per "
                   "epoch; needs `pip install tensorboard`). Each seed of several gets DIR/seed<S>.")
@click.option("--no-progress", is_flag=True, help="No progress bar: one plain line per epoch (the default where "
                                                   "stderr is not a terminal).")
@click.option("--quiet", is_flag=True, help="No progress bar and no per-epoch lines.")
@trust_file_option
def train_command(data_dir, run_dir, method, architecture, arch_option, source, prior_path,
                  prior_option, init_from_prior, recipe_name, log_variance_init, posterior_std_ratio, lr_monitor,
                  prior_layers, max_epochs,
                  batch_size, lr, seeds, restarts, val_fraction,
                  ce_reduction, dice_batch, kl_weight, forward_mode, init_scale, weight_decay, patch,
                  foreground_fraction, steps_per_epoch, augment, patience, kl_warmup, amp, amp_dtype, channels_last,
                  skip_nonfinite_loss, penalty_weight, swag_epochs, swag_rank, swag_lr, layout, channel, case_list,
                  split_file, spacing, resample_shape, shape, intensity, no_crop,
                  cache_dir, no_cache, allow_outside_paths, device, tensorboard_dir, no_progress, quiet):
    """Train a segmentation model on DATA_DIR; write checkpoints, logs, curves and model.pt to RUN_DIR.

    Runs under torchrun for data-parallel training. With several seeds each gets RUN_DIR/seed<S>.

    Example: bayesprior train data/Dataset001_MS runs/ms --method ri --seeds 0,1,2 --restarts 2

    A BRATS folder at 4 mm on the cases of a split file:
    bayesprior train data/BRATS2018 runs/t2 --channel t2 --spacing 4 --split-file split.json

    Source networks whose kernels carry structure (benchmarks/RESULTS.md, "Source recipe"), and their SWAG
    moments for the swag prior (RUN_DIR/swag.pt):
    bayesprior train data/SynMS2mm runs/src --init-scale 0.03 --patch 48,48,48 --augment --steps-per-epoch 50 \
        --swag-epochs 10

    DWP with the settings the benchmark chose (--recipe benchmark, the default): posterior means from the source
    network, KL weight 0.001, sample forward, log-variance -14:
    bayesprior train data/BRATS2018 runs/dwp --method dwp --source runs/src/model.pt --prior-file prior.pt
    --channel t2 --split-file split.json --epochs 30 --steps-per-epoch 10

    Transfer with priors that keep the source network's weights:
    bayesprior train data/SynBraTS runs/l2sp --method l2sp --source runs/src/model.pt --penalty-weight 1
    bayesprior train data/SynBraTS runs/swag --method swag --source runs/src/model.pt --prior-file runs/src/swag.pt
    """
    chosen, options = training_method(method), click.get_current_context()
    _refuse_options_without_effect(options, chosen, source, patch, amp, no_cache)
    _refuse_missing_inputs(chosen, source, prior_path, dict(prior_option), spacing, resample_shape)
    bayesian = _recipe_settings(chosen, recipe_name, source, init_from_prior, quiet, kl_weight=kl_weight,
                                forward_mode=forward_mode, log_variance_init=log_variance_init,
                                posterior_std_ratio=posterior_std_ratio)
    split = _case_split(case_list, split_file, val_fraction)
    # every setting is checked here, before the dataset is read and preprocessed
    preprocess_config, base_config = _settings(options.params, bayesian)
    build_model(base_config)  # the network, source model and prior file are checked before the data are read
    if tensorboard_dir is not None:
        summary_writer_class()  # installed? said before the data are read
    if no_progress:
        options.with_resource(plain_lines())
    ctx = init_from_environment()
    cases = _labelled_cases(data_dir, preprocess_config, split, split_file, layout, channel,
                            False if no_cache else cache_dir, allow_outside_paths)
    train_cases, val_cases = _train_and_validation(cases, split, val_fraction, seeds[0])
    preprocess = recorded_config(cases)  # with the dataset statistics the intensity scheme needs (ct)
    if ctx.is_main:  # a source model or prior trained on other inputs: said before the run starts
        target = preprocessing_summary({"preprocess": preprocess, "input_grid": input_grid(cases), "channel": channel})
        for line in [*source_mismatch_warnings(base_config), *preprocessing_warnings(transfer_origins(base_config), target)]:
            click.echo(f"warning: {line}", err=True)
    for seed in seeds:
        path = _train_seed(dataclasses.replace(base_config, seed=seed), train_cases, val_cases, run_dir, len(seeds) > 1,
                           preprocess, channel, tensorboard_dir if ctx.is_main else None)
        if ctx.is_main:
            click.echo(f"seed {seed}: {path}")


def _refuse_missing_inputs(method: TrainingMethod, source: str | None, prior_path: str | None,
                           prior_options: dict[str, Any], spacing: Any, resample_shape: Any) -> None:
    """A `click.UsageError` for a method without the source model or prior file it needs, and for two ways to
    resample."""
    if method.needs_source and source is None:
        raise click.UsageError(f"method {method.name!r} needs a source model: --source MODEL_FILE")
    if method.learned_prior and not (prior_path or prior_options.get("path")):
        raise click.UsageError(f"method {method.name!r} learns its prior from source kernels: give the fitted prior "
                               "with --prior-file PRIOR_FILE (e.g. from `bayesprior fit-prior`)")
    source_file = prior_source_file(method.name) if method.bayesian else None
    if source_file and not (prior_path or prior_options.get("path")):
        raise click.UsageError(f"method {method.name!r} reads its prior from the source run's {source_file}: give it "
                               f"with --prior-file (e.g. runs/src/{source_file})")
    if prior_file_given_twice(prior_path, prior_options):
        raise click.UsageError(f"the prior file is given twice: --prior-file {prior_path} and --prior-option "
                               f"path={prior_options['path']}; give it once")
    if spacing is not None and resample_shape is not None:
        raise click.UsageError("give --spacing or --resample-shape, not both")


def _settings(options: Mapping[str, Any], bayesian: Mapping[str, Any]) -> tuple[PreprocessConfig, TrainConfig]:
    """The preprocessing and the training settings (of the first seed) the command's `options` give, with the
    Bayesian `bayesian` ones (`_recipe_settings`); a `click.UsageError` names a bad one."""
    o = options
    try:
        preprocess_config = PreprocessConfig(crop_nonzero=not o["no_crop"], shape=o["shape"],
                                             intensity=o["intensity"], spacing=o["spacing"],
                                             resample_shape=o["resample_shape"])
        base_config = TrainConfig(
            architecture=o["architecture"],
            architecture_config={"in_channels": 1, "n_classes": 2, **dict(o["arch_option"])},
            method=o["method"], source=o["source"], prior_path=o["prior_path"],
            prior_options=dict(o["prior_option"]), init_from_prior=o["init_from_prior"],
            posterior_std_ratio=o["posterior_std_ratio"], prior_layers=o["prior_layers"], lr_monitor=o["lr_monitor"],
            max_epochs=o["max_epochs"], batch_size=o["batch_size"],
            lr=o["lr"], seed=o["seeds"][0], restarts=o["restarts"],
            zoo_dir=str(o["run_dir"] / "zoo") if (o["restarts"] > 0 or len(o["seeds"]) > 1) else None,
            ce_reduction=o["ce_reduction"], dice_batch=o["dice_batch"], device=o["device"], **bayesian,
            progress=not o["quiet"], init_scale=o["init_scale"], weight_decay=o["weight_decay"], patch=o["patch"],
            foreground_fraction=o["foreground_fraction"], steps_per_epoch=o["steps_per_epoch"],
            augment=o["augment"], patience=o["patience"], kl_warmup=o["kl_warmup"],
            amp=o["amp_dtype"] if o["amp"] else None, channels_last=o["channels_last"],
            skip_nonfinite_loss=o["skip_nonfinite_loss"], penalty_weight=o["penalty_weight"],
            swag_epochs=o["swag_epochs"], swag_rank=o["swag_rank"], swag_lr=o["swag_lr"])
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return preprocess_config, base_config


def _labelled_cases(data_dir: Path, config: PreprocessConfig, split: CaseSplit | None, split_file: Path | None,
                    layout: str | None, channel: str | None, cache_dir: Path | bool | None,
                    allow_outside_paths: bool) -> list[Any]:
    """The labelled cases of the dataset (those of `split`, whose ids are checked against it first), preprocessed
    by `config`."""
    read_options: dict[str, Any] = {"layout": layout, "channel": channel}
    if split is not None:
        known = dataset_case_ids(data_dir, allow_outside_paths=allow_outside_paths, **read_options)
        check_known_cases(split.all_ids(), known, split_file if split_file is not None else "--cases")
        read_options["cases"] = sorted({*split.train, *split.val})
    cases = prepare_dataset(data_dir, config, cache_dir=cache_dir, allow_outside_paths=allow_outside_paths,
                            **read_options)
    return [c for c in cases if c.label is not None]


def _train_and_validation(cases: list[Any], split: CaseSplit | None, val_fraction: float,
                          seed: int) -> tuple[list[Any], list[Any]]:
    """The training and validation cases: the split's lists if it has a validation list, else a random
    `val_fraction` of the cases (`validation_split`, by `seed`)."""
    if split is not None and split.val:
        train_ids, val_ids = set(split.train), set(split.val)
        return [c for c in cases if c.case_id in train_ids], [c for c in cases if c.case_id in val_ids]
    return validation_split(cases, val_fraction, seed)


def _train_seed(config: TrainConfig, train_cases: list[Any], val_cases: list[Any], run_dir: Path, many: bool,
                preprocess: Any, channel: str | None, tensorboard_dir: Path | None) -> Path:
    """Train the run of `config`'s seed (in RUN_DIR/seed<S> when there are `many`); its curves also go to
    TensorBoard when `tensorboard_dir` is given."""
    seed_everything(config.seed)
    curves = (TensorBoardLog(tensorboard_dir / f"seed{config.seed}" if many else tensorboard_dir)
              if tensorboard_dir is not None else None)
    try:
        with labelled(f"seed {config.seed}") if many else contextlib.nullcontext():
            return train(config, train_cases, val_cases or None, run_dir / f"seed{config.seed}" if many else run_dir,
                         preprocess=preprocess, epoch_callback=curves, channel=channel)
    finally:
        if curves is not None:
            curves.close()


def _case_split(case_list: str | None, split_file: Path | None, val_fraction: float) -> CaseSplit | None:
    """The cases `--cases` and `--split-file` choose (None: every case of the dataset).

    With both, `--cases` picks training cases among the split file's 'train' list. A split that lists the
    validation cases leaves `val_fraction` without effect (a `click.UsageError` if it is set).
    """
    split = _listed_cases(case_list, split_file)
    if split is not None and split.val and val_fraction > 0:
        raise click.UsageError(f"--val-fraction has no effect: {split_file} lists the validation cases ('val'); "
                               "leave --val-fraction out")
    return split


def _listed_cases(case_list: str | None, split_file: Path | None) -> CaseSplit | None:
    split = read_split_file(split_file) if split_file is not None else None
    if case_list is None:
        return split
    ids = parse_case_list(case_list)
    if split is None:
        return CaseSplit(train=tuple(ids))
    listed = set(split.train)
    outside = [i for i in ids if i not in listed]
    if outside:
        raise click.UsageError(f"--cases {','.join(outside[:5])}: not in the 'train' list of {split_file}")
    return CaseSplit(train=tuple(ids), val=split.val, test=split.test)


def _recipe_settings(method: TrainingMethod, name: str | None, source: str | None, init_from_prior: bool, quiet: bool,
                     **given: float | str | None) -> dict[str, float | str]:
    """The Bayesian settings of a run: those `given` on the command line, the rest from the recipe `name` (a
    deterministic method keeps `TrainConfig`'s, which it never reads). Says which recipe filled in what, and
    where the recipe would start the posterior means, unless `quiet`."""
    if not method.bayesian:
        return {}
    chosen = recipe(name or DEFAULT_RECIPE)
    filled = {key: value for key, value in chosen.settings().items() if given.get(key) is None}
    if given.get("posterior_std_ratio") is not None:  # it sets the initial variance itself
        filled.pop("log_variance_init", None)
    settings = {**{k: v for k, v in given.items() if k != "posterior_std_ratio" and v is not None}, **filled}
    if not quiet:
        if filled:
            options = ", ".join(f"--{key.replace('_', '-')} {value:g}" if isinstance(value, float)
                                else f"--{key.replace('_', '-')} {value}" for key, value in filled.items())
            other = " (--recipe paper for the original DWP's)" if chosen.name == DEFAULT_RECIPE else ""
            click.echo(f"{method.name}: --recipe {chosen.name} gives {options}{other}", err=True)
        if chosen.start == "source" and source is None and not init_from_prior:
            click.echo(f"warning: --recipe {chosen.name} starts the posterior means at the source network; without "
                       "--source they start from He initialisation", err=True)
        if chosen.start == "prior" and method.learned_prior and not init_from_prior:
            click.echo(f"warning: --recipe {chosen.name} starts the posterior means at samples of the prior; add "
                       "--init-from-prior", err=True)
    return settings


def _refuse_options_without_effect(ctx: click.Context, method: TrainingMethod, source: str | None,
                                   patch: tuple[int, ...] | None, amp: bool, no_cache: bool) -> None:
    """An option the chosen method or the other options make meaningless is an error, never ignored."""
    if not method.bayesian:
        refuse_without_effect(ctx, ("prior_path", "prior_option", "init_from_prior", "kl_weight",
                                    "forward_mode", "kl_warmup", "log_variance_init", "posterior_std_ratio",
                                    "prior_layers", "recipe_name"),
                              f"with --method {method.name} (a deterministic method has no prior)")
    if method.source == SOURCE_UNUSED:
        refuse_without_effect(ctx, ("source",), f"with --method {method.name}, which starts from random weights")
    if source is not None and method.source != SOURCE_UNUSED:
        refuse_without_effect(ctx, ("init_scale",), "when the weights start from --source")
    refuse_without_effect(ctx, ("log_variance_init",) if ctx.params.get("posterior_std_ratio") is not None else (),
                          "with --posterior-std-ratio, which sets the posterior's initial variance")
    if patch is None:
        refuse_without_effect(ctx, ("foreground_fraction",), "without --patch (whole volumes are trained on)")
    if not method.penalty:
        refuse_without_effect(ctx, ("penalty_weight",), f"with --method {method.name}, which adds no penalty")
    if ctx.params.get("swag_epochs", 0) == 0:
        refuse_without_effect(ctx, ("swag_rank", "swag_lr"), "without --swag-epochs")
    if not amp:
        refuse_without_effect(ctx, ("amp_dtype",), "without --amp")
    if no_cache:
        refuse_without_effect(ctx, ("cache_dir",), "with --no-cache")


def register(cli: click.Group) -> None:
    cli.add_command(train_command)
