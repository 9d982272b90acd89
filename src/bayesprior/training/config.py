"""`TrainConfig`: everything that decides a training run, validated when it is made."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..validation import Check
from .losses import LossConfig
from .precision import AMP_DTYPES
from .sampling import FOREGROUND_FRACTION, SamplingConfig

SWAG_RANK = 5  # the default swag_rank, named where a swag_epochs too small for it is refused


#: the values of `TrainConfig.forward_mode`, `TrainConfig.lr_monitor` and `TrainConfig.prior_layers`
FORWARD_MODES = ("lrt", "sample")
LR_MONITORS = ("loss", "data")
PRIOR_LAYERS = ("groups", "all")


@dataclass
class TrainConfig:
    """Everything that decides a training run (written to ``config.json`` and ``model.pt``).

    Attributes:
        architecture, architecture_config: the registered network and its builder arguments.
        method: ``ri``, ``pr``, ``prf`` or a registered prior name (see `bayesprior.training.methods`).
        source: model file to start from (``pr``/``prf``; optional for priors).
        prior_path, prior_options, init_from_prior, log_variance_init: Bayesian settings;
            posterior_std_ratio: start each layer's posterior std at this fraction of its weights' RMS
            instead of at exp(log_variance_init / 2) (see `bayesprior.wrap.bayesianize`);
            forward_mode: ``lrt`` (local reparameterisation) or ``sample`` (one weight sample per
            forward: cheaper, noisier gradients) for Bayesian training;
            prior_layers: the layers a Bayesian method puts its prior on: ``groups``, the architecture's layer
            groups (the U-Net's k x k x k kernels; every convolution with a kernel larger than 1 where it declares
            none), or ``all``, those and every other convolution and linear layer (1 x 1 x 1 convolutions, the
            output layer), which ``groups`` leaves plain and unregularised. ``all`` needs a prior that is not
            fitted per layer group.
        lr, patience, factor, threshold, min_lr: Adam and ReduceLROnPlateau settings; training stops
            when the learning rate falls below `min_lr` (after `restarts` restarts) or at `max_epochs`.
        lr_monitor: what ReduceLROnPlateau watches when there are no validation cases (with them, their loss):
            ``loss``, the training loss (a Bayesian run's weighted KL and a method's penalty included), or
            ``data``, its data term alone. A Bayesian run's KL can fall for hundreds of epochs while the fit of
            the training cases has stopped improving, so that the rate never falls (benchmarks/RESULTS.md).
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
        skip_nonfinite_loss: skip the step of a batch whose loss is NaN or infinite (counted in the
            log) instead of stopping the run with `NonFiniteError`.
        penalty_weight: the weight of a plugin method's penalty (``l2sp``: alpha of alpha/2 ||w - w0||^2);
            None uses the method's default.
        swag_epochs, swag_rank, swag_lr: after training, run `swag_epochs` more epochs at the constant
            learning rate `swag_lr` (None: `lr`) and collect SWAG moments of the weights, one snapshot per
            epoch (mean, diagonal variance and the last `swag_rank` deviations), into ``swag.pt`` beside
            ``model.pt`` (`bayesprior.training.swag`); ``model.pt`` stays the trained network. 0: none.
    """

    architecture: str = "unet3d"
    architecture_config: dict = field(default_factory=lambda: {"in_channels": 1, "n_classes": 2})
    method: str = "ri"
    source: str | None = None
    prior_path: str | None = None
    prior_options: dict = field(default_factory=dict)
    init_from_prior: bool = False
    log_variance_init: float = -10.0
    posterior_std_ratio: float | None = None
    forward_mode: str = "lrt"
    prior_layers: str = "groups"
    lr: float = 1e-3
    patience: int = 10
    factor: float = 0.1
    threshold: float = 1e-4
    min_lr: float = 1e-6
    lr_monitor: str = "loss"
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
    skip_nonfinite_loss: bool = False
    penalty_weight: float | None = None
    swag_epochs: int = 0
    swag_rank: int = SWAG_RANK
    swag_lr: float | None = None

    def __post_init__(self) -> None:
        for name, choices in (("forward_mode", FORWARD_MODES), ("lr_monitor", LR_MONITORS),
                              ("prior_layers", PRIOR_LAYERS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {getattr(self, name)!r}")
        for name in ("lr", "factor", "min_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_epochs", "batch_size", "pad_multiple"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.restarts < 0 or self.patience < 0:
            raise ConfigError(f"restarts and patience must be >= 0, got {self.restarts}, {self.patience}")
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):  # NaN would only fail at the first step
            raise ConfigError(f"kl_weight must be a finite number >= 0, got {self.kl_weight!r}")
        if not (self.init_scale > 0 and math.isfinite(self.init_scale)):
            raise ConfigError(f"init_scale must be a finite number > 0, got {self.init_scale!r}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise ConfigError(f"weight_decay must be a finite number >= 0, got {self.weight_decay!r}")
        if self.weight_decay > 0 and self.method not in ("ri", "pr", "prf"):
            raise ConfigError(f"weight_decay applies to the plain methods ri, pr and prf; method {self.method!r} is "
                              "regularised otherwise (a Bayesian method by its prior's KL, a penalty method by its "
                              "penalty)")
        if self.patch is not None:
            self.patch = tuple(int(p) for p in self.patch)
        if self.posterior_std_ratio is not None and not (math.isfinite(self.posterior_std_ratio)
                                                         and self.posterior_std_ratio > 0):
            raise ConfigError(f"posterior_std_ratio must be a finite number > 0, got {self.posterior_std_ratio!r}")
        if self.posterior_std_ratio is not None and self.log_variance_init != -10.0:
            raise ConfigError("log_variance_init has no effect with posterior_std_ratio, which sets the posterior's "
                              "initial variance; give one of them")
        if int(self.kl_warmup) < 0:
            raise ConfigError(f"kl_warmup must be >= 0 epochs, got {self.kl_warmup!r}")
        if self.penalty_weight is not None and not (math.isfinite(self.penalty_weight) and self.penalty_weight >= 0):
            raise ConfigError(f"penalty_weight must be a finite number >= 0, got {self.penalty_weight!r}")
        if int(self.swag_epochs) < 0:
            raise ConfigError(f"swag_epochs must be >= 0, got {self.swag_epochs!r}")
        if self.swag_epochs:
            # each message names the values given: `train --swag-epochs 1` once heard "swag_rank must be between 2
            # and swag_epochs (1) ..., got 5" about a rank it never set
            if int(self.swag_epochs) < 2:
                raise ConfigError(f"swag_epochs must be 0 (no SWAG) or at least 2: SWAG's low-rank part needs at least "
                                  f"2 snapshots, one per epoch, got {self.swag_epochs!r}")
            if not 2 <= int(self.swag_rank) <= int(self.swag_epochs):
                raise ConfigError(f"swag_rank must be between 2 and swag_epochs ({self.swag_epochs!r}): SWAG keeps one "
                                  f"deviation per epoch, got swag_rank {self.swag_rank!r} (default {SWAG_RANK})")
        if self.swag_lr is not None and not (math.isfinite(self.swag_lr) and self.swag_lr > 0):
            raise ConfigError(f"swag_lr must be a finite number > 0, got {self.swag_lr!r}")
        if self.amp not in (None, *AMP_DTYPES):
            raise ConfigError(f"amp must be one of {sorted(AMP_DTYPES)} or None, got {self.amp!r}")
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
        out["patch"] = list(self.patch) if self.patch is not None else None  # JSON has no tuples
        return out


_KINDS = {"str": "str", "int": "int", "float": "number", "bool": "bool", "dict": "table", "tuple[int, ...]": "ints"}


def setting_checks() -> dict[str, Check]:
    """The type of every `TrainConfig` setting, as `bayesprior.validation` checks (for settings read from
    files); the ranges and combinations are checked by `TrainConfig` itself."""
    checks = {}
    for f in fields(TrainConfig):
        annotation = str(f.type)
        base = annotation.replace(" | None", "")
        checks[f.name] = Check(_KINDS[base], optional=base != annotation)
    return checks
