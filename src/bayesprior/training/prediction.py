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

from ..checkpoints import load_model, read_model_file
from ..errors import CheckpointError, ConfigError, DataError
from ..wrap import BayesianModel
from .inference import predict_probabilities
from .postprocess import largest_connected_component

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


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


def nifti_inputs(folder: str | Path) -> list[Path]:
    """The NIfTI files of `folder`, or of its nnU-Net ``imagesTs``/``imagesTr`` sub-folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "is not a folder")
    for candidate in (folder, folder / "imagesTs", folder / "imagesTr"):
        files = sorted(p for p in candidate.glob("*") if p.is_file() and p.name.endswith(_NIFTI_SUFFIXES))
        if files:
            return files
    raise DataError(folder, "holds no NIfTI file (.nii or .nii.gz), nor does an imagesTs/imagesTr inside it")


def case_id_of(path: Path) -> str:
    """File name without the NIfTI suffix and without an nnU-Net channel suffix (``_0000``)."""
    name = path.name
    for suffix in _NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    stem, _, channel = name.rpartition("_")
    return stem if stem and len(channel) == 4 and channel.isdigit() else name


def case_ids(paths: Sequence[Path]) -> list[str]:
    """Case ids of input images: without the channel suffix when that keeps them distinct.

    In a plain folder of ``Case_0001.nii.gz``, ``Case_0002.nii.gz`` the four digits name the case, not a
    channel; stripping them would give every file the same id and overwrite the predictions.
    """
    stripped = [case_id_of(p) for p in paths]
    if len(set(stripped)) == len(stripped):
        return stripped
    from ..data.nifti import strip_nifti_suffix

    return [strip_nifti_suffix(p.name) for p in paths]


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
    from ..data import Case, read_image, write_like
    from ..data.preprocess import PreprocessConfig, invert, preprocess

    recorded = read_model_file(model_path).get("extra", {}).get("preprocess")
    if preprocess_config is None and recorded is None:
        raise CheckpointError(model_path, "records no preprocessing configuration (train it with `preprocess=` "
                                          "or pass the preprocessing to predict)")
    config = PreprocessConfig(**dict(preprocess_config if preprocess_config is not None else recorded))
    model = load_model(model_path).to(settings.device).eval()
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
            write_like(probability, affine, header, out_dir / f"{case_id}_probability.nii.gz", dtype=np.float32)
            write_like(entropy.astype(np.float32), affine, header, out_dir / f"{case_id}_entropy.nii.gz",
                       dtype=np.float32)
    return written
