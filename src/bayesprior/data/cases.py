"""One case of a dataset, the label policy, and the checks that an image and its label belong together."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import nibabel
import numpy as np

from ..errors import ConfigError, DataError
from .nifti import read_label_values, read_volume


@dataclass
class Case:
    """One image (one channel) with its optional label, as stored on disk.

    Attributes:
        case_id: identifier from the layout (file stem or patient folder name).
        image: float32 3D array with the voxel axes of the file.
        label: uint8 array of the same shape, binary {0,1} after the label policy; None for test cases.
        affine: 4x4 float64 voxel-to-world matrix of the image.
        header: the image's NIfTI header (for writing predictions like the input).
        image_path, label_path: where they came from.
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray | None
    affine: np.ndarray
    header: nibabel.Nifti1Header
    image_path: Path
    label_path: Path | None


@dataclass(frozen=True)
class CaseFiles:
    """Where one case's image (one channel) and label lie, before anything is read: what a layout's
    ``files`` lists, so that a subset of cases, or one case to predict, costs only its own files.

    Attributes:
        case_id: identifier from the layout (file stem or patient folder name).
        image_path: the image file; `channel_index` picks a channel of a 4D file (None: a 3D file).
        label_path: the label file, or None (test cases, or images to predict).
        allowed_values: label values the dataset declares (None: any non-negative integer).
    """

    case_id: str
    image_path: Path
    label_path: Path | None = None
    channel_index: int | None = None
    allowed_values: tuple[int, ...] | None = None

    def load(self, labels: str | Sequence[int] = "whole") -> Case:
        """Read the files into a `Case` (`load_case`, with the label policy `labels`)."""
        return load_case(self.case_id, self.image_path, self.label_path, channel_index=self.channel_index,
                         labels=labels, allowed_values=self.allowed_values)


def label_policy_values(labels: str | Sequence[int]) -> tuple[int, ...] | None:
    """Validate a label policy: "whole" (None: every value > 0) or a non-empty set of integer values."""
    if isinstance(labels, str):
        if labels != "whole":
            raise ConfigError(f"labels must be 'whole' or a list of label values, got {labels!r}")
        return None
    values = tuple(int(v) for v in labels)
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"labels must list positive label values, got {list(labels)!r}")
    return values


def apply_label_policy(values: np.ndarray, labels: str | Sequence[int]) -> np.ndarray:
    """Binary uint8 foreground: `values > 0` for "whole", else membership in the given values."""
    chosen = label_policy_values(labels)
    if chosen is None:
        return (values > 0).astype(np.uint8)
    return np.isin(values, chosen).astype(np.uint8)


def same_affine(a: np.ndarray, b: np.ndarray) -> bool:
    """True if two voxel-to-world affines agree within a thousandth of a voxel's size (at least 1e-3 mm)."""
    scale = max(1.0, float(np.abs(np.asarray(a)[:3, :3]).max()))
    return bool(np.allclose(a, b, rtol=0, atol=1e-3 * scale))


def check_same_grid(image_path: Path, image_shape: tuple, image_affine: np.ndarray, label_path: Path,
                    label_shape: tuple, label_affine: np.ndarray) -> None:
    """Raise DataError (naming the label file) unless the label lies on the image's voxel grid."""
    if tuple(image_shape) != tuple(label_shape):
        raise DataError(label_path, f"label shape {tuple(label_shape)} does not match image shape "
                                    f"{tuple(image_shape)} of {image_path.name}")
    if not same_affine(image_affine, label_affine):
        raise DataError(label_path, f"label affine differs from the affine of {image_path.name}:\n"
                                    f"label {np.round(label_affine, 4).tolist()}\n"
                                    f"image {np.round(image_affine, 4).tolist()}")


def load_case(case_id: str, image_path: Path, label_path: Path | None, *, channel_index: int | None = None,
              labels: str | Sequence[int] = "whole", allowed_values: Iterable[int] | None = None) -> Case:
    """Read one image (channel `channel_index` of a 4D file if given) and its label into a `Case`.

    Args:
        allowed_values: label values the dataset declares; others raise DataError. None allows any
            non-negative integer.
    Raises:
        DataError: bad files, grid mismatch, unexpected label values.
    """
    image, affine, header = read_volume(image_path, channel=channel_index)
    label = None
    if label_path is not None:
        values, label_affine, _ = read_label_values(label_path)
        check_same_grid(image_path, image.shape, affine, label_path, values.shape, label_affine)
        if allowed_values is not None:
            unexpected = sorted(set(np.unique(values).tolist()) - set(int(v) for v in allowed_values))
            if unexpected:
                raise DataError(label_path, f"unexpected label values {unexpected}; the dataset declares "
                                            f"{sorted(set(int(v) for v in allowed_values))}")
        label = apply_label_policy(values, labels)
    return Case(case_id, image, label, affine, header, Path(image_path),
                None if label_path is None else Path(label_path))


def resolve_channel(channel: str | int | None, names: Sequence[str], where: Path) -> int:
    """Index of `channel` (a name, case-insensitive, or an index) among `names`.

    None is allowed only when there is exactly one channel.
    Raises:
        ConfigError: unknown name, index out of range, or no choice among several channels.
    """
    listing = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    if channel is None:
        if len(names) == 1:
            return 0
        raise ConfigError(f"{where}: several channels ({listing}); choose one by name or index with "
                          f"--channel (e.g. --channel {names[0]}), or channel= in Python")
    if isinstance(channel, (int, np.integer)) and not isinstance(channel, bool):
        if 0 <= int(channel) < len(names):
            return int(channel)
        raise ConfigError(f"{where}: channel index {channel} out of range ({listing})")
    text = str(channel).strip()
    if text.isdigit() and int(text) < len(names):
        return int(text)
    lowered = [n.lower() for n in names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    raise ConfigError(f"{where}: no channel named {channel!r} ({listing})")
