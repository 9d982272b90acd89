"""`bayesprior train`: train a segmentation model on a NIfTI dataset (any method, any prior)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .errors_cmd import report_errors, trust_file_option

from ..errors import ConfigError


def parse_key_values(pairs: tuple[str, ...], option: str) -> dict:
    """``("scale=0.1", "name=x")`` -> ``{"scale": 0.1, "name": "x"}`` (values parsed as JSON when they can be)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint=option)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_ints(text: str | None, option: str, length: int | None = None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None
    if length is not None and len(values) != length:
        raise click.BadParameter(f"expected {length} integers, got {text!r}", param_hint=option)
    return values


@click.command("train")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--method", default="ri", show_default=True,
              help="ri, pr, prf, or a registered prior name (gaussian, loguniform, dwp, ...).")
@click.option("--architecture", default="unet3d", show_default=True, help="Registered architecture.")
@click.option("--arch-option", multiple=True, help="Architecture builder argument key=value (repeatable).")
@click.option("--source", type=click.Path(exists=True, dir_okay=False), help="Source model file (pr, prf, priors).")
@click.option("--prior", "prior_path", type=click.Path(exists=True), help="Prior file passed to the prior as `path`.")
@click.option("--prior-option", multiple=True, help="Prior factory argument key=value, JSON value (repeatable).")
@click.option("--init-from-prior", is_flag=True, help="Start posterior means at samples of the prior.")
@click.option("--epochs", "max_epochs", default=500, show_default=True, help="Maximum number of epochs.")
@click.option("--batch-size", default=2, show_default=True, help="Global batch size.")
@click.option("--lr", default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds; one run each.")
@click.option("--restarts", default=0, show_default=True,
              help="Cyclical restarts after convergence; each minimum is saved to RUN_DIR/zoo.")
@click.option("--val-fraction", default=0.0, show_default=True,
              help="Fraction of cases held out to monitor (0: monitor the training loss).")
@click.option("--ce-reduction", type=click.Choice(["sum", "mean"]), default="sum", show_default=True)
@click.option("--dice-batch/--dice-per-case", default=True, show_default=True)
@click.option("--kl-weight", default=1.0, show_default=True, help="beta of the ELBO.")
@click.option("--forward-mode", type=click.Choice(["lrt", "sample"]), default="lrt", show_default=True,
              help="Bayesian forward: local reparameterisation, or one weight sample per step (cheaper).")
@click.option("--init-scale", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Factor on the He initialisation (ri). 0.1 lets source kernels forget their random start.")
@click.option("--weight-decay", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Decoupled weight decay (AdamW) for ri, pr, prf; 0 uses Adam.")
@click.option("--patch", default=None, help="Train on random patches D,H,W (multiples of 8) instead of whole volumes.")
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
@click.option("--layout", default=None, help="Dataset layout (detected when omitted).")
@click.option("--channel", default=None, help="Channel or modality to read (name or index).")
@click.option("--shape", default=None, help="Crop/pad every case to D,H,W after cropping to the brain.")
@click.option("--intensity", default="minmax", show_default=True, help="Intensity normalisation.")
@click.option("--no-crop", is_flag=True, help="Do not crop to the non-zero bounding box.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Preprocessing cache (default: $BAYESPRIOR_CACHE_DIR or ~/.cache/bayesprior).")
@click.option("--no-cache", is_flag=True, help="Preprocess without reading or writing the cache.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@trust_file_option
@report_errors
def train_command(data_dir, run_dir, method, architecture, arch_option, source, prior_path, prior_option,
                  init_from_prior, max_epochs, batch_size, lr, seeds, restarts, val_fraction, ce_reduction,
                  dice_batch, kl_weight, forward_mode, init_scale, weight_decay, patch, foreground_fraction,
                  steps_per_epoch, augment, patience, kl_warmup, amp, amp_dtype, channels_last, layout, channel, shape, intensity, no_crop, cache_dir, no_cache,
                  device, no_progress):
    """Train a segmentation model on DATA_DIR; write checkpoints, logs, curves and model.pt to RUN_DIR.

    Runs under torchrun for data-parallel training. With several seeds each gets RUN_DIR/seed<S>.

    Example: bayesprior train data/Dataset001_MS runs/ms --method ri --seeds 0,1,2 --restarts 2

    Source networks whose kernels carry structure (benchmarks/RESULTS.md, "Source recipe"):
    bayesprior train data/SynMS runs/src --init-scale 0.1 --patch 32,32,32 --augment --steps-per-epoch 50
    """
    from ..data.preprocess import PreprocessConfig, prepare_dataset
    from ..training.distributed import init_from_environment
    from ..training.trainer import TrainConfig, seed_everything, train

    ctx = init_from_environment()
    seed_list = parse_ints(seeds, "--seeds")
    try:
        preprocess_config = PreprocessConfig(crop_nonzero=not no_crop, shape=parse_ints(shape, "--shape", 3),
                                             intensity=intensity)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    cases = prepare_dataset(data_dir, preprocess_config, cache_dir=False if no_cache else cache_dir,
                            layout=layout, channel=channel)
    cases = [c for c in cases if c.label is not None]
    if not 0 <= val_fraction < 1:
        raise click.BadParameter(f"must be in [0, 1), got {val_fraction}", param_hint="--val-fraction")
    n_val = int(round(val_fraction * len(cases)))
    import torch

    order = torch.randperm(len(cases), generator=torch.Generator().manual_seed(seed_list[0])).tolist()
    val_cases = [cases[i] for i in order[:n_val]]
    train_cases = [cases[i] for i in order[n_val:]]
    many = len(seed_list) > 1
    zoo_dir = str(run_dir / "zoo") if (restarts > 0 or many) else None
    for seed in seed_list:
        config = TrainConfig(
            architecture=architecture,
            architecture_config={"in_channels": 1, "n_classes": 2, **parse_key_values(arch_option, "--arch-option")},
            method=method, source=source, prior_path=prior_path,
            prior_options=parse_key_values(prior_option, "--prior-option"), init_from_prior=init_from_prior,
            max_epochs=max_epochs, batch_size=batch_size, lr=lr, seed=seed, restarts=restarts,
            zoo_dir=zoo_dir, ce_reduction=ce_reduction, dice_batch=dice_batch, kl_weight=kl_weight,
            forward_mode=forward_mode, device=device, progress=not no_progress, init_scale=init_scale,
            weight_decay=weight_decay, patch=parse_ints(patch, "--patch", 3), foreground_fraction=foreground_fraction,
            steps_per_epoch=steps_per_epoch, augment=augment, patience=patience, kl_warmup=kl_warmup,
            amp=amp_dtype if amp else None, channels_last=channels_last)
        seed_everything(seed)
        path = train(config, train_cases, val_cases or None, run_dir / f"seed{seed}" if many else run_dir,
                     preprocess=preprocess_config.to_dict())
        if ctx.is_main:
            click.echo(f"seed {seed}: {path}")


def register(cli: click.Group) -> None:
    cli.add_command(train_command)
