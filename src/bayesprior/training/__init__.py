"""Training of segmentation models: losses, the methods of the paper (RI, PR, PRf, Bayesian with any
registered prior), the validation split, the trainer, and data-parallel helpers.

Modules (each with one job): `config` (`TrainConfig`), `losses`, `methods` (the method table and the
network each method starts from), `splits`, `trainer`, `distributed`, `plots`. Prediction lives in
`bayesprior.inference`, metrics and evaluation in `bayesprior.evaluation`.
"""
from .config import TrainConfig
from .losses import LossConfig, cross_entropy_loss, segmentation_loss, soft_dice_loss
from .methods import TrainingMethod, build_model, training_method
from .splits import validation_split
from .trainer import train

__all__ = [
    "LossConfig", "cross_entropy_loss", "segmentation_loss", "soft_dice_loss", "TrainConfig", "train",
    "TrainingMethod", "training_method", "build_model", "validation_split",
]

