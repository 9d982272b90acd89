"""Segmentation losses of the paper: soft Dice, two-class cross-entropy, and ``0.99 Dice + 0.01 CE``.

All losses take the network's **logits** of shape (B, 2, *spatial) and an integer/binary target of
shape (B, *spatial) (or (B, 1, *spatial)); the foreground probability is ``softmax(logits)[:, 1]``.

Soft Dice, with p the foreground probability and g the binary target:
``1 - (2 Σ p g + eps) / (Σ p + Σ g + eps)``; the sums run over each case (``batch=False``, then the
mean over cases, as MONAI's default) or over the whole batch flattened (``batch=True``, as the
reference code of the paper). ``eps`` (default 1e-5, MONAI's ``smooth_nr = smooth_dr``; the paper's
code used 1e-3) keeps the ratio finite on empty volumes: an empty target with an empty prediction
then gives a loss of 0, any false positive a loss near 1.

Cross-entropy reduction decides how strongly the data outweigh the prior in the ELBO: ``"sum"`` adds
the CE over every voxel of the batch (the paper's code, where CE then dominates Dice), ``"mean"``
averages it. Both are offered and recorded in every run's configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError

CE_REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class LossConfig:
    """The data term: ``dice_weight * soft Dice + ce_weight * CE``.

    Attributes:
        dice_weight, ce_weight: the paper's 0.99 and 0.01.
        ce_reduction: ``"sum"`` over voxels (the paper's code) or ``"mean"``.
        dice_batch: Dice over the whole batch flattened (True, paper) or per case then averaged.
        dice_epsilon: the smoothing constant of the soft Dice (see the module docstring).
    """

    dice_weight: float = 0.99
    ce_weight: float = 0.01
    ce_reduction: str = "sum"
    dice_batch: bool = True
    dice_epsilon: float = 1e-5

    def __post_init__(self) -> None:
        if self.ce_reduction not in CE_REDUCTIONS:
            raise ConfigError(f"ce_reduction must be one of {CE_REDUCTIONS}, got {self.ce_reduction!r}")
        if self.dice_weight < 0 or self.ce_weight < 0:
            raise ConfigError(f"loss weights must be >= 0, got dice_weight={self.dice_weight}, "
                              f"ce_weight={self.ce_weight}")
        if not self.dice_epsilon > 0:
            raise ConfigError(f"dice_epsilon must be > 0, got {self.dice_epsilon}")


def _target(target: Tensor, logits: Tensor) -> Tensor:
    if target.dim() == logits.dim():
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ConfigError(f"target shape {tuple(target.shape)} does not fit logits {tuple(logits.shape)}")
    return (target > 0).long()


def dice_statistics(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per case (Σ p g, Σ p, Σ g) of the foreground probability p; each of shape (B,)."""
    p = logits.float().softmax(dim=1)[:, 1].flatten(1)
    g = _target(target, logits).flatten(1).to(p.dtype)
    return (p * g).sum(1), p.sum(1), g.sum(1)


def dice_from_statistics(intersection: Tensor, pred_sum: Tensor, target_sum: Tensor,
                         epsilon: float = 1e-5) -> Tensor:
    """``1 - (2 I + eps) / (P + G + eps)`` element-wise."""
    return 1 - (2 * intersection + epsilon) / (pred_sum + target_sum + epsilon)


def soft_dice_loss(logits: Tensor, target: Tensor, batch: bool = True, epsilon: float = 1e-5) -> Tensor:
    """Soft Dice loss of the foreground class (see the module docstring); a scalar tensor."""
    inter, psum, gsum = dice_statistics(logits, target)
    if batch:
        return dice_from_statistics(inter.sum(), psum.sum(), gsum.sum(), epsilon)
    return dice_from_statistics(inter, psum, gsum, epsilon).mean()


def cross_entropy_loss(logits: Tensor, target: Tensor, reduction: str = "sum") -> Tensor:
    """Two-class softmax cross-entropy, summed or averaged over every voxel of the batch."""
    if reduction not in CE_REDUCTIONS:
        raise ConfigError(f"ce reduction must be one of {CE_REDUCTIONS}, got {reduction!r}")
    return F.cross_entropy(logits.float(), _target(target, logits), reduction=reduction)


def segmentation_loss(logits: Tensor, target: Tensor, config: LossConfig = LossConfig()) -> Tensor:
    """The paper's data term ``dice_weight * Dice + ce_weight * CE`` of one batch (a scalar tensor)."""
    dice = soft_dice_loss(logits, target, batch=config.dice_batch, epsilon=config.dice_epsilon)
    ce = cross_entropy_loss(logits, target, reduction=config.ce_reduction)
    return config.dice_weight * dice + config.ce_weight * ce
