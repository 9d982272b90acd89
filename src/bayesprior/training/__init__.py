"""Training, inference and evaluation of segmentation models: losses, metrics, the trainer, the
methods of the paper (RI, PR, PRf, Bayesian with any registered prior), sliding-window prediction,
post-processing and evaluation.

Modules (each with one job): `losses`, `metrics`, `methods`, `trainer`, `distributed`, `inference`,
`prediction`, `postprocess`, `evaluation`, `plots`.
"""
from .losses import LossConfig, cross_entropy_loss, segmentation_loss, soft_dice_loss
from .metrics import confusion_counts, dice_score, iou_score
from .trainer import TrainConfig, train

__all__ = [
    "LossConfig", "cross_entropy_loss", "segmentation_loss", "soft_dice_loss",
    "confusion_counts", "dice_score", "iou_score",
    "TrainConfig", "train",
]
