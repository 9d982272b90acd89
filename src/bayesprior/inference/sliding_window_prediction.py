"""Sliding-window inference with a Gaussian importance map, and whole-volume prediction.

`sliding_window` follows MONAI's ``sliding_window_inference(mode="gaussian")``: an image smaller
than the window is padded symmetrically; windows start every ``int(roi * (1 - overlap))`` voxels
(one window when roi equals the image size), the last one shifted back to end at the border; each
window's output is weighted by a separable Gaussian (sigma = sigma_scale * roi, centred at
(roi - 1) / 2, clamped below at max(min, 1e-3)), and the result is sum(w * out) / sum(w).
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError


def gaussian_importance_map(roi: Sequence[int], sigma_scale: float = 0.125,
                            device: torch.device | str = "cpu") -> Tensor:
    """Separable Gaussian weights of shape `roi` (peak near 1, floor max(min, 1e-3))."""
    weights = torch.ones((), dtype=torch.float32, device=device)  # times g is g exactly
    for size in roi:
        x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
        g = torch.exp(-(x ** 2) / (2 * (sigma_scale * size) ** 2))
        weights = weights.unsqueeze(-1) * g
    floor = max(float(weights.min()), 1e-3)
    return weights.clamp(min=floor)


def window_starts(image_size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis (the last one shifted back to the border)."""
    if roi >= image_size:
        return [0]
    step = max(int(roi * (1 - overlap)), 1)
    starts, start = [], 0
    while True:
        starts.append(min(start, image_size - roi))
        if start + roi >= image_size:
            return starts
        start += step


def sliding_window(inputs: Tensor, roi: Sequence[int], predictor: Callable[[Tensor], Tensor],
                   overlap: float = 0.5, sigma_scale: float = 0.125, batch_size: int = 1) -> Tensor:
    """Predict (B, C_in, *spatial) window by window; return (B, C_out, *spatial) blended outputs.

    Args:
        inputs: the image batch.
        roi: window size per spatial axis.
        predictor: maps a batch of windows to outputs of the same spatial size.
        overlap: fraction of the window shared by neighbours, in [0, 1).
        sigma_scale: sigma of the Gaussian weights as a fraction of the window.
        batch_size: windows per predictor call.
    Raises:
        ConfigError: a window of the wrong dimension or an overlap outside [0, 1).
    """
    spatial = tuple(inputs.shape[2:])
    roi = tuple(int(r) for r in roi)
    if len(roi) != len(spatial):
        raise ConfigError(f"roi {roi} has {len(roi)} axes, the image {len(spatial)}")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}")
    pads, padded = [], []
    for size, r in zip(spatial, roi, strict=True):
        diff = max(r - size, 0)
        pads.append((diff // 2, diff - diff // 2))
        padded.append(max(size, r))
    if any(sum(p) for p in pads):
        inputs = F.pad(inputs, [v for p in reversed(pads) for v in p])
    weight_map = gaussian_importance_map(roi, sigma_scale, inputs.device)
    axes = [window_starts(size, r, overlap) for size, r in zip(padded, roi, strict=True)]
    corners = [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]] if len(roi) == 3 else \
        _product(axes)
    weights = torch.zeros(tuple(padded), dtype=torch.float32, device=inputs.device)
    output: Tensor | None = None  # its number of classes is known from the first windows' prediction
    for first in range(0, len(corners), batch_size):
        chunk = corners[first:first + batch_size]
        windows = []
        for b in range(inputs.shape[0]):
            for corner in chunk:
                windows.append(inputs[(b, slice(None)) + _slices(corner, roi)])
        predicted = predictor(torch.stack(windows))
        if output is None:
            output = torch.zeros((inputs.shape[0], predicted.shape[1]) + tuple(padded),
                                 dtype=torch.float32, device=inputs.device)
        predicted = predicted.float().view(inputs.shape[0], len(chunk), *predicted.shape[1:])
        for j, corner in enumerate(chunk):
            region = _slices(corner, roi)
            output[(slice(None), slice(None)) + region] += predicted[:, j] * weight_map
            weights[region] += weight_map
    assert output is not None  # every axis has a window start (`window_starts`), so the loop ran
    output = output / weights
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(pads, spatial, strict=True))
    return output[(slice(None), slice(None)) + crop]


def _slices(corner: Sequence[int], roi: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(c, c + r) for c, r in zip(corner, roi, strict=True))


def _product(axes: list[list[int]]) -> list[tuple[int, ...]]:
    out: list[tuple[int, ...]] = [()]
    for starts in axes:
        out = [prefix + (s,) for prefix in out for s in starts]
    return out


def pad_to_multiple(x: Tensor, multiple: int = 8,
                    minimum: Sequence[int] | None = None) -> tuple[Tensor, tuple[int, ...]]:
    """Zero-pad the spatial axes of (B, C, *spatial) at the far end to multiples of `multiple`, and to at
    least `minimum` per axis when given."""
    spatial = tuple(x.shape[2:])
    floor = tuple(minimum) if minimum is not None else (0,) * len(spatial)
    target = [max(int(math.ceil(s / multiple) * multiple), int(math.ceil(m / multiple) * multiple))
              for s, m in zip(spatial, floor, strict=True)]
    pad = []
    for s, t in zip(reversed(spatial), reversed(target), strict=True):
        pad += [0, t - s]
    return (F.pad(x, pad) if any(pad) else x), spatial


def predict_probabilities(predictor: Callable[[Tensor], Tensor], image: Tensor,
                          roi: Sequence[int] = (40, 48, 40), overlap: float = 0.5,
                          multiple: int = 8, min_size: Sequence[int] | None = None) -> Tensor:
    """Class probabilities (1, C, *spatial) for one image (1, 1, *spatial).

    The whole volume (padded to multiples of `multiple`, and up to the network's `min_size` per axis,
    then cropped back) when it fits inside `roi`, else the sliding window; `predictor` maps an input
    batch to probabilities.
    """
    if any(r % multiple for r in roi):
        raise ConfigError(f"roi {tuple(roi)} must be divisible by {multiple} on every axis")
    spatial = tuple(image.shape[2:])
    if all(s <= r for s, r in zip(spatial, roi, strict=True)):
        padded, _ = pad_to_multiple(image, multiple, min_size)
        out = predictor(padded)
        return out[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]
    # axes shorter than the window are padded by the sliding window itself to the roi (a multiple)
    return sliding_window(image, roi, predictor, overlap=overlap)
