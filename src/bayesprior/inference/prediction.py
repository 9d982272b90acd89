"""Predict NIfTI volumes with a trained model: redo the recorded preprocessing, predict (whole volume
or sliding window), invert the preprocessing, and write masks with the input's affine and header.

The inputs may be a folder of NIfTI files or a dataset folder of any registered layout (one BRATS patient's
folder included), read through `bayesprior.data.datasets.prediction_files`: one image per case, in the
sequence or channel chosen, and the mask is named by the case id (``<case>.nii.gz``), as the labels are.

With ``probabilities`` (and always for Bayesian models with ``samples > 0``) the foreground probability
(``<case>_probability.nii.gz``) and the predictive entropy (``<case>_entropy.nii.gz``, in nats) are written
beside the mask: the Monte-Carlo mean over the samples of a Bayesian model (its posterior mean's softmax for
``samples = 0``), the softmax of a deterministic one, so that every method's calibration can be scored. The
class probabilities are mapped back to the file's grid (linear interpolation where the preprocessing resampled)
before the mask is taken from them, so the mask is exactly the written probability map above 0.5; the
Monte-Carlo samples of a case are seeded by the run's ``seed`` and the case id, so a rerun gives the same maps. The output folder is locked while a run writes
to it and keeps a manifest of what was written (`bayesprior.inference.prediction_folder`).
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..atomic import remove_stale_temp_files
from ..checkpoints import model_from_payload, read_model_file
from ..data.cases import CaseFiles
from ..data.datasets import find_layout, prediction_files
from ..data.naming import ENTROPY_SUFFIX, PROBABILITY_SUFFIX
from ..data.nifti import write_like
from ..data.preprocess import PreprocessConfig, invert, preprocess
from ..errors import CheckpointError, ConfigError, DataError, PluginError
from ..hashing import file_sha256
from ..locks import folder_lock
from ..plugins import architecture_min_input_size
from ..progress import Progress
from ..wrap import BayesianModel
from .postprocess import largest_connected_component
from .prediction_folder import PredictionFolder, refuse_input_folders
from .sliding_window_prediction import predict_probabilities


@dataclass
class PredictionSettings:
    """How to predict: window size, overlap, MC samples and their seed, post-processing, device, and whether
    the probability and entropy maps are written for every model (`probabilities`)."""

    roi: tuple[int, ...] = (40, 48, 40)  # three sizes (checked)
    overlap: float = 0.5
    samples: int = 0
    largest_component: bool = False
    device: str = "cpu"
    seed: int = 0
    probabilities: bool = False

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
def predict_case(model: nn.Module, image: np.ndarray, settings: PredictionSettings,
                 min_size: Sequence[int] | None = None) -> np.ndarray:
    """Class probabilities (C, D, H, W) of one preprocessed image (D, H, W); a whole volume smaller than the
    network's `min_size` is padded up to it (and cropped back)."""
    device = torch.device(settings.device)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
    probs = predict_probabilities(_probability_predictor(model, settings.samples), x, settings.roi,
                                  settings.overlap, min_size=min_size)
    return probs[0].cpu().numpy()


def case_seed(seed: int, case_id: str) -> int:
    """The seed of one case's Monte-Carlo samples: fixed by the run's seed and the case, whatever the order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{case_id}".encode()).digest()[:4], "little")


def output_names(case_id: str, with_maps: bool) -> list[str]:
    """The files a case's prediction writes: its mask, then its probability and entropy maps if asked for."""
    suffixes = ("", PROBABILITY_SUFFIX, ENTROPY_SUFFIX) if with_maps else ("",)
    return [f"{case_id}{suffix}.nii.gz" for suffix in suffixes]


def predict_folder(model_path: str | Path, in_dir: str | Path, out_dir: str | Path,
                   settings: PredictionSettings | None = None, progress: bool = True,
                   preprocess_config: Mapping[str, Any] | None = None, overwrite: bool = False,
                   layout: str | None = None, channel: str | int | None = None, allow_outside_paths: bool = False,
                   preprocess_options: Mapping[str, Any] | None = None,
                   cases: Sequence[str] | None = None) -> list[Path]:
    """Segment every case of `in_dir` (or those `cases` names) into `out_dir`; return the written mask paths.

    The preprocessing recorded in the model file is redone (`preprocess_config` overrides it, and
    is needed for a model trained without a record). Everything is checked before anything is written.

    Args:
        in_dir: a folder of NIfTI images, or a dataset folder of any registered layout (`prediction_files`).
        settings: window, overlap, samples, device ... (None: `PredictionSettings()`'s defaults).
        overwrite: replace files of `out_dir` that bayesprior did not write, and remove every prediction of
            another model or other settings there first (both refused otherwise: one folder, one model).
        layout, channel: the dataset layout (detected when None) and the sequence or channel to segment (None:
            for a dataset folder, the one the model file records it was trained on).
        allow_outside_paths: read images that a dataset names outside `in_dir` (see `read_dataset`).
        preprocess_options: `PreprocessConfig` fields from the command line (``spacing``, ``shape`` ...): the
            preprocessing of a model file that records none; for one that records it, they must agree.
        cases: the case ids to predict (None: every case of `in_dir`).
    Raises:
        CheckpointError: an unreadable model file, NaN weights, no preprocessing record and no
            `preprocess_config` or `preprocess_options`.
        ConfigError: ``samples`` for a deterministic model (it would have no effect); a preprocessing option
            that differs from the model's record.
        DataError: unreadable inputs, two inputs with one case id or one output name, an output folder that
            is an input or label folder, or one holding same-named files that bayesprior did not write or
            predictions of another model or other settings; a case of `cases` that `in_dir` does not have.
        FolderInUseError: another prediction writes into `out_dir`.
    """
    settings = PredictionSettings() if settings is None else settings
    payload = read_model_file(model_path)  # read once: the preprocessing record and the model come from it
    config = _model_preprocessing(payload, model_path, preprocess_config, preprocess_options)
    model = _prediction_model(payload, model_path, settings)
    bayesian = isinstance(model, BayesianModel)
    if channel is None and (layout or find_layout(in_dir)) is not None:
        channel = payload.get("extra", {}).get("channel")  # a dataset folder: the sequence the model was trained on
    inputs = prediction_files(in_dir, layout, channel=channel, allow_outside_paths=allow_outside_paths)
    if cases is not None:
        inputs = _only_cases(inputs, cases, Path(in_dir))
    files = [item.image_path for item in inputs]
    with_maps = settings.probabilities or (bayesian and settings.samples > 0)
    outputs = {item.image_path: output_names(item.case_id, with_maps) for item in inputs}
    _refuse_shared_output_names(outputs)
    out_dir = Path(out_dir)
    refuse_input_folders(out_dir, files, Path(in_dir))
    run = {"model": str(model_path), "model_sha256": file_sha256(model_path),
           "settings": dataclasses.asdict(settings), "preprocess": config.to_dict()}
    with folder_lock(out_dir, "prediction folder"):
        remove_stale_temp_files(out_dir)
        folder = PredictionFolder(out_dir, run)
        if overwrite:
            folder.remove_other_predictors()
        else:
            folder.refuse_foreign([name for names in outputs.values() for name in names])
            folder.refuse_other_predictors()
        return _predict_files(model, inputs, outputs, folder, config, settings, _min_size(payload), progress)


def _model_preprocessing(payload: Mapping[str, Any], model_path: str | Path, preprocess_config: Mapping[str, Any] | None,
                         preprocess_options: Mapping[str, Any] | None) -> PreprocessConfig:
    """The preprocessing to redo for the model: `preprocess_config` if given, else the one the model file records,
    else `preprocess_options` (command-line options, which must agree with a record)."""
    recorded = payload.get("extra", {}).get("preprocess")
    if recorded is not None and preprocess_options:
        _refuse_other_preprocessing(PreprocessConfig(**dict(recorded)), preprocess_options, model_path)
    if preprocess_config is None and recorded is None:
        if not preprocess_options:
            raise CheckpointError(model_path, "records no preprocessing configuration (train it with "
                                              "`preprocess=`, or give predict --spacing, --shape, --intensity ...)")
        preprocess_config = preprocess_options
    return PreprocessConfig(**dict(preprocess_config if preprocess_config is not None else recorded))


def _prediction_model(payload: Mapping[str, Any], model_path: str | Path, settings: PredictionSettings) -> nn.Module:
    """The model of the file, on the settings' device, in eval mode; `ConfigError` for Monte-Carlo samples of
    a deterministic one."""
    model = model_from_payload(payload, model_path).to(settings.device).eval()
    if settings.samples > 0 and not isinstance(model, BayesianModel):
        raise ConfigError(f"--samples {settings.samples} has no effect: {model_path} is a deterministic model, "
                          "which gives one prediction (no Monte-Carlo samples, so no uncertainty from them); leave "
                          "--samples out (--probabilities writes its softmax probability and entropy maps)")
    return model


def _refuse_other_preprocessing(recorded: PreprocessConfig, options: Mapping[str, Any],
                                model_path: str | Path) -> None:
    """A preprocessing option that contradicts the model file's record is an error: the model would see other
    inputs than it was trained on. One that repeats the record is harmless."""
    for name, value in options.items():
        if getattr(PreprocessConfig(**{name: value}), name) != getattr(recorded, name):
            value = getattr(recorded, name)
            shown = "none" if value is None else ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) \
                else value
            raise ConfigError(f"--{name.replace('_', '-')} differs from the preprocessing {model_path} records "
                              f"({name.replace('_', '-')} {shown}); predict redoes the model's preprocessing by "
                              f"itself, so leave --{name.replace('_', '-')} out")


def _only_cases(inputs: Sequence[CaseFiles], cases: Sequence[str], in_dir: Path) -> list[CaseFiles]:
    """The inputs of the cases `cases` names; a case `in_dir` has no image of is a `DataError`."""
    found = {item.case_id for item in inputs}
    unknown = [c for c in cases if c not in found]
    if unknown:
        raise DataError(in_dir, f"has no image of case(s) {', '.join(map(repr, unknown[:5]))}"
                                f"{' ...' if len(unknown) > 5 else ''} (named by --cases or --split-file)")
    wanted = set(cases)
    return [item for item in inputs if item.case_id in wanted]


def _refuse_shared_output_names(outputs: Mapping[Path, Sequence[str]]) -> None:
    owner: dict[str, Path] = {}
    for path, names in outputs.items():
        for name in names:
            if name in owner:
                raise DataError(path, f"and {owner[name]} would both be written as {name}; rename one of them")
            owner[name] = path


def _min_size(payload: Mapping[str, Any]) -> tuple[int, ...] | None:
    architecture = payload.get("architecture") or {}
    try:
        return architecture_min_input_size(architecture["name"]) if "name" in architecture else None
    except PluginError:
        return None  # rebuilt with a network given by hand


def mask_and_probability(probs: np.ndarray, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The mask (uint8) and the foreground probability (float32) on the file's grid, from class probabilities
    (C, D, H, W) on the preprocessed grid: the probabilities are inverted with linear interpolation first and
    the mask is taken from them (foreground probability > 0.5 for two classes), so thresholding the written
    probability map gives the written mask."""
    if probs.shape[0] == 2:
        probability = invert(probs[1].astype(np.float32), record, order=1).astype(np.float32)
        return (probability > 0.5).astype(np.uint8), probability
    inverted = invert(probs.astype(np.float32), record, order=1)
    return inverted.argmax(0).astype(np.uint8), inverted[1].astype(np.float32)


def _predict_files(model: nn.Module, inputs: Sequence[CaseFiles], outputs: Mapping[Path, Sequence[str]],
                   folder: PredictionFolder, config: PreprocessConfig, settings: PredictionSettings,
                   min_size: Sequence[int] | None, progress: bool) -> list[Path]:
    written = []
    for item in Progress(inputs, "predicting", "case", enabled=progress, line_per_item=True,
                         item_name=lambda item: item.case_id, timed=True):
        case = item.load()
        prepared = preprocess(case, config)
        torch.manual_seed(case_seed(settings.seed, case.case_id))
        probs = predict_case(model, prepared.image, settings, min_size)
        mask, probability = mask_and_probability(probs, prepared.record)
        if settings.largest_component:
            mask = largest_connected_component(mask)
        targets = folder.claim(outputs[item.image_path], item.image_path.absolute())  # evaluate finds it anywhere
        write_like(mask, case.affine, case.header, targets[0], dtype=np.uint8)
        written.append(targets[0])
        if len(targets) == 3:
            entropy = invert(predictive_entropy(probs).astype(np.float32), prepared.record, order=1)
            write_like(probability, case.affine, case.header, targets[1], dtype=np.float32)
            write_like(entropy.astype(np.float32), case.affine, case.header, targets[2], dtype=np.float32)
    return written
