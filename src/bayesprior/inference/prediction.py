"""Predict NIfTI volumes with a trained model: redo the recorded preprocessing, predict (whole volume
or sliding window), invert the preprocessing, and write masks with the input's affine and header.

For Bayesian models with ``samples > 0`` the predictive mean foreground probability
(``<case>_probability.nii.gz``) and the predictive entropy (``<case>_entropy.nii.gz``, in nats) are
written beside the mask (``<case>.nii.gz``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..checkpoints import model_from_payload, read_model_file
from ..data.cases import Case
from ..data.naming import ENTROPY_SUFFIX, PROBABILITY_SUFFIX, case_ids, nifti_inputs
from ..data.nifti import read_image, write_like
from ..data.preprocess import PreprocessConfig, invert, preprocess
from ..errors import CheckpointError, ConfigError
from ..wrap import BayesianModel
from .postprocess import largest_connected_component
from .sliding_window_prediction import predict_probabilities


@dataclass
class PredictionSettings:
    """How to predict: window size, overlap, MC samples, post-processing, device."""

    roi: tuple[int, int, int] = (40, 48, 40)
    overlap: float = 0.5
    samples: int = 0
    largest_component: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.roi = tuple(int(r) for r in self.roi)
        if len(self.roi) != 3 or any(r < 8 or r % 8 for r in self.roi):
            raise ConfigError(f"roi must be three sizes divisible by 8 (the network downsamples 3 times), "
                              f"got {self.roi}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.samples < 0:
            raise ConfigError(f"samples must be >= 0, got {self.samples}")


def _probability_predictor(model: nn.Module, samples: int):
    def predictor(x: Tensor) -> Tensor:
        if isinstance(model, BayesianModel):
            return model.predict(x, samples=samples, transform=lambda y: y.softmax(1)).mean
        return model(x).softmax(1)
    return predictor


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy (nats) over axis 0 of class probabilities."""
    p = np.clip(probabilities, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=0)


@torch.no_grad()
def predict_case(model: nn.Module, image: np.ndarray, settings: PredictionSettings) -> np.ndarray:
    """Class probabilities (C, D, H, W) of one preprocessed image (D, H, W)."""
    device = torch.device(settings.device)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    probs = predict_probabilities(_probability_predictor(model, settings.samples), x, settings.roi,
                                  settings.overlap)
    return probs[0].cpu().numpy()


def predict_folder(model_path: str | Path, in_dir: str | Path, out_dir: str | Path,
                   settings: PredictionSettings = PredictionSettings(), progress: bool = True,
                   preprocess_config: Mapping[str, Any] | None = None) -> list[Path]:
    """Segment every NIfTI of `in_dir` into `out_dir`; return the written mask paths.

    The preprocessing recorded in the model file is redone (`preprocess_config` overrides it, and
    is needed for a model trained without a record).

    Raises:
        CheckpointError: a model file without a preprocessing record and no `preprocess_config`.
        DataError: unreadable inputs.
    """
    payload = read_model_file(model_path)  # read once: the preprocessing record and the model come from it
    recorded = payload.get("extra", {}).get("preprocess")
    if preprocess_config is None and recorded is None:
        raise CheckpointError(model_path, "records no preprocessing configuration (train it with `preprocess=` "
                                          "or pass the preprocessing to predict)")
    config = PreprocessConfig(**dict(preprocess_config if preprocess_config is not None else recorded))
    model = model_from_payload(payload, model_path).to(settings.device).eval()
    bayesian = isinstance(model, BayesianModel)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    files = nifti_inputs(in_dir)
    ids = dict(zip(files, case_ids(files)))
    iterator: Sequence[Path] | Any = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc="predicting", unit="case")
    for path in iterator:
        data, affine, header = read_image(path)
        case_id = ids[path]
        case = Case(case_id=case_id, image=data, label=None, affine=affine, header=header,
                    image_path=path, label_path=None)
        prepared = preprocess(case, config)
        probs = predict_case(model, prepared.image, settings)
        mask = invert(probs.argmax(0).astype(np.uint8), prepared.record, order=0).astype(np.uint8)
        if settings.largest_component:
            mask = largest_connected_component(mask)
        target = out_dir / f"{case_id}.nii.gz"
        write_like(mask, affine, header, target, dtype=np.uint8)
        written.append(target)
        if bayesian and settings.samples > 0:
            probability = invert(probs[1].astype(np.float32), prepared.record, order=1).astype(np.float32)
            entropy = invert(predictive_entropy(probs).astype(np.float32), prepared.record, order=1)
            write_like(probability, affine, header, out_dir / f"{case_id}{PROBABILITY_SUFFIX}.nii.gz", dtype=np.float32)
            write_like(entropy.astype(np.float32), affine, header, out_dir / f"{case_id}{ENTROPY_SUFFIX}.nii.gz",
                       dtype=np.float32)
    return written
