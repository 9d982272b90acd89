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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import __version__
from ..atomic import atomic_torch_save, atomic_write_json, atomic_write_text
from ..checkpoints import model_payload, save_model
from ..errors import CheckpointError, ConfigError, DataError
from ..safe_load import load_plain
from ..wrap import BayesianModel
from .distributed import DistContext, barrier, current_context, global_mean_float, global_sum
from .losses import LossConfig, dice_from_statistics, dice_statistics, segmentation_loss
from .methods import build_model
from .metrics import confusion_counts, dice_score
from .inference import sliding_window
from .sampling import FOREGROUND_FRACTION, BatchSampler, SamplingConfig, as_arrays, stack

CHECKPOINT_FORMAT = "bayesprior.train-checkpoint/1"
# settings that may change between a run and its resumption without changing its result
_RESUMABLE_KEYS = ("max_epochs", "progress", "device", "zoo_dir")


@dataclass
class TrainConfig:
    """Everything that decides a training run (written to ``config.json`` and ``model.pt``).

    Attributes:
        architecture, architecture_config: the registered network and its builder arguments.
        method: ``ri``, ``pr``, ``prf`` or a registered prior name (see `bayesprior.training.methods`).
        source: model file to start from (``pr``/``prf``; optional for priors).
        prior_path, prior_options, init_from_prior, log_variance_init: Bayesian settings;
            forward_mode: ``lrt`` (local reparameterisation) or ``sample`` (one weight sample per
            forward: cheaper, noisier gradients) for Bayesian training.
        lr, patience, factor, threshold, min_lr: Adam and ReduceLROnPlateau settings; training stops
            when the learning rate falls below `min_lr` (after `restarts` restarts) or at `max_epochs`.
        batch_size: the global batch size (split over processes under DDP).
        seed: fixes initialisation, batch order and sampling.
        dice_weight, ce_weight, ce_reduction, dice_batch, dice_epsilon: the data term (`LossConfig`).
        kl_weight: beta of the ELBO ``N * mean NLL + beta * KL``.
        pad_multiple: volumes in a batch are zero-padded to a common shape divisible by this.
        restarts: cyclical restarts after the first minimum; zoo_dir: where each minimum is saved.
        init_scale: factor on the He initialisation of methods that start from it. The 3x3x3 convs of
            the U-Net sit behind instance norm, so their scale does not change the network's function,
            only how far Adam's steps move them relative to their size: a small start lets a source
            network forget its random initialisation (benchmarks/RESULTS.md, "Source recipe").
        weight_decay: decoupled weight decay (AdamW) for deterministic methods; 0 uses Adam.
        patch, foreground_fraction, steps_per_epoch, augment: what a step sees
            (`bayesprior.training.sampling`): random patches with a share centred on foreground, a
            fixed number of steps per epoch, mirroring and intensity scaling.
        kl_warmup: epochs over which the KL weight rises linearly from kl_weight / kl_warmup to
            kl_weight (0: the full weight from the start).
        amp: mixed precision for the network's forward, ``"bf16"`` or ``"fp16"`` (with a gradient
            scaler); the loss and the KL stay in float32. None: float32 throughout.
        channels_last: keep activations in channels-last-3d memory order (faster convolutions on
            some GPUs).
    """

    architecture: str = "unet3d"
    architecture_config: dict = field(default_factory=lambda: {"in_channels": 1, "n_classes": 2})
    method: str = "ri"
    source: str | None = None
    prior_path: str | None = None
    prior_options: dict = field(default_factory=dict)
    init_from_prior: bool = False
    log_variance_init: float = -10.0
    forward_mode: str = "lrt"
    lr: float = 1e-3
    patience: int = 10
    factor: float = 0.1
    threshold: float = 1e-4
    min_lr: float = 1e-6
    max_epochs: int = 500
    batch_size: int = 2
    seed: int = 0
    dice_weight: float = 0.99
    ce_weight: float = 0.01
    ce_reduction: str = "sum"
    dice_batch: bool = True
    dice_epsilon: float = 1e-5
    kl_weight: float = 1.0
    pad_multiple: int = 8
    restarts: int = 0
    zoo_dir: str | None = None
    device: str = "cpu"
    progress: bool = True
    init_scale: float = 1.0
    weight_decay: float = 0.0
    patch: tuple[int, ...] | None = None
    foreground_fraction: float = FOREGROUND_FRACTION
    steps_per_epoch: int | None = None
    augment: bool = False
    kl_warmup: int = 0
    amp: str | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.forward_mode not in ("lrt", "sample"):
            raise ConfigError(f"forward_mode must be 'lrt' or 'sample', got {self.forward_mode!r}")
        for name in ("lr", "factor", "min_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_epochs", "batch_size", "pad_multiple"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.restarts < 0 or self.patience < 0:
            raise ConfigError(f"restarts and patience must be >= 0, got {self.restarts}, {self.patience}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if not (self.init_scale > 0 and math.isfinite(self.init_scale)):
            raise ConfigError(f"init_scale must be a finite number > 0, got {self.init_scale!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.weight_decay > 0 and self.method not in ("ri", "pr", "prf"):
            raise ConfigError(f"weight_decay applies to deterministic methods (ri, pr, prf); method "
                              f"{self.method!r} is Bayesian and is regularised by its prior's KL")
        if self.patch is not None:
            self.patch = tuple(int(p) for p in self.patch)
        if int(self.kl_warmup) < 0:
            raise ConfigError(f"kl_warmup must be >= 0 epochs, got {self.kl_warmup!r}")
        if self.amp not in (None, "bf16", "fp16"):
            raise ConfigError(f"amp must be 'bf16', 'fp16' or None, got {self.amp!r}")
        self.loss_config()  # validates the loss settings
        self.sampling_config()  # validates the sampling settings

    def loss_config(self) -> LossConfig:
        return LossConfig(self.dice_weight, self.ce_weight, self.ce_reduction, self.dice_batch,
                          self.dice_epsilon)

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(self.batch_size, self.pad_multiple, self.patch, self.foreground_fraction,
                              self.steps_per_epoch, self.augment)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch"] = list(self.patch) if self.patch is not None else None
        return out


class MixedPrecision:
    """Autocast for the forward and, for float16, a gradient scaler (bfloat16 needs none)."""

    def __init__(self, amp: str | None, device: torch.device):
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype is not None else nullcontext()

    def backward_and_step(self, loss: Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(dict(state))


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
            # a network trained on patches is validated window by window, as it will predict
            logits = net(image) if config.patch is None else sliding_window(image, config.patch, net)
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
    return sorted(k for k in keys if _plain(saved.get(k, defaults.get(k))) != _plain(current.get(k, defaults.get(k))))


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _read_log(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["epoch"] <= up_to_epoch]


# -------------------------------------------------------------------------------------------- train
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
    config_dict = config.to_dict()
    monitor = "validation loss" if val_cases else "training loss"
    record = {"train_config": config_dict, "monitor": monitor,
              "preprocess": dict(preprocess) if preprocess is not None else None,
              "n_train": len(train_cases), "n_val": len(val_cases or []),
              "train_cases": [str(c.case_id) for c in train_cases],
              "val_cases": [str(c.case_id) for c in val_cases or []], "world_size": ctx.world_size,
              "bayesprior_version": __version__, "torch_version": str(torch.__version__),
              "loss": {"ce_reduction": config.ce_reduction, "kl_weight": config.kl_weight,
                       "dice_weight": config.dice_weight, "ce_weight": config.ce_weight,
                       "dice_batch": config.dice_batch, "dice_epsilon": config.dice_epsilon}}

    seed_everything(config.seed)
    model = build_model(config.architecture, config.architecture_config, config.method, config.source,
                        config.prior_path, config.prior_options, config.init_from_prior,
                        config.log_variance_init, config.forward_mode, config.init_scale).to(device)
    bayesian = isinstance(model, BayesianModel)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    precision = MixedPrecision(config.amp, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = (torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
                 if config.weight_decay > 0 else torch.optim.Adam(trainable, lr=config.lr))
    scheduler = _new_scheduler(optimizer, config)
    start_epoch, minimum, history, already_finished = 0, 0, [], False

    checkpoint_path = run_dir / "checkpoint.pt"
    log_path = run_dir / "log.jsonl"
    if resume and checkpoint_path.is_file():
        state = load_plain(checkpoint_path, "a training checkpoint")
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(checkpoint_path, f"not a training checkpoint (expected {CHECKPOINT_FORMAT!r})")
        differences = _config_differences(state["train_config"], config_dict)
        if differences:
            raise ConfigError(f"{checkpoint_path} was written with different settings ({', '.join(differences)}); "
                              "use another run directory or the same settings")
        try:
            model.load_state_dict(state["model"]["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(checkpoint_path, f"model state does not fit: {exc}") from None
        optimizer.load_state_dict(state["optimizer"])
        precision.load_state_dict(state.get("grad_scaler") or {})
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, minimum = state["epoch"], state["minimum"]
        already_finished = state.get("finished", False)
        _set_rng_state(state["rng"])
        history = _read_log(log_path, start_epoch)
        if ctx.is_main:  # drop lines of an epoch that was logged but not checkpointed before the kill
            atomic_write_text("".join(json.dumps(r) + "\n" for r in history), log_path)
    elif ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
    if ctx.is_main:
        atomic_write_json(record, run_dir / "config.json")

    net = model
    if ctx.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    n_train = len(train_cases)
    stopped_because = "max_epochs"
    epochs = range(start_epoch, start_epoch if already_finished else config.max_epochs)
    progress = _progress(epochs, config.progress and ctx.is_main,
                         initial=start_epoch, total=config.max_epochs)
    finished = already_finished
    if finished:
        stopped_because = "lr_below_min_lr"
    sampler = BatchSampler(train_cases, config.sampling_config(), config.seed, device, ctx)
    for epoch in progress:
        net.train()
        totals = {"loss": 0.0, "data": 0.0, "kl": 0.0}
        steps = 0
        kl_weight = config.kl_weight * (min(1.0, (epoch + 1) / config.kl_warmup) if config.kl_warmup else 1.0)
        for images, labels in sampler.epoch(epoch):
            steps += 1
            if config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last_3d)
            with precision.autocast():
                logits = net(images)
            # the loss and the KL are computed in float32 whatever the forward's precision
            data_loss, n_global = batch_data_loss(logits.float(), labels, config.loss_config())
            if bayesian:
                elbo = model.elbo_loss(data_loss / n_global, n_train, kl_weight)
                loss, data_term, kl = elbo.loss, elbo.data, elbo.kl
            else:
                loss, data_term, kl = data_loss, data_loss, torch.zeros(())
            optimizer.zero_grad(set_to_none=True)
            precision.backward_and_step(loss, optimizer)
            totals["loss"] += float(loss.detach())
            totals["data"] += float(data_term.detach())
            totals["kl"] += float(kl.detach())
        entry: dict[str, Any] = {"epoch": epoch + 1, "minimum": minimum,
                                 "lr": optimizer.param_groups[0]["lr"]}
        entry.update({k: global_mean_float(v / max(steps, 1)) for k, v in totals.items()})
        if val_cases:
            entry.update(evaluate_cases(net, val_cases, config, device))
        monitored = entry["val_loss"] if val_cases else entry["loss"]
        scheduler.step(monitored)
        new_lr = optimizer.param_groups[0]["lr"]
        converged = new_lr < config.min_lr
        if converged:
            _save_minimum(model, config, minimum, epoch + 1, record, ctx)
            if minimum < config.restarts:
                minimum += 1
                for group in optimizer.param_groups:
                    group["lr"] = config.lr
                scheduler = _new_scheduler(optimizer, config)
                entry["restart"] = minimum
            else:
                stopped_because, finished = "lr_below_min_lr", True
        history.append(entry)
        if ctx.is_main:
            with open(log_path, "a") as log:
                log.write(json.dumps(entry) + "\n")
            atomic_torch_save({
                "format": CHECKPOINT_FORMAT,
                "model": model_payload(model, {"train_config": config_dict}),
                "optimizer": optimizer.state_dict(),
                "grad_scaler": precision.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "epoch": epoch + 1,
                "minimum": minimum,
                "finished": finished,
                "train_config": config_dict,
            }, checkpoint_path)
        if hasattr(progress, "set_postfix"):
            progress.set_postfix(loss=f"{entry['loss']:.4g}", lr=f"{entry['lr']:.1e}")
        if epoch_callback is not None:
            epoch_callback(epoch + 1, entry)
        if finished:
            break
    if hasattr(progress, "close"):
        progress.close()

    final_path = run_dir / "model.pt"
    if ctx.is_main:
        if config.zoo_dir and not finished:
            _save_minimum(model, config, minimum, len(history), record, ctx, converged=False)
        extra = dict(record, epochs=len(history), stopped_because=stopped_because)
        save_model(model, final_path, extra=extra)
        from .plots import plot_curves

        plot_curves(history, run_dir / "curves.png")
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
