"""Inference: segment volumes with a trained model (whole volume or sliding window), post-process the masks,
and predict whole folders of NIfTI files with the input's affine and header.

Modules (each with one job): `sliding_window_prediction`, `postprocess`, `prediction`.
"""
from .postprocess import largest_connected_component
from .prediction import PredictionSettings, predict_case, predict_folder, predictive_entropy
from .sliding_window_prediction import gaussian_importance_map, predict_probabilities, sliding_window

__all__ = [
    "PredictionSettings", "predict_case", "predict_folder", "predictive_entropy", "sliding_window",
    "gaussian_importance_map", "predict_probabilities", "largest_connected_component",
]
