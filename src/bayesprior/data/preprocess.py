"""Preprocessing of cases for training and inference, every step recorded so predictions can be inverted.

Steps, in order, each optional: crop to the non-zero bounding box (holes filled, as nnU-Net), resample to a
shape or spacing (images cubic, labels nearest or linear-then-threshold), centre crop/pad to a fixed shape
(the paper), pad to a multiple of `divisible_by`, intensity normalisation: min-max to [0,1] as the paper,
`zscore` over each case's non-zero voxels, or `ct` as nnU-Net: clip to the dataset's foreground 0.5-99.5
percentiles, then z-score with the dataset's foreground mean and standard deviation. The `ct` statistics are
computed once from the training cases (`ct_statistics`) and kept in the configuration, so the model file that
records the configuration preprocesses new cases the same way. `invert` walks the record backwards onto the
file's grid.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel
import numpy as np
from scipy import ndimage

from ..atomic import atomic_path, atomic_write_json, remove_stale_temp_files
from ..errors import ConfigError, DataError
from ..safe_load import NpzLimits, load_npz
from .cases import Case
from .datasets import check_folder, read_dataset

# MAX_VOXELS: the most voxels an image may have after resampling, cropping or padding (2**28: 1 GiB as float32,
# e.g. 1024 x 512 x 512); a spacing or shape that asks for more is refused, naming its option, before anything is
# allocated; a file whose header declares more, before it is read
from .nifti import MAX_VOXELS

INTENSITY_MODES = ("minmax", "zscore", "ct", "none")
#: what the `ct` scheme needs from the training cases (`ct_statistics`)
CT_STATISTICS = ("clip_low", "clip_high", "mean", "std")
#: nnU-Net's clipping percentiles of the foreground intensities, and its sample of foreground voxels per case
CT_PERCENTILES = (0.5, 99.5)
CT_VOXELS_PER_CASE = 10_000
LABEL_RESAMPLING = ("nearest", "linear")
#: what a preprocessing cache entry may declare (`image`, `label`, `record`): a JSON record of megabytes
CACHE_LIMITS = NpzLimits(max_arrays=3, max_bytes=8 * 2**30, max_bytes_per_name={"record": 64 * 2**20})
RECORD_VERSION = 1
_CT_NEEDS_STATISTICS = ("intensity 'ct' needs the dataset's statistics (`with_dataset_statistics`, which "
                        "`prepare_dataset` applies to the training cases; a model file records them)")


@dataclass(frozen=True)
class PreprocessConfig:
    """What `preprocess` does; every field is recorded with the results and keys the cache."""

    crop_nonzero: bool = True
    shape: tuple[int, int, int] | None = None
    resample_shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    intensity: str = "minmax"
    divisible_by: int = 8
    label_resampling: str = "nearest"
    #: the `ct` scheme's dataset statistics (`CT_STATISTICS`, plain floats); None until computed
    intensity_statistics: dict[str, float] | None = None

    def __post_init__(self):
        for name in ("shape", "resample_shape"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(int(v) for v in value)
                if len(value) != 3 or min(value) < 1:
                    raise ConfigError(f"PreprocessConfig.{name} must be three positive integers, got {value!r}")
                refuse_too_many_voxels(value, f"--{name.replace('_', '-')} {','.join(map(str, value))}")
                object.__setattr__(self, name, value)
        if self.spacing is not None:
            spacing = tuple(float(v) for v in self.spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise ConfigError(f"PreprocessConfig.spacing must be three positive numbers, got {self.spacing!r}")
            object.__setattr__(self, "spacing", spacing)
        if self.spacing is not None and self.resample_shape is not None:
            raise ConfigError("PreprocessConfig: give resample_shape or spacing, not both")
        if self.intensity not in INTENSITY_MODES:
            raise ConfigError(f"PreprocessConfig.intensity must be one of {INTENSITY_MODES}, got {self.intensity!r}")
        if self.label_resampling not in LABEL_RESAMPLING:
            raise ConfigError(f"PreprocessConfig.label_resampling must be one of {LABEL_RESAMPLING}, "
                              f"got {self.label_resampling!r}")
        if int(self.divisible_by) < 1:
            raise ConfigError(f"PreprocessConfig.divisible_by must be >= 1, got {self.divisible_by!r}")
        if self.intensity_statistics is not None:
            object.__setattr__(self, "intensity_statistics", _checked_statistics(self.intensity_statistics,
                                                                                 self.intensity))

    def to_dict(self) -> dict[str, Any]:
        """Plain types only; `intensity_statistics` is left out while it is None (the key of older records)."""
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}
        if out["intensity_statistics"] is None:
            del out["intensity_statistics"]
        return out


def refuse_too_many_voxels(shape: Sequence[int], asked_by: str, case: str = "") -> None:
    """`ConfigError` naming the option `asked_by` (``"--spacing 0.01"``) if an image of `shape` would have more
    than `MAX_VOXELS` voxels; `case` says which case, when a spacing made the shape."""
    voxels = math.prod(int(n) for n in shape)
    if voxels > MAX_VOXELS:
        raise ConfigError(f"{asked_by} asks for {'x'.join(map(str, shape))} = {voxels:,} voxels{case}, more than the "
                          f"{MAX_VOXELS:,} an image may have (bayesprior.data.preprocess.MAX_VOXELS); give a "
                          f"{'coarser' if asked_by.startswith('--spacing') else 'smaller'} {asked_by.split()[0]}")


def resampling_option(config: PreprocessConfig) -> str:
    """The option that makes `config` resample, as a user gives it: ``"--spacing 4"``, ``"--resample-shape
    40,48,40"`` (`config` must resample)."""
    if config.spacing is not None:
        values = {f"{v:g}" for v in config.spacing}
        return f"--spacing {values.pop() if len(values) == 1 else ','.join(f'{v:g}' for v in config.spacing)}"
    if config.resample_shape is None:
        raise ValueError("resampling_option: this configuration does not resample")
    return f"--resample-shape {','.join(map(str, config.resample_shape))}"


def refuse_resampling_below(prepared: Sequence[Any], min_size: Sequence[int] | None, network: str) -> None:
    """`ConfigError` naming the resampling option if it made a case smaller than `network`'s smallest input
    `min_size` on every axis (as `--spacing 1e6` makes one voxel), rather than the network's own complaint
    about its input shape. Cases without a preprocessing record, or not resampled, pass."""
    if min_size is None:
        return
    for case in prepared:
        record = getattr(case, "record", None)
        if not isinstance(record, dict) or record.get("shape_after_resample") == record.get("shape_before_resample"):
            continue
        after = record["shape_after_resample"]
        if all(n < m for n, m in zip(after, min_size, strict=True)):
            option = resampling_option(PreprocessConfig(**record["config"]))
            raise ConfigError(f"{option} resamples case {case.case_id!r} from "
                              f"{'x'.join(map(str, record['shape_before_resample']))} to {'x'.join(map(str, after))} "
                              f"voxels, below the smallest input {network} takes ({'x'.join(map(str, min_size))}, "
                              f"one axis at least); give a {'finer' if option.startswith('--spacing') else 'larger'} "
                              f"{option.split()[0]}")


def _checked_statistics(statistics: Any, intensity: str) -> dict[str, float]:
    if intensity != "ct":
        raise ConfigError(f"PreprocessConfig.intensity_statistics are for intensity 'ct', not {intensity!r}")
    if not isinstance(statistics, dict) or set(statistics) != set(CT_STATISTICS):
        raise ConfigError(f"PreprocessConfig.intensity_statistics must hold exactly {list(CT_STATISTICS)}, "
                          f"got {statistics!r}")
    try:
        values = {key: float(statistics[key]) for key in CT_STATISTICS}
    except (TypeError, ValueError):
        raise ConfigError(f"PreprocessConfig.intensity_statistics must be numbers, got {statistics!r}") from None
    if not all(np.isfinite(v) for v in values.values()) or values["clip_low"] > values["clip_high"] \
            or values["std"] < 0:
        raise ConfigError(f"PreprocessConfig.intensity_statistics are inconsistent: {values}")
    return values


def ct_statistics(cases: Sequence[Case], where: str | Path = "dataset",
                  voxels_per_case: int = CT_VOXELS_PER_CASE, seed: int = 0) -> dict[str, float]:
    """The `ct` scheme's dataset statistics, as nnU-Net computes them: the 0.5 and 99.5 percentiles, mean and
    standard deviation of the image intensities under the labels' foreground (label > 0) of `cases`.

    A case with more than `voxels_per_case` foreground voxels contributes a random sample of that many
    (seeded by `seed`), so a large dataset costs no more memory than a small one.

    Returns:
        ``{"clip_low", "clip_high", "mean", "std"}`` as plain floats (the mean and standard deviation of the
        unclipped foreground intensities, as nnU-Net's).
    Raises:
        DataError: no case has a labelled foreground voxel (`where` names the dataset).
    """
    rng = np.random.default_rng(seed)
    samples = []
    for case in cases:
        if case.label is None:
            continue
        values = np.asarray(case.image)[np.asarray(case.label) > 0]
        if values.size > voxels_per_case:
            values = rng.choice(values, voxels_per_case, replace=False)
        samples.append(values.astype(np.float64))
    voxels = np.concatenate(samples) if samples else np.zeros(0)
    if voxels.size == 0:
        raise DataError(where, "intensity 'ct' needs the dataset's foreground intensities, but no training case "
                               "has a labelled foreground voxel")
    low, high = np.percentile(voxels, CT_PERCENTILES)
    return {"clip_low": float(low), "clip_high": float(high), "mean": float(voxels.mean()),
            "std": float(voxels.std())}


def with_dataset_statistics(config: PreprocessConfig, cases: Sequence[Case],
                            where: str | Path = "dataset") -> PreprocessConfig:
    """`config` with the dataset statistics its intensity scheme needs (`ct`) computed from `cases`; the
    same `config` when it needs none or already holds them."""
    if config.intensity != "ct" or config.intensity_statistics is not None:
        return config
    return dataclasses.replace(config, intensity_statistics=ct_statistics(cases, where))


def ct_normalised(prepared: Prepared, statistics: Mapping[str, float]) -> Prepared:
    """A case prepared with intensity ``"none"``, normalised by the `ct` scheme with `statistics`: the same case as
    `preprocess` makes with ``intensity="ct"`` and those statistics (the record says so), without reading it again.

    An experiment uses it to take the `ct` statistics from each run's own training cases rather than from every
    case of the dataset, test cases included.
    """
    raw = prepared.record["config"]
    if raw.get("intensity") != "none":
        raise ConfigError(f"case {prepared.case_id}: ct_normalised needs a case prepared with intensity 'none', "
                          f"not {raw.get('intensity')!r}")
    config = PreprocessConfig(**{**raw, "intensity": "ct", "intensity_statistics": dict(statistics)})
    image, stats = _normalise(prepared.image, config, prepared.image != 0, _inside(prepared.record))
    record = {**prepared.record, "config": config.to_dict(), "intensity": {"mode": "ct", **stats}}
    return Prepared(prepared.case_id, np.ascontiguousarray(image, dtype=np.float32), prepared.label, record)


def _inside(record: Mapping[str, Any]) -> np.ndarray:
    """The voxels of the preprocessed grid that came from the image, not from padding (from the record's plan)."""
    inside = np.ones(record["shape_after_resample"], dtype=bool)
    for step in record["crop_pad_steps"]:
        inside = _apply_crop_pad(inside, step["crop"], step["pad"])
    return inside


def recorded_config(prepared: Sequence[Prepared]) -> dict[str, Any]:
    """The preprocessing configuration the prepared cases were made with, dataset statistics included:
    what a model trained on them must record (`train(..., preprocess=...)`).

    Raises:
        ConfigError: no cases, or cases prepared with different configurations.
    """
    configs = [p.record["config"] for p in prepared]
    if not configs:
        raise ConfigError("no prepared cases, so no preprocessing configuration to record")
    if any(c != configs[0] for c in configs[1:]):
        raise ConfigError("the prepared cases were made with different preprocessing configurations")
    return dict(configs[0])


@dataclass
class Prepared:
    """A preprocessed case: image float32 (D, H, W), label uint8 or None, and the record to invert it."""

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    record: dict


def nonzero_box(image: np.ndarray) -> list[list[int]]:
    """[[start, stop], ...] of the non-zero voxels (holes filled); the whole array if it is all zero."""
    mask = ndimage.binary_fill_holes(image != 0)
    if not mask.any():
        return [[0, n] for n in image.shape]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def _resample(array: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    if tuple(array.shape) == tuple(shape):
        return array.copy()
    factors = [t / n for t, n in zip(shape, array.shape, strict=True)]
    out = ndimage.zoom(array, factors, order=order, mode="nearest", grid_mode=False)
    if out.shape != tuple(shape):  # zoom rounds; never trust it with the final shape
        out = out[tuple(slice(0, s) for s in shape)]
        out = np.pad(out, [(0, s - o) for s, o in zip(shape, out.shape, strict=True)], mode="edge")
    return out


def _crop_or_pad_plan(current: tuple[int, ...], target: tuple[int, ...]) -> tuple[list, list]:
    """Centred crop (start, stop) and pad (before, after) per axis, to go from `current` to `target`."""
    crops, pads = [], []
    for n, t in zip(current, target, strict=True):
        if n >= t:
            start = (n - t) // 2
            crops.append([start, start + t])
            pads.append([0, 0])
        else:
            crops.append([0, n])
            before = (t - n) // 2
            pads.append([before, t - n - before])
    return crops, pads


def _apply_crop_pad(array: np.ndarray, crops: list, pads: list) -> np.ndarray:
    cropped = array[tuple(slice(a, b) for a, b in crops)]
    return np.pad(cropped, [tuple(p) for p in pads])


def _normalise(image: np.ndarray, config: PreprocessConfig, brain: np.ndarray,
               inside: np.ndarray) -> tuple[np.ndarray, dict]:
    """`image` normalised by `config.intensity`; `brain` marks its non-zero voxels, `inside` the voxels that
    came from the file (not padding), and the statistics used are returned for the record."""
    mode = config.intensity
    if mode == "none":
        return image.astype(np.float32), {}
    if mode == "ct":
        stats = config.intensity_statistics
        if stats is None:  # (`preprocess` refuses this first)
            raise ConfigError(_CT_NEEDS_STATISTICS)
        out = np.zeros_like(image, dtype=np.float32)
        clipped = np.clip(image[inside], stats["clip_low"], stats["clip_high"])
        out[inside] = (clipped - stats["mean"]) / max(stats["std"], 1e-8)  # padding stays 0, as nnU-Net pads
        return out, dict(stats)
    if mode == "minmax":
        low, high = float(image.min()), float(image.max())
        scale = high - low if high > low else 1.0
        return ((image - low) / scale).astype(np.float32), {"min": low, "max": high}
    inside = image[brain] if brain.any() else image.ravel()
    mean, std = float(inside.mean()), float(inside.std())
    out = np.zeros_like(image, dtype=np.float32)
    region = brain if brain.any() else np.ones_like(brain)
    out[region] = (image[region] - mean) / max(std, 1e-8)
    return out, {"mean": mean, "std": std}


def header_to_text(header) -> str:
    """A NIfTI header as base64 text (for the JSON record)."""
    return base64.b64encode(nibabel.Nifti1Header.from_header(header).binaryblock).decode("ascii")


def header_from_record(record: dict) -> nibabel.Nifti1Header:
    """The original NIfTI header stored in a preprocessing record."""
    return nibabel.Nifti1Header(binaryblock=base64.b64decode(record["header"]))


def affine_from_record(record: dict) -> np.ndarray:
    """The original 4x4 affine stored in a preprocessing record."""
    return np.asarray(record["affine"], dtype=np.float64)


def preprocess(case: Case, config: PreprocessConfig) -> Prepared:
    """Apply `config` to one case.

    Returns:
        a `Prepared` whose image is float32 with every axis divisible by `config.divisible_by`, whose label is
        uint8 (same shape), and whose record holds everything `invert` needs (original shape, affine, header,
        crop box, resampling shapes, crops and pads, intensity statistics, the configuration).
    """
    if config.intensity == "ct" and config.intensity_statistics is None:
        raise ConfigError(_CT_NEEDS_STATISTICS)
    image = np.asarray(case.image, dtype=np.float32)
    label = None if case.label is None else np.asarray(case.label, dtype=np.uint8)
    zooms = [float(z) for z in np.sqrt((np.asarray(case.affine)[:3, :3] ** 2).sum(axis=0))]
    record = _source_record(case, config, image.shape, zooms)
    box = nonzero_box(image) if config.crop_nonzero else [[0, n] for n in image.shape]
    record["crop_box"] = box
    image = image[tuple(slice(a, b) for a, b in box)]
    label = None if label is None else label[tuple(slice(a, b) for a, b in box)]
    brain = image != 0

    record["shape_before_resample"] = list(image.shape)
    target = _resampled_shape(image.shape, zooms, config, case.case_id)
    if target is not None and tuple(target) != image.shape:
        image, brain, label = _resample_case(image, brain, label, target, config.label_resampling)
    record["shape_after_resample"] = list(image.shape)
    record["output_zooms"] = [z * a / b
                              for z, a, b in zip(zooms, record["shape_before_resample"], image.shape, strict=True)]

    steps = _crop_pad_steps(image.shape, config, case.case_id)
    record["crop_pad_steps"] = steps
    inside = _apply_steps(np.ones(image.shape, dtype=bool), steps)  # the voxels that come from the file
    image, brain = _apply_steps(image, steps), _apply_steps(brain, steps)
    label = None if label is None else _apply_steps(label, steps)

    image, stats = _normalise(image, config, brain, inside)
    record["intensity"] = {"mode": config.intensity, **stats}
    record["final_shape"] = list(image.shape)
    return Prepared(case.case_id, np.ascontiguousarray(image, dtype=np.float32),
                    None if label is None else np.ascontiguousarray(label, dtype=np.uint8), record)


def _source_record(case: Case, config: PreprocessConfig, shape: tuple[int, ...], zooms: list[float]) -> dict[str, Any]:
    """The start of a case's preprocessing record: the configuration, and the case as read (shape, affine,
    header, voxel sizes, files)."""
    return {
        "version": RECORD_VERSION, "case_id": case.case_id, "config": config.to_dict(),
        "original_shape": list(shape), "affine": np.asarray(case.affine).tolist(),
        "header": header_to_text(case.header), "zooms": zooms,
        "image_path": None if case.image_path is None else str(case.image_path),
        "label_path": None if case.label_path is None else str(case.label_path),
    }


def _resampled_shape(shape: tuple[int, ...], zooms: list[float], config: PreprocessConfig,
                     case_id: str) -> tuple[int, ...] | None:
    """The shape `config` resamples an image of `shape` with voxels of `zooms` mm to; None if it does not resample.
    `ConfigError` for a spacing that would make too many voxels."""
    if config.resample_shape is not None:
        return config.resample_shape
    if config.spacing is None:
        return None
    target = tuple(max(1, int(round(n * z / s))) for n, z, s in zip(shape, zooms, config.spacing, strict=True))
    grid = f"{'x'.join(map(str, shape))} voxels of {'x'.join(f'{z:.3g}' for z in zooms)} mm"
    refuse_too_many_voxels(target, resampling_option(config), f" for case {case_id!r} ({grid})")
    return target


def _resample_case(image: np.ndarray, brain: np.ndarray, label: np.ndarray | None, target: tuple[int, ...],
                   label_resampling: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The image (cubic), its brain mask (linear, then >= 0.5) and the label (`label_resampling`) at `target`."""
    image = _resample(image, target, order=3)
    brain = _resample(brain.astype(np.float32), target, order=1) >= 0.5
    if label is not None:
        if label_resampling == "nearest":
            label = _resample(label, target, order=0)
        else:
            label = (_resample(label.astype(np.float32), target, order=1) >= 0.5).astype(np.uint8)
    return image, brain, label


def _crop_pad_steps(shape: tuple[int, ...], config: PreprocessConfig, case_id: str) -> list[dict[str, Any]]:
    """The centred crop-and-pad steps from `shape`: to `config.shape` if set, then up to multiples of
    `config.divisible_by`; each ``{input_shape, crop, pad}``, as the record keeps it for `invert`."""
    steps = []
    targets: list[tuple[int, ...] | None] = [] if config.shape is None else [config.shape]
    targets.append(None)  # then pad up to a multiple of divisible_by
    k = int(config.divisible_by)
    for target in targets:
        if target is None:
            target = tuple(-(-n // k) * k for n in shape)
            refuse_too_many_voxels(target, f"divisible_by {k}", f" for case {case_id!r}")
        crops, pads = _crop_or_pad_plan(shape, target)
        steps.append({"input_shape": list(shape), "crop": crops, "pad": pads})
        shape = tuple(target)  # what the step makes
    return steps


def _apply_steps(array: np.ndarray, steps: list[dict[str, Any]]) -> np.ndarray:
    for step in steps:
        array = _apply_crop_pad(array, step["crop"], step["pad"])
    return array


def invert(array: np.ndarray, record: Mapping[str, Any], order: int = 0) -> np.ndarray:
    """Map an array on the preprocessed grid back onto the original file's grid.

    Args:
        array: (..., D, H, W) on the grid of `Prepared.image` (leading axes, e.g. channels, are kept).
        record: `Prepared.record`.
        order: interpolation order if a resampling step must be undone (0 for labels, 1 for probabilities).
    Returns:
        array of shape (..., *record["original_shape"]); voxels outside the crop box are 0.
    Raises:
        DataError: the array's spatial shape does not match the record.
    """
    array = np.asarray(array)
    if tuple(array.shape[-3:]) != tuple(record["final_shape"]):
        raise DataError(record.get("image_path") or "prediction",
                        f"array shape {array.shape[-3:]} does not match the preprocessed shape {record['final_shape']}")
    if array.ndim > 3:
        flat = array.reshape(-1, *array.shape[-3:])
        inverted = [invert(a, record, order) for a in flat]
        return np.stack(inverted).reshape(*array.shape[:-3], *record["original_shape"])
    for step in reversed(record["crop_pad_steps"]):
        pads = step["pad"]
        unpadded = array[tuple(slice(b, array.shape[i] - a) for i, (b, a) in enumerate(pads))]
        restored = np.zeros(tuple(step["input_shape"]), dtype=array.dtype)
        restored[tuple(slice(a, b) for a, b in step["crop"])] = unpadded
        array = restored
    before = tuple(record["shape_before_resample"])
    if array.shape != before:
        source = array.astype(np.float32) if order > 0 else array
        array = _resample(source, before, order=order).astype(array.dtype, copy=False)
    out = np.zeros(tuple(record["original_shape"]), dtype=array.dtype)
    out[tuple(slice(a, b) for a, b in record["crop_box"])] = array
    return out


def cache_key(folder: Path, config: PreprocessConfig, read_kwargs: dict) -> str:
    """Hash of the configuration, the reader options and the name, size and mtime of every file in `folder`."""
    stats = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and ".bayesprior_cache" not in path.parts:
            info = path.stat()
            stats.append([str(path.relative_to(folder)), info.st_size, info.st_mtime_ns])
    payload = json.dumps({"version": RECORD_VERSION, "folder": str(folder.resolve()), "config": config.to_dict(),
                          "read": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(read_kwargs.items())},
                          "files": stats}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    """$BAYESPRIOR_CACHE_DIR, else $XDG_CACHE_HOME/bayesprior/preprocessed, else ~/.cache/bayesprior/preprocessed."""
    if os.environ.get("BAYESPRIOR_CACHE_DIR"):
        return Path(os.environ["BAYESPRIOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bayesprior" / "preprocessed"


def _save_prepared(prepared: Prepared, path: Path) -> None:
    arrays = {"image": prepared.image, "record": np.frombuffer(json.dumps(prepared.record).encode(), dtype=np.uint8)}
    if prepared.label is not None:
        arrays["label"] = prepared.label
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            # np.load reads these and the older uncompressed entries
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]  # mypy: a key might be allow_pickle


def _load_prepared(path: Path) -> Prepared:
    """One cached case; a file holding anything but plain arrays (a pickle), or declaring more than
    `CACHE_LIMITS`, is refused, never run or read."""
    try:
        data = load_npz(path, CACHE_LIMITS, DataError)
        record = json.loads(data["record"].tobytes().decode())
        label = data.get("label")
        image = data["image"]
    except DataError as exc:
        raise DataError(path, f"corrupt preprocessing cache entry ({exc.problem})") from None
    except (KeyError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(path, f"corrupt preprocessing cache entry ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict) or not isinstance(record.get("case_id"), str) or image.dtype.kind != "f":
        raise DataError(path, "corrupt preprocessing cache entry (not a preprocessed case)")
    return Prepared(record["case_id"], image, label, record)


def _source_stats(cases: Sequence[Case]) -> dict[str, list[int]]:
    """Size and modification time of every file the cases were read from (they may lie outside the folder)."""
    stats = {}
    for case in cases:
        for path in (case.image_path, case.label_path):
            if path is not None:
                info = Path(path).stat()
                stats[str(Path(path).absolute())] = [info.st_size, info.st_mtime_ns]
    return stats


def _sources_unchanged(stats: Any) -> bool:
    if not isinstance(stats, dict) or not stats:
        return False
    for path, (size, mtime) in stats.items():
        try:
            info = Path(path).stat()
        except OSError:
            return False
        if [info.st_size, info.st_mtime_ns] != [size, mtime]:
            return False
    return True


def prepare_dataset(folder: str | Path, config: PreprocessConfig, cache_dir: str | Path | None | bool = None,
                    allow_outside_paths: bool = False, **read_kwargs: Any) -> list[Prepared]:
    """Read and preprocess every case of a dataset, caching the results on disk.

    Args:
        folder: dataset folder (any registered layout).
        config: preprocessing configuration.
        cache_dir: where to cache; None uses `default_cache_dir()`, False disables caching.
        allow_outside_paths: read files outside `folder` that the dataset names (see `read_dataset`).
        read_kwargs: passed to `read_dataset` (layout, channel, labels, subset, cases).
    Returns:
        the prepared cases, sorted by case id. Dataset statistics the intensity scheme needs (`ct`) are
        computed from these cases and kept in each record's configuration (`recorded_config`). A second call with the same configuration, options and
        unchanged files (those in the folder, and every file the cases were read from) loads them from the
        cache without reading or preprocessing anything.
    Raises:
        DataError, ConfigError: as `read_dataset`.
    """
    folder = check_folder(folder)

    def read() -> list[Case]:
        return read_dataset(folder, allow_outside_paths=allow_outside_paths, **read_kwargs)

    def prepared_from(cases: list[Case]) -> list[Prepared]:
        complete = with_dataset_statistics(config, cases, folder)
        return [preprocess(case, complete) for case in cases]

    if cache_dir is False:
        return prepared_from(read())
    root = default_cache_dir() if cache_dir is None or cache_dir is True else Path(cache_dir)
    entry = root / cache_key(folder, config, read_kwargs)
    index = entry / "index.json"
    if index.is_file():
        try:
            meta = json.loads(index.read_text())
            if _sources_unchanged(meta.get("sources")):
                return [_load_prepared(entry / f"{i:05d}.npz") for i in range(len(meta["cases"]))]
        except (DataError, OSError, ValueError, KeyError, TypeError):
            pass  # a damaged or stale cache is rebuilt, never trusted
    cases = read()
    prepared = prepared_from(cases)
    # the cache is shared by processes: only temporary files no one has touched for an hour are stale
    remove_stale_temp_files(entry, older_than=3600)
    for i, item in enumerate(prepared):
        _save_prepared(item, entry / f"{i:05d}.npz")
    atomic_write_json({"folder": str(folder.resolve()), "config": config.to_dict(),
                       "cases": [p.case_id for p in prepared], "sources": _source_stats(cases)}, index)
    return prepared
