"""The trainer: Adam + ReduceLROnPlateau, atomic per-epoch checkpoints, exact resume, logs and curves.

Use `train(TrainConfig(...), train_cases, val_cases, run_dir)`; cases are any objects with
``.case_id``, ``.image`` (float32 array (D, H, W)) and ``.label`` (binary array (D, H, W)).

A run directory holds:
- ``config.json``: the training configuration, the monitored quantity, seed and versions, and every command
  that trained the folder (``commands``: the first and each resumption);
- ``checkpoint.pt``: the state after the last finished epoch (model payload under ``"model"``,
  optimiser, scheduler, RNG states, epoch, the data and input files it was made from; see
  `bayesprior.training.run_folder`), written atomically; a run started again in the same directory
  resumes from it, if its settings, data and input files match, and ends with the same weights as an
  uninterrupted run;
- ``log.jsonl``: one line per epoch (loss, data term, KL, learning rate, validation metrics, seconds),
  each a mean over the epoch's steps. ``data`` is the data term as the loss has it: N times the mean per
  case for a Bayesian run (the ELBO's), the batch's for a deterministic one; ``data_per_case`` is the mean
  per case for both, the one to compare across methods;
- ``.bayesprior.lock`` while it runs: a second process on the same folder is refused
  (`bayesprior.locks`).

A loss that is NaN or infinite stops the run with `NonFiniteError` (the last checkpoint stays), or, with
``skip_nonfinite_loss``, skips that batch's step and counts it in the log (``skipped``). A network that
starts from NaN weights (a diverged source model or prior) is refused before the first step.
- ``curves.png``: loss, KL and validation DSC; ``model.pt``: the final model (`save_model` format,
  ``extra`` holds the training and preprocessing configurations, and the spacing and shape of the
  preprocessed cases, ``input_grid``: `bayesprior.data.provenance`).

With ``restarts > 0`` the learning rate is raised back to `lr` with a fresh scheduler each time it
falls below `min_lr` (cyclical restarts, paper section 2.7.1); every minimum reached is written to
``zoo_dir/seed{seed}_min{k}.pt`` when `zoo_dir` is set.
"""
from __future__ import annotations

import math
import random
import time
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_torch_save, atomic_write_json, atomic_write_text, remove_stale_temp_files
from ..checkpoints import model_payload, non_finite_tensors, save_model
from ..data.preprocess import refuse_resampling_below
from ..data.provenance import input_grid
from ..errors import CheckpointError, ConfigError, DataError, NonFiniteError
from ..evaluation.metrics import confusion_counts, dice_score
from ..inference.sliding_window_prediction import sliding_window
from ..locks import folder_lock
from ..plugins import architecture_min_input_size
from ..progress import Progress
from ..safe_load import load_plain
from ..version import __version__, command_line
from ..wrap import BayesianModel
from .config import TrainConfig
from .distributed import DistContext, barrier, current_context, global_mean_float, global_sum
from .losses import LossConfig, dice_from_statistics, dice_statistics, segmentation_loss
from .methods import WeightPenalty, build_model, build_penalty, with_penalty_weight
from .plots import plot_curves
from .precision import MixedPrecision
from .run_folder import (
    CHECKPOINT_FORMAT,
    check_resumable,
    command_history,
    data_record,
    input_files,
    log_text,
    portable_settings,
    read_checkpoint,
    read_log,
    rng_state,
    set_rng_state,
)
from .sampling import BatchSampler, as_arrays, stack
from .swag import SwagMoments, read_swag_file, write_swag_file

SWAG_CHECKPOINT_FORMAT = "bayesprior.swag-checkpoint/1"


#: what each epoch reports: on a bar's postfix on a terminal, else as one plain line per epoch
EPOCH_REPORT = ("loss", "data", "kl", "val_loss", "val_dsc", "lr")


class TrainingStopped(Exception):
    """Raised by an epoch callback to stop a run early (the checkpoint stays; the run can resume)."""


# ------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_cases(cases: Sequence[Any], what: str) -> None:
    if not cases:
        raise DataError(what, "no cases to train on" if what == "training cases" else "is empty")
    for case in cases:
        image = np.asarray(case.image)
        if image.ndim != 3:
            raise DataError(getattr(case, "image_path", case.case_id),
                            f"image of case {case.case_id!r} has shape {image.shape}, expected 3D (D, H, W)")
        if case.label is None:
            raise DataError(getattr(case, "label_path", case.case_id), f"case {case.case_id!r} has no label")
        if not np.isfinite(image).all():
            raise DataError(getattr(case, "image_path", case.case_id),
                            f"image of case {case.case_id!r} holds NaN or infinite values")
        if np.asarray(case.label).shape != image.shape:
            raise DataError(getattr(case, "label_path", case.case_id),
                            f"label shape {np.asarray(case.label).shape} differs from image shape {image.shape}")


def collate(cases: Sequence[Any], multiple: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Stack cases into (B, 1, D, H, W) images and (B, D, H, W) labels, zero-padded at the far end."""
    return stack([as_arrays(case) for case in cases], multiple, device)


def batch_data_loss(logits: Tensor, labels: Tensor, loss: LossConfig) -> tuple[Tensor, Tensor]:
    """The data term of the **global** batch (see `distributed`) and the global number of cases."""
    inter, psum, gsum = dice_statistics(logits, labels)
    n_global = global_sum(torch.tensor(float(logits.shape[0]), device=logits.device))
    if loss.dice_batch:
        dice = dice_from_statistics(global_sum(inter.sum()), global_sum(psum.sum()), global_sum(gsum.sum()),
                                    loss.dice_epsilon)
    else:
        dice = global_sum(dice_from_statistics(inter, psum, gsum, loss.dice_epsilon).sum()) / n_global
    ce = global_sum(F.cross_entropy(logits.float(), labels, reduction="sum"))
    if loss.ce_reduction == "mean":
        ce = ce / global_sum(torch.tensor(float(labels.numel()), device=logits.device))
    return loss.dice_weight * dice + loss.ce_weight * ce, n_global


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate_cases(model: nn.Module, cases: Sequence[Any], config: TrainConfig,
                   device: torch.device) -> dict[str, float]:
    """Validation loss (data term per case, averaged) and mean DSC (empty references excluded)."""
    net = _unwrap(model)
    was_training = net.training
    net.eval()
    loss_cfg = config.loss_config()
    losses, dices = [], []
    context = net.sampling("mean") if isinstance(net, BayesianModel) else nullcontext()
    with context:
        for case in cases:
            image, label = collate([case], config.pad_multiple, device)
            # a network trained on patches is validated window by window, as it will predict; without
            # overlap, since validation only steers the schedule (predict blends overlapping windows)
            logits = net(image) if config.patch is None else sliding_window(image, config.patch, net, overlap=0.0)
            losses.append(float(segmentation_loss(logits, label, loss_cfg)))
            d, h, w = np.asarray(case.image).shape
            pred = logits.argmax(1)[0, :d, :h, :w].cpu().numpy()
            dices.append(dice_score(confusion_counts(pred, np.asarray(case.label))))
    net.train(was_training)
    finite = [x for x in dices if not math.isnan(x)]
    return {"val_loss": float(np.mean(losses)), "val_dsc": float(np.mean(finite)) if finite else math.nan}


def _new_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.factor, patience=config.patience, threshold=config.threshold)


# -------------------------------------------------------------------------------------------- train
@dataclass
class _Run:
    """The state of a run that changes from epoch to epoch (what a checkpoint holds, and the log so far)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: MixedPrecision
    sampler: BatchSampler
    penalty: WeightPenalty | None = None
    epoch: int = 0
    minimum: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def train(config: TrainConfig, train_cases: Sequence[Any], val_cases: Sequence[Any] | None = None,
          run_dir: str | Path = "run", preprocess: Mapping[str, Any] | None = None,
          epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
          resume: bool = True, channel: str | int | None = None) -> Path:
    """Train a segmentation model; return the path of the final ``model.pt``.

    Args:
        config: the run's settings.
        train_cases, val_cases: objects with ``.case_id``, ``.image`` and ``.label`` (see module doc).
            With validation cases the scheduler monitors the validation loss, else the training loss
            (or its data term: `TrainConfig.lr_monitor`).
        run_dir: where checkpoint, logs, curves and the model go; a checkpoint there is resumed.
        preprocess: the preprocessing configuration (a dict, `PreprocessConfig.to_dict()`) used to
            make the cases; stored in ``model.pt`` so prediction can redo it (None: not recorded, and
            prediction must then be told the preprocessing).
        epoch_callback: called as ``callback(epoch, record)`` after each epoch's checkpoint; may raise
            `TrainingStopped` (or anything) to stop the run.
        channel: the sequence or channel the cases were read in (e.g. ``"t2"``), recorded so that prediction
            on a dataset folder reads the same one without being told.
        resume: continue from ``run_dir/checkpoint.pt`` if present (its settings, data and input files
            must match; see `bayesprior.training.run_folder`).
    Raises:
        ConfigError, DataError, CheckpointError: bad settings, cases or checkpoint, or a checkpoint of
            another run.
        NonFiniteError: NaN or infinite start weights, loss (unless ``skip_nonfinite_loss``) or weights.
        FolderInUseError: another process trains in `run_dir`.
    """
    _check_cases(train_cases, "training cases")
    if val_cases:
        _check_cases(val_cases, "validation cases")
    config = with_penalty_weight(config)  # recorded as trained: a later default does not resume this run
    refuse_resampling_below([*train_cases, *(val_cases or [])], architecture_min_input_size(config.architecture),
                            config.architecture)
    ctx = current_context()
    if config.batch_size % ctx.world_size:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
    run_dir = Path(run_dir)
    with ExitStack() as stack:
        if ctx.is_main:  # one process at a time in a run folder (the DDP ranks of one run are one run)
            stack.enter_context(folder_lock(run_dir, "run folder"))
            _remove_stale_temp_files(run_dir, config)
        try:
            return _train_in(run_dir, config, train_cases, val_cases, preprocess, epoch_callback, resume, ctx,
                             channel)
        except NonFiniteError as exc:  # say which run
            raise NonFiniteError(f"{run_dir}: {exc}") from None


def _train_in(run_dir: Path, config: TrainConfig, train_cases: Sequence[Any], val_cases: Sequence[Any] | None,
              preprocess: Mapping[str, Any] | None, epoch_callback: Callable[[int, dict[str, Any]], None] | None,
              resume: bool, ctx: DistContext, channel: str | int | None = None) -> Path:
    device = torch.device(config.device if config.device != "cuda" or not ctx.distributed
                          else f"cuda:{ctx.local_rank}")
    record = _run_record(config, run_dir, train_cases, val_cases, preprocess, ctx)
    record["channel"] = None if channel is None else str(channel)

    seed_everything(config.seed)
    model = build_model(config).to(device)
    _refuse_non_finite_start(model, config)
    penalty = build_penalty(config, model)  # before a resume: it is centred at the start (source) weights
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stubs lack it
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
                 if config.weight_decay > 0 else torch.optim.Adam(trainable, lr=config.lr))
    run = _Run(model, optimizer, _new_scheduler(optimizer, config), MixedPrecision(config.amp, device),
               BatchSampler(train_cases, config.sampling_config(), config.seed, device, ctx), penalty)
    resumed = None
    if resume and (run_dir / "checkpoint.pt").is_file():
        resumed = _resume(run, run_dir, config, record, ctx)
    elif ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "log.jsonl").unlink(missing_ok=True)
    record["commands"] = command_history(resumed, run.epoch, config.max_epochs)
    if ctx.is_main:
        atomic_write_json(record, run_dir / "config.json")

    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    epochs = range(run.epoch, run.epoch if run.finished else config.max_epochs)
    progress = Progress(epochs, "epochs", "epoch", enabled=config.progress and ctx.is_main, initial=run.epoch,
                        total=config.max_epochs, timed=True)
    for epoch in progress:
        start = time.perf_counter()
        entry = _train_epoch(run, net, train_cases, config, epoch, device, ctx)
        _refuse_non_finite_weights(run, epoch + 1)
        if val_cases:
            entry.update(evaluate_cases(net, val_cases, config, device))
        entry["seconds"] = round(time.perf_counter() - start, 3)  # summed into model.pt's train_seconds
        _end_of_epoch(run, entry, config, record, ctx)
        if ctx.is_main:
            _write_checkpoint(run, entry, run_dir, config, record)
        progress.report(**{k: entry[k] for k in EPOCH_REPORT if k in entry})
        if epoch_callback is not None:
            epoch_callback(epoch + 1, entry)
        if run.finished:
            break
    progress.close()
    final_path = _finish(run, run_dir, config, record, ctx)
    if config.swag_epochs:
        _collect_swag(run, net, run_dir, config, train_cases, device, ctx, record)
    return final_path


def _collect_swag(run: _Run, net: nn.Module, run_dir: Path, config: TrainConfig, train_cases: Sequence[Any],
                  device: torch.device, ctx: DistContext, record: Mapping[str, Any]) -> None:
    """After training: `config.swag_epochs` more epochs at a constant learning rate, one SWAG snapshot each,
    into ``swag.pt`` (`bayesprior.training.swag`). Resumes from ``swag_checkpoint.pt`` after a kill."""
    out, state_path = run_dir / "swag.pt", run_dir / "swag_checkpoint.pt"
    lr = config.lr if config.swag_lr is None else config.swag_lr
    if out.is_file():  # collected already: by these settings, or refused
        _check_swag_file(out, config, lr)
        return
    if isinstance(run.model, BayesianModel):
        raise ConfigError(f"swag_epochs collects the moments of a plain network; method {config.method!r} is "
                          "Bayesian and has a posterior of its own")
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    swag = _Run(run.model, torch.optim.Adam(trainable, lr=lr), None, run.precision, run.sampler, run.penalty)
    moments = SwagMoments(run.model, int(config.swag_rank))
    done = 0
    if state_path.is_file():
        state = load_plain(state_path, "a SWAG checkpoint")
        if not isinstance(state, dict) or state.get("format") != SWAG_CHECKPOINT_FORMAT:
            raise CheckpointError(state_path, f"not a SWAG checkpoint (expected {SWAG_CHECKPOINT_FORMAT!r}); remove "
                                              "it to collect the SWAG moments afresh")
        run.model.load_state_dict(state["model"])
        swag.optimizer.load_state_dict(state["optimizer"])
        moments.load_state_dict(state["moments"])
        set_rng_state(state["rng"])
        done = int(state["epoch"])
    progress = Progress(range(done, config.swag_epochs), "SWAG epochs", "epoch",
                        enabled=config.progress and ctx.is_main, initial=done, total=config.swag_epochs)
    for k in progress:
        entry = _train_epoch(swag, net, train_cases, config, run.epoch + k, device, ctx)
        _refuse_non_finite_weights(swag, run.epoch + k + 1)
        moments.add(run.model)
        if ctx.is_main:
            atomic_torch_save({"format": SWAG_CHECKPOINT_FORMAT, "model": run.model.state_dict(),
                               "optimizer": swag.optimizer.state_dict(), "moments": moments.state_dict(),
                               "rng": rng_state(), "epoch": k + 1}, state_path)
        progress.report(loss=entry["loss"], lr=lr)
    progress.close()
    if ctx.is_main:
        write_swag_file(moments, out, lr=lr, source_model=run_dir / "model.pt",
                        architecture=getattr(run.model, "architecture_spec", None), preprocess=record["preprocess"],
                        input_grid=record.get("input_grid"))
        state_path.unlink(missing_ok=True)
    barrier()


def _check_swag_file(path: Path, config: TrainConfig, lr: float) -> None:
    swag = read_swag_file(path)
    wanted = {"rank": int(config.swag_rank), "snapshots": int(config.swag_epochs), "lr": float(lr)}
    differ = [f"{k} {swag.get(k)} -> {v}" for k, v in wanted.items() if swag.get(k) != v]
    if differ:
        raise ConfigError(f"{path} holds SWAG moments collected with other settings ({'; '.join(differ)}); remove "
                          "it to collect them again")


def _remove_stale_temp_files(run_dir: Path, config: TrainConfig) -> None:
    """Temporary files a killed run of this folder left: its own, and its seed's in the model zoo."""
    remove_stale_temp_files(run_dir)
    if config.zoo_dir:
        remove_stale_temp_files(config.zoo_dir, targets=lambda name: name.startswith(f"seed{config.seed}_min"))


def _refuse_non_finite_start(model: nn.Module, config: TrainConfig) -> None:
    bad = non_finite_tensors(model.state_dict())
    if bad:
        origins = [f"{what} {path}" for what, path in (("source model", config.source),
                                                        ("prior file", config.prior_path)) if path]
        raise NonFiniteError(f"the network of method {config.method!r} would start from NaN or infinite values "
                             f"({', '.join(bad[:3])}){' taken from the ' + ' or '.join(origins) if origins else ''}; "
                             "refusing to train from them")


def _refuse_non_finite_weights(run: _Run, epoch: int) -> None:
    bad = non_finite_tensors(run.model.state_dict())
    if bad:
        raise NonFiniteError(f"after epoch {epoch} the weights hold NaN or infinite values "
                             f"({', '.join(bad[:3])}); the checkpoint of epoch {epoch - 1} is kept. Lower the "
                             "learning rate or check the data")


_TRAINING_MONITORS = {"loss": "training loss", "data": "training data term"}


def _run_record(config: TrainConfig, run_dir: Path, train_cases: Sequence[Any], val_cases: Sequence[Any] | None,
                preprocess: Mapping[str, Any] | None, ctx: DistContext) -> dict[str, Any]:
    """What ``config.json``, the checkpoint and every saved model record about the run."""
    data = data_record(train_cases, val_cases)
    return {"train_config": portable_settings(config, run_dir),
            "monitor": "validation loss" if val_cases else _TRAINING_MONITORS[config.lr_monitor],
            "preprocess": dict(preprocess) if preprocess is not None else None,
            "input_grid": input_grid([*train_cases, *(val_cases or [])]),
            "n_train": len(train_cases), "n_val": len(val_cases or []),
            "train_cases": data["train_cases"], "val_cases": data["val_cases"],
            "data": data, "inputs": input_files(config), "world_size": ctx.world_size,
            "bayesprior_version": __version__, "torch_version": str(torch.__version__), "command": command_line(),
            "loss": {"ce_reduction": config.ce_reduction, "kl_weight": config.kl_weight,
                     "dice_weight": config.dice_weight, "ce_weight": config.ce_weight,
                     "dice_batch": config.dice_batch, "dice_epsilon": config.dice_epsilon}}


def _resume(run: _Run, run_dir: Path, config: TrainConfig, record: Mapping[str, Any],
            ctx: DistContext) -> dict[str, Any]:
    """Restore model, optimiser, scheduler, RNG and log from ``run_dir/checkpoint.pt``; its settings, data
    and input files must be the run's (`run_folder.check_resumable`). Returns the checkpoint read."""
    checkpoint_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    state = read_checkpoint(checkpoint_path)
    check_resumable(state, checkpoint_path, config, record["data"], record["inputs"])
    try:
        run.model.load_state_dict(state["model"]["state_dict"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        run.precision.load_state_dict(state.get("grad_scaler") or {})
        run.epoch, run.minimum = int(state["epoch"]), int(state["minimum"])
        run.finished = bool(state.get("finished", False))
        set_rng_state(state["rng"])
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CheckpointError(checkpoint_path, f"state does not fit this run ({type(exc).__name__}: "
                                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no details'}); "
                                               "remove it to start the run afresh") from None
    run.history = read_log(log_path, run.epoch)
    if ctx.is_main:  # drop lines of an epoch that was logged but not checkpointed before the kill
        atomic_write_text(log_text(run.history), log_path)
    return state


def _train_epoch(run: _Run, net: nn.Module, train_cases: Sequence[Any], config: TrainConfig, epoch: int,
                 device: torch.device, ctx: DistContext) -> dict[str, Any]:
    """One epoch of steps (`BatchSampler`); the epoch's log entry (means over steps, across processes)."""
    net.train()
    n_train = len(train_cases)
    kl_weight = config.kl_weight * (min(1.0, (epoch + 1) / config.kl_warmup) if config.kl_warmup else 1.0)
    totals = {"loss": 0.0, "data": 0.0, "data_per_case": 0.0, "kl": 0.0}
    steps = skipped = 0
    for images, labels in run.sampler.epoch(epoch):
        steps += 1
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        with run.precision.autocast():
            logits = net(images)
        # the loss and the KL are computed in float32 whatever the forward's precision
        data_loss, n_global = batch_data_loss(logits.float(), labels, config.loss_config())
        if isinstance(run.model, BayesianModel):
            elbo = run.model.elbo_loss(data_loss / n_global, n_train, kl_weight)
            loss, data_term, kl = elbo.loss, elbo.data, elbo.kl
        elif run.penalty is not None:  # e.g. L2-SP: the pull towards the source weights
            penalty = run.penalty(run.model)
            loss, data_term, kl = data_loss + penalty, data_loss, torch.zeros(())
            totals["penalty"] = totals.get("penalty", 0.0) + float(penalty.detach())
        else:
            loss, data_term, kl = data_loss, data_loss, torch.zeros(())
        if not torch.isfinite(loss.detach()):  # its step would turn every weight into NaN
            if not config.skip_nonfinite_loss:
                raise NonFiniteError(
                    f"epoch {epoch + 1}, step {steps}: the loss is {float(loss.detach())} (data term "
                    f"{float(data_term.detach()):.4g}, KL {float(kl.detach()):.4g}); stopped, the checkpoint of epoch {epoch} is kept. Lower the learning "
                    "rate, check the data, or skip such batches (train --skip-nonfinite-loss)")
            skipped += 1
            continue
        run.optimizer.zero_grad(set_to_none=True)
        run.precision.backward_and_step(loss, run.optimizer)
        totals["loss"] += float(loss.detach())
        totals["data"] += float(data_term.detach())
        totals["data_per_case"] += float(data_loss.detach()) / float(n_global)
        totals["kl"] += float(kl.detach())
    if steps and skipped == steps:
        raise NonFiniteError(f"epoch {epoch + 1}: the loss of every batch ({steps}) is NaN or infinite; "
                             "nothing to learn from")
    entry: dict[str, Any] = {"epoch": epoch + 1, "minimum": run.minimum, "lr": run.optimizer.param_groups[0]["lr"]}
    entry.update({k: global_mean_float(v / max(steps - skipped, 1)) for k, v in totals.items()})
    if skipped:
        entry["skipped"] = skipped
    return entry


def _end_of_epoch(run: _Run, entry: dict[str, Any], config: TrainConfig, record: Mapping[str, Any],
                  ctx: DistContext) -> None:
    """Step the scheduler on the monitored loss; at a minimum, save it and restart or finish; log the epoch."""
    run.scheduler.step(entry["val_loss"] if "val_loss" in entry else entry[config.lr_monitor])
    if run.optimizer.param_groups[0]["lr"] < config.min_lr:
        _save_minimum(run.model, config, run.minimum, entry["epoch"], record, ctx)
        if run.minimum < config.restarts:
            run.minimum += 1
            for group in run.optimizer.param_groups:
                group["lr"] = config.lr
            run.scheduler = _new_scheduler(run.optimizer, config)
            entry["restart"] = run.minimum
        else:
            run.finished = True
    run.epoch = entry["epoch"]
    run.history.append(entry)


def _write_checkpoint(run: _Run, entry: Mapping[str, Any], run_dir: Path, config: TrainConfig,
                      record: Mapping[str, Any]) -> None:
    """Append the epoch to ``log.jsonl`` and write ``checkpoint.pt`` atomically (main process only)."""
    with open(run_dir / "log.jsonl", "a") as log:
        log.write(log_text([entry]))
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "model": model_payload(run.model, {"train_config": record["train_config"]}),
        "optimizer": run.optimizer.state_dict(),
        "grad_scaler": run.precision.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": rng_state(),
        "epoch": run.epoch,
        "minimum": run.minimum,
        "finished": run.finished,
        "train_config": record["train_config"],
        "data": record["data"],
        "inputs": record["inputs"],
        "versions": {"bayesprior": __version__, "torch": str(torch.__version__)},
        "command": record["command"],
        "commands": record["commands"],
    }, run_dir / "checkpoint.pt")


def _finish(run: _Run, run_dir: Path, config: TrainConfig, record: Mapping[str, Any], ctx: DistContext) -> Path:
    """Write ``model.pt`` (and the last minimum to the zoo if the run did not converge) and the curves."""
    final_path = run_dir / "model.pt"
    if ctx.is_main:
        if config.zoo_dir and not run.finished:
            _save_minimum(run.model, config, run.minimum, len(run.history), record, ctx, converged=False)
        stopped_because = "lr_below_min_lr" if run.finished else "max_epochs"
        save_model(run.model, final_path, extra=dict(record, epochs=len(run.history), stopped_because=stopped_because,
                                                     train_seconds=_train_seconds(run.history)))
        plot_curves(run.history, run_dir / "curves.png")
    barrier()  # no process returns (or tears the group down) before the model file exists
    return final_path


def _train_seconds(history: Sequence[Mapping[str, Any]]) -> float | None:
    """The run's training time over all its sessions (a resumed run counts every epoch once); None if an
    epoch was logged by a version that did not time it."""
    if not history or any("seconds" not in entry for entry in history):
        return None
    return round(sum(float(entry["seconds"]) for entry in history), 1)


def _save_minimum(model: nn.Module, config: TrainConfig, minimum: int, epoch: int,
                  record: Mapping[str, Any], ctx: DistContext, converged: bool = True) -> None:
    if not config.zoo_dir or not ctx.is_main:
        return
    path = Path(config.zoo_dir) / f"seed{config.seed}_min{minimum}.pt"
    save_model(model, path, extra=dict(record, epoch=epoch, minimum=minimum, converged=converged))
