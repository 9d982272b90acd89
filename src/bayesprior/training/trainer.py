"""The trainer: Adam + ReduceLROnPlateau, atomic per-epoch checkpoints, exact resume, logs and curves.

Use `train(TrainConfig(...), train_cases, val_cases, run_dir)`; cases are any objects with
``.case_id``, ``.image`` (float32 array (D, H, W)) and ``.label`` (binary array (D, H, W)).

A run directory holds:
- ``config.json``: the training configuration, the monitored quantity, seed and versions;
- ``checkpoint.pt``: the state after the last finished epoch (model payload under ``"model"``,
  optimiser, scheduler, RNG states, epoch), written atomically; a run started again in the same
  directory resumes from it and ends with the same weights as an uninterrupted run;
- ``log.jsonl``: one line per epoch (loss, data term, KL, learning rate, validation metrics);
- ``curves.png``: loss, KL and validation DSC; ``model.pt``: the final model (`save_model` format,
  ``extra`` holds the training and preprocessing configurations).

With ``restarts > 0`` the learning rate is raised back to `lr` with a fresh scheduler each time it
falls below `min_lr` (cyclical restarts, paper section 2.7.1); every minimum reached is written to
``zoo_dir/seed{seed}_min{k}.pt`` when `zoo_dir` is set.
"""
from __future__ import annotations

import json
import math
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from ..checkpoints import model_payload, save_model
from ..errors import CheckpointError, ConfigError, DataError
from ..evaluation.metrics import confusion_counts, dice_score
from ..inference.sliding_window_prediction import sliding_window
from ..safe_load import load_plain
from ..version import __version__
from ..wrap import BayesianModel
from .config import TrainConfig
from .distributed import DistContext, barrier, current_context, global_mean_float, global_sum
from .losses import LossConfig, dice_from_statistics, dice_statistics, segmentation_loss
from .methods import build_model
from .precision import MixedPrecision
from .sampling import BatchSampler, as_arrays, stack
from .plots import plot_curves

CHECKPOINT_FORMAT = "bayesprior.train-checkpoint/1"
# settings that may change between a run and its resumption without changing its result
_RESUMABLE_KEYS = ("max_epochs", "progress", "device", "zoo_dir")


class TrainingStopped(Exception):
    """Raised by an epoch callback to stop a run early (the checkpoint stays; the run can resume)."""


# ------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    # plain types only (see bayesprior.safe_load): numpy's state array goes in as a tensor
    name, keys, position, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                       float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    # a setting an older checkpoint does not record had its default value then
    defaults = TrainConfig().to_dict()
    keys = (set(saved) | set(current)) - set(_RESUMABLE_KEYS)
    return sorted(k for k in keys if saved.get(k, defaults.get(k)) != current.get(k, defaults.get(k)))


def _read_log(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= up_to_epoch]


# -------------------------------------------------------------------------------------------- train
@dataclass
class _Run:
    """The state of a run that changes from epoch to epoch (what a checkpoint holds, and the log so far)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    precision: MixedPrecision
    sampler: BatchSampler
    epoch: int = 0
    minimum: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False


def train(config: TrainConfig, train_cases: Sequence[Any], val_cases: Sequence[Any] | None = None,
          run_dir: str | Path = "run", preprocess: Mapping[str, Any] | None = None,
          epoch_callback: Callable[[int, dict[str, Any]], None] | None = None,
          resume: bool = True) -> Path:
    """Train a segmentation model; return the path of the final ``model.pt``.

    Args:
        config: the run's settings.
        train_cases, val_cases: objects with ``.case_id``, ``.image`` and ``.label`` (see module doc).
            With validation cases the scheduler monitors the validation loss, else the training loss.
        run_dir: where checkpoint, logs, curves and the model go; a checkpoint there is resumed.
        preprocess: the preprocessing configuration (a dict, `PreprocessConfig.to_dict()`) used to
            make the cases; stored in ``model.pt`` so prediction can redo it (None: not recorded, and
            prediction must then be told the preprocessing).
        epoch_callback: called as ``callback(epoch, record)`` after each epoch's checkpoint; may raise
            `TrainingStopped` (or anything) to stop the run.
        resume: continue from ``run_dir/checkpoint.pt`` if present (its configuration must match).
    Raises:
        ConfigError, DataError, CheckpointError: bad settings, cases or checkpoint.
    """
    _check_cases(train_cases, "training cases")
    if val_cases:
        _check_cases(val_cases, "validation cases")
    ctx = current_context()
    if config.batch_size % ctx.world_size:
        raise ConfigError(f"batch_size {config.batch_size} is not divisible by the {ctx.world_size} processes")
    run_dir = Path(run_dir)
    device = torch.device(config.device if config.device != "cuda" or not ctx.distributed
                          else f"cuda:{ctx.local_rank}")
    record = _run_record(config, train_cases, val_cases, preprocess, ctx)

    seed_everything(config.seed)
    model = build_model(config).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
                 if config.weight_decay > 0 else torch.optim.Adam(trainable, lr=config.lr))
    run = _Run(model, optimizer, _new_scheduler(optimizer, config), MixedPrecision(config.amp, device),
               BatchSampler(train_cases, config.sampling_config(), config.seed, device, ctx))
    if resume and (run_dir / "checkpoint.pt").is_file():
        _resume(run, run_dir, config, ctx)
    elif ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "log.jsonl").unlink(missing_ok=True)
    if ctx.is_main:
        atomic_write_json(record, run_dir / "config.json")

    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    epochs = range(run.epoch, run.epoch if run.finished else config.max_epochs)
    progress = _progress(epochs, config.progress and ctx.is_main, initial=run.epoch, total=config.max_epochs)
    for epoch in progress:
        entry = _train_epoch(run, net, train_cases, config, epoch, device, ctx)
        if val_cases:
            entry.update(evaluate_cases(net, val_cases, config, device))
        _end_of_epoch(run, entry, config, record, ctx)
        if ctx.is_main:
            _write_checkpoint(run, entry, run_dir, config)
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(loss=f"{entry['loss']:.4g}", lr=f"{entry['lr']:.1e}")
        if epoch_callback is not None:
            epoch_callback(epoch + 1, entry)
        if run.finished:
            break
    if hasattr(progress, "close"):
        progress.close()
    return _finish(run, run_dir, config, record, ctx)


def _run_record(config: TrainConfig, train_cases: Sequence[Any], val_cases: Sequence[Any] | None,
                preprocess: Mapping[str, Any] | None, ctx: DistContext) -> dict[str, Any]:
    """What ``config.json`` and every saved model record about the run."""
    return {"train_config": config.to_dict(), "monitor": "validation loss" if val_cases else "training loss",
            "preprocess": dict(preprocess) if preprocess is not None else None,
            "n_train": len(train_cases), "n_val": len(val_cases or []),
            "train_cases": [str(c.case_id) for c in train_cases],
            "val_cases": [str(c.case_id) for c in val_cases or []], "world_size": ctx.world_size,
            "bayesprior_version": __version__, "torch_version": str(torch.__version__),
            "loss": {"ce_reduction": config.ce_reduction, "kl_weight": config.kl_weight,
                     "dice_weight": config.dice_weight, "ce_weight": config.ce_weight,
                     "dice_batch": config.dice_batch, "dice_epsilon": config.dice_epsilon}}


def _resume(run: _Run, run_dir: Path, config: TrainConfig, ctx: DistContext) -> None:
    """Restore model, optimiser, scheduler, RNG and log from ``run_dir/checkpoint.pt`` (settings must match)."""
    checkpoint_path, log_path = run_dir / "checkpoint.pt", run_dir / "log.jsonl"
    state = load_plain(checkpoint_path, "a training checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(checkpoint_path, f"not a training checkpoint (expected {CHECKPOINT_FORMAT!r})")
    differences = _config_differences(state["train_config"], config.to_dict())
    if differences:
        raise ConfigError(f"{checkpoint_path} was written with different settings ({', '.join(differences)}); "
                          "use another run directory or the same settings")
    try:
        run.model.load_state_dict(state["model"]["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(checkpoint_path, f"model state does not fit: {exc}") from None
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.precision.load_state_dict(state.get("grad_scaler") or {})
    run.epoch, run.minimum = state["epoch"], state["minimum"]
    run.finished = state.get("finished", False)
    _set_rng_state(state["rng"])
    run.history = _read_log(log_path, run.epoch)
    if ctx.is_main:  # drop lines of an epoch that was logged but not checkpointed before the kill
        atomic_write_text("".join(json.dumps(r) + "\n" for r in run.history), log_path)


def _train_epoch(run: _Run, net: nn.Module, train_cases: Sequence[Any], config: TrainConfig, epoch: int,
                 device: torch.device, ctx: DistContext) -> dict[str, Any]:
    """One epoch of steps (`BatchSampler`); the epoch's log entry (means over steps, across processes)."""
    net.train()
    bayesian = isinstance(run.model, BayesianModel)
    n_train = len(train_cases)
    kl_weight = config.kl_weight * (min(1.0, (epoch + 1) / config.kl_warmup) if config.kl_warmup else 1.0)
    totals = {"loss": 0.0, "data": 0.0, "kl": 0.0}
    steps = 0
    for images, labels in run.sampler.epoch(epoch):
        steps += 1
        if config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        with run.precision.autocast():
            logits = net(images)
        # the loss and the KL are computed in float32 whatever the forward's precision
        data_loss, n_global = batch_data_loss(logits.float(), labels, config.loss_config())
        if bayesian:
            elbo = run.model.elbo_loss(data_loss / n_global, n_train, kl_weight)
            loss, data_term, kl = elbo.loss, elbo.data, elbo.kl
        else:
            loss, data_term, kl = data_loss, data_loss, torch.zeros(())
        run.optimizer.zero_grad(set_to_none=True)
        run.precision.backward_and_step(loss, run.optimizer)
        totals["loss"] += float(loss.detach())
        totals["data"] += float(data_term.detach())
        totals["kl"] += float(kl.detach())
    entry: dict[str, Any] = {"epoch": epoch + 1, "minimum": run.minimum, "lr": run.optimizer.param_groups[0]["lr"]}
    entry.update({k: global_mean_float(v / max(steps, 1)) for k, v in totals.items()})
    return entry


def _end_of_epoch(run: _Run, entry: dict[str, Any], config: TrainConfig, record: Mapping[str, Any],
                  ctx: DistContext) -> None:
    """Step the scheduler on the monitored loss; at a minimum, save it and restart or finish; log the epoch."""
    run.scheduler.step(entry["val_loss"] if "val_loss" in entry else entry["loss"])
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


def _write_checkpoint(run: _Run, entry: Mapping[str, Any], run_dir: Path, config: TrainConfig) -> None:
    """Append the epoch to ``log.jsonl`` and write ``checkpoint.pt`` atomically (main process only)."""
    with open(run_dir / "log.jsonl", "a") as log:
        log.write(json.dumps(entry) + "\n")
    config_dict = config.to_dict()
    atomic_torch_save({
        "format": CHECKPOINT_FORMAT,
        "model": model_payload(run.model, {"train_config": config_dict}),
        "optimizer": run.optimizer.state_dict(),
        "grad_scaler": run.precision.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": _rng_state(),
        "epoch": run.epoch,
        "minimum": run.minimum,
        "finished": run.finished,
        "train_config": config_dict,
    }, run_dir / "checkpoint.pt")


def _finish(run: _Run, run_dir: Path, config: TrainConfig, record: Mapping[str, Any], ctx: DistContext) -> Path:
    """Write ``model.pt`` (and the last minimum to the zoo if the run did not converge) and the curves."""
    final_path = run_dir / "model.pt"
    if ctx.is_main:
        if config.zoo_dir and not run.finished:
            _save_minimum(run.model, config, run.minimum, len(run.history), record, ctx, converged=False)
        stopped_because = "lr_below_min_lr" if run.finished else "max_epochs"
        save_model(run.model, final_path, extra=dict(record, epochs=len(run.history), stopped_because=stopped_because))
        plot_curves(run.history, run_dir / "curves.png")
    barrier()  # no process returns (or tears the group down) before the model file exists
    return final_path


def _save_minimum(model: nn.Module, config: TrainConfig, minimum: int, epoch: int,
                  record: Mapping[str, Any], ctx: DistContext, converged: bool = True) -> None:
    if not config.zoo_dir or not ctx.is_main:
        return
    path = Path(config.zoo_dir) / f"seed{config.seed}_min{minimum}.pt"
    save_model(model, path, extra=dict(record, epoch=epoch, minimum=minimum, converged=converged))


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc="epochs", unit="epoch", **kwargs)
