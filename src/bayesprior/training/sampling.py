"""What one training step sees: whole volumes or random patches, optionally augmented.

Two ways to fill an epoch:
- whole volumes (the paper's setting): every case once per epoch in a seeded order, zero-padded to a
  common shape divisible by `pad_multiple`;
- patches (`patch=(D, H, W)`): random crops, a share of them (`foreground_fraction`, nnU-Net's 1/3)
  centred on a foreground voxel, and `steps_per_epoch` steps per epoch, so a tiny dataset still gives
  many distinct optimiser steps.

Augmentation (`augment=True`) mirrors each spatial axis with probability 1/2 and scales intensities
by a factor in [0.9, 1.1], as nnU-Net's default mirroring and multiplicative brightness.

All choices come from a generator seeded by (seed, epoch), never from the global random state, so a
resumed run sees exactly the batches of an uninterrupted one, and a patch run whose patch is the
whole volume is identical to a whole-volume run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigError
from .distributed import DistContext, global_epoch_batches

#: nnU-Net's share of patches forced to contain foreground
FOREGROUND_FRACTION = 1 / 3
INTENSITY_RANGE = (0.9, 1.1)
#: foreground voxels remembered per case to centre patches on (nnU-Net samples 10,000)
_MAX_FOREGROUND_VOXELS = 10_000


@dataclass(frozen=True)
class SamplingConfig:
    """How training batches are drawn (see the module docstring).

    Attributes:
        batch_size: the global batch size.
        pad_multiple: whole volumes are zero-padded to a shape divisible by this.
        patch: patch size (D, H, W), or None for whole volumes.
        foreground_fraction: share of patches centred on a foreground voxel.
        steps_per_epoch: optimiser steps per epoch; None = one pass over the cases.
        augment: random mirroring and intensity scaling.
    """

    batch_size: int = 2
    pad_multiple: int = 8
    patch: tuple[int, ...] | None = None
    foreground_fraction: float = FOREGROUND_FRACTION
    steps_per_epoch: int | None = None
    augment: bool = False

    def __post_init__(self) -> None:
        if self.patch is not None:
            patch = tuple(int(p) for p in self.patch)
            if len(patch) != 3 or any(p < 1 for p in patch):
                raise ConfigError(f"patch must be three positive sizes D,H,W, got {self.patch!r}")
            if any(p % self.pad_multiple for p in patch):
                raise ConfigError(f"patch {patch} must be divisible by {self.pad_multiple} on every axis "
                                  "(the network halves the resolution three times)")
            object.__setattr__(self, "patch", patch)
        if not 0 <= self.foreground_fraction <= 1:
            raise ConfigError(f"foreground_fraction must be in [0, 1], got {self.foreground_fraction!r}")
        if self.steps_per_epoch is not None and int(self.steps_per_epoch) < 1:
            raise ConfigError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch!r}")


class BatchSampler:
    """Yields this process's (images (B, 1, D, H, W), labels (B, D, H, W)) for every step of an epoch."""

    def __init__(self, cases: Sequence[Any], config: SamplingConfig, seed: int, device: torch.device,
                 ctx: DistContext = DistContext()):
        self.cases = cases
        self.config = config
        self.seed = seed
        self.device = device
        self.ctx = ctx
        self._foreground: dict[int, np.ndarray] = {}

    def steps(self) -> int:
        """Optimiser steps per epoch."""
        c = self.config
        if c.steps_per_epoch is not None:
            return int(c.steps_per_epoch)
        return math.ceil(len(self.cases) / c.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        c = self.config
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        batches = self._batches(epoch)
        position = 0  # index of the patch within the epoch (global), for the foreground share
        for batch in batches:
            chosen = []
            for k, index in enumerate(batch):
                image, label = as_arrays(self.cases[index])
                if c.patch is not None:
                    force = _forced(position + k, c.foreground_fraction)
                    corner = self.patch_corner(index, label, rng, force)
                    image, label = crop(image, label, corner, c.patch)
                if c.augment:
                    image, label = augment(image, label, rng)
                chosen.append((image, label))
            position += len(batch)
            # every process draws the same numbers for the whole global batch, then keeps its share
            mine = chosen[self.ctx.rank::self.ctx.world_size]
            yield stack(mine, c.pad_multiple if c.patch is None else 1, self.device)

    def _batches(self, epoch: int) -> list[list[int]]:
        c = self.config
        if c.steps_per_epoch is None:
            return global_epoch_batches(len(self.cases), c.batch_size, epoch, self.seed, self.ctx)
        # enough seeded permutations to fill the epoch, so every case is drawn equally often
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        needed = c.steps_per_epoch * c.batch_size
        order: list[int] = []
        while len(order) < needed:
            order += torch.randperm(len(self.cases), generator=generator).tolist()
        return [order[i:i + c.batch_size] for i in range(0, needed, c.batch_size)]

    def patch_corner(self, index: int, label: np.ndarray, rng: np.random.Generator,
                     force_foreground: bool) -> tuple[int, ...]:
        """The patch's first voxel: random, or centred on a random foreground voxel (kept inside the volume)."""
        patch = self.config.patch
        if patch is None:
            raise ConfigError("patch_corner needs a sampler of patches (SamplingConfig.patch), this one gives "
                              "whole volumes")
        spatial = label.shape
        if force_foreground:
            voxels = self._foreground_voxels(index, label)
            if len(voxels):
                centre = voxels[rng.integers(len(voxels))]
                return tuple(int(np.clip(centre[d] - patch[d] // 2, 0, max(spatial[d] - patch[d], 0)))
                             for d in range(3))
        return tuple(int(rng.integers(max(spatial[d] - patch[d], 0) + 1)) for d in range(3))

    def _foreground_voxels(self, index: int, label: np.ndarray) -> np.ndarray:
        if index not in self._foreground:
            voxels = np.argwhere(label > 0)
            if len(voxels) > _MAX_FOREGROUND_VOXELS:  # a fixed subsample keeps memory bounded
                keep = np.random.default_rng(index).choice(len(voxels), _MAX_FOREGROUND_VOXELS, replace=False)
                voxels = voxels[np.sort(keep)]
            self._foreground[index] = voxels
        return self._foreground[index]


def _forced(position: int, fraction: float) -> bool:
    # exactly `fraction` of the patches of an epoch (to rounding), spread evenly over it
    return math.floor((position + 1) * fraction) > math.floor(position * fraction)


def as_arrays(case: Any) -> tuple[np.ndarray, np.ndarray]:
    """A case's image as float32 and its label as a 0/1 int64 array."""
    return (np.asarray(case.image, dtype=np.float32), (np.asarray(case.label) > 0).astype(np.int64))


def crop(image: np.ndarray, label: np.ndarray, corner: Sequence[int], patch: Sequence[int]
         ) -> tuple[np.ndarray, np.ndarray]:
    """The patch at `corner`, zero-padded at the far end where the volume is smaller than the patch."""
    region = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
    image, label = image[region], label[region]
    pad = [(0, p - s) for p, s in zip(patch, image.shape, strict=True)]
    if any(after for _, after in pad):
        image, label = np.pad(image, pad), np.pad(label, pad)
    return image, label


def augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mirror each axis with probability 1/2 and scale intensities by a factor in `INTENSITY_RANGE`."""
    flips = tuple(d for d in range(3) if rng.random() < 0.5)
    if flips:
        image, label = np.flip(image, flips), np.flip(label, flips)
    return image * np.float32(rng.uniform(*INTENSITY_RANGE)), label


def stack(pairs: Sequence[tuple[np.ndarray, np.ndarray]], multiple: int, device: torch.device
          ) -> tuple[Tensor, Tensor]:
    """(B, 1, D, H, W) images and (B, D, H, W) labels, zero-padded at the far end to a shape divisible by `multiple`."""
    shape = tuple(int(math.ceil(max(p[0].shape[d] for p in pairs) / multiple) * multiple) for d in range(3))
    images = torch.zeros((len(pairs), 1) + shape, dtype=torch.float32)
    labels = torch.zeros((len(pairs),) + shape, dtype=torch.long)
    for i, (image, label) in enumerate(pairs):
        d, h, w = image.shape
        images[i, 0, :d, :h, :w] = torch.from_numpy(np.ascontiguousarray(image))
        labels[i, :d, :h, :w] = torch.from_numpy(np.ascontiguousarray(label))
    return images.to(device), labels.to(device)
