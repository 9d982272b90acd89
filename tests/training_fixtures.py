"""Shared helpers for the training tests: a tiny 3D architecture (registered by the `tiny_architecture`
fixture of conftest.py) and tiny synthetic cases."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bayesprior import hookimpl

TINY = "tiny3d"


class TinyNet(nn.Module):
    """Two resolution levels: a 3x3x3 conv, a stride-2 3x3x3 conv, upsampling and a 1x1 output conv."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, width: int = 4):
        super().__init__()
        self.init_conv = nn.Conv3d(in_channels, width, 3, padding=1)
        self.down = nn.Conv3d(width, width, 3, stride=2, padding=1)
        self.out_conv = nn.Conv3d(2 * width, n_classes, 1)

    def forward(self, x):
        a = F.relu(self.init_conv(x))
        b = F.interpolate(F.relu(self.down(a)), size=a.shape[2:], mode="nearest")
        return self.out_conv(torch.cat([a, b], 1))


class TinyArchitecturePlugin:
    @hookimpl
    def register_architectures(self, register):
        register(TINY, TinyNet, groups=lambda m: {"level0": ["init_conv"], "level1": ["down"]},
                 finetune_layers=["init_conv", "out_conv"], description="tiny test net")


@dataclass
class SimpleCase:
    case_id: str
    image: np.ndarray
    label: np.ndarray | None


def make_cases(n: int, size: int = 16, seed: int = 0) -> list[SimpleCase]:
    """Bright spheres on noise: label = sphere."""
    rng = np.random.default_rng(seed)
    grid = np.indices((size,) * 3).astype(np.float32)
    cases = []
    for i in range(n):
        centre = rng.uniform(size * 0.3, size * 0.7, 3)
        radius = rng.uniform(size * 0.15, size * 0.3)
        label = (((grid - centre[:, None, None, None]) ** 2).sum(0) < radius ** 2).astype(np.uint8)
        image = (label * 1.0 + rng.normal(0, 0.3, label.shape)).astype(np.float32)
        cases.append(SimpleCase(f"case{i:02d}", image, label))
    return cases
