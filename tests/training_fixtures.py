"""Shared helpers for the training tests: a tiny 3D architecture (registered by the `tiny_architecture`
fixture of conftest.py) and tiny synthetic cases."""
from __future__ import annotations

import json
from dataclasses import dataclass

import nibabel as nib
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


def oblique_lps_affine():
    """An oblique, LPS-flipped, anisotropic affine: predictions must keep exactly this."""
    angle = np.deg2rad(17)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ rotation @ np.diag([1.1, 0.9, 1.3])
    affine[:3, 3] = [12.5, -30.25, 7.0]
    return affine


def write_nnunet_dataset(root, n=4, size=16):
    """`n` cases of `make_cases` as an nnU-Net v2 dataset under `root`; returns the images' affine."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = oblique_lps_affine()
    for case in make_cases(n, size=size):
        image = case.image + 1.5  # non-zero everywhere: the brain crop keeps the whole volume
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), root / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        nib.save(nib.Nifti1Image(case.label, affine), root / "labelsTr" / f"{case.case_id}.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T2"}, "labels": {"background": 0, "tumour": 1},
        "numTraining": n, "file_ending": ".nii.gz"}))
    return affine
