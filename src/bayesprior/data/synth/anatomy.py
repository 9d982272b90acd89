"""Healthy anatomy on the output grid: the MNI152 2009a tissue maps shipped in the nilearn wheel, or a
procedural brain when nilearn is not installed.

The atlas is downsampled once per grid (block averages, then linear interpolation) and cached in memory,
so every case works at the target resolution. nilearn is located with `importlib.util.find_spec` and
never imported (its import pulls in scikit-learn and pandas).
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..nifti import load_nifti

FIELD_OF_VIEW_MM = (168.0, 200.0, 168.0)
ATLAS_FILES = {tissue: f"mni_icbm152_{tissue}_tal_nlin_sym_09a_converted.nii.gz" for tissue in ("t1", "gm", "wm")}
MNI_NOTICE = ("MNI ICBM 2009a template: Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre, "
              "Montreal Neurological Institute, McGill University.")


def atlas_folder() -> Path | None:
    """Folder holding the MNI152 2009a maps inside the installed nilearn, or None."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if all((folder / name).is_file() for name in ATLAS_FILES.values()) else None


@dataclass(frozen=True)
class Grid:
    """Output voxel grid: shape, isotropic spacing (mm) and the RAS affine centred on the brain."""

    shape: tuple[int, int, int]
    spacing: float
    affine: np.ndarray

    @property
    def voxel_volume_ml(self) -> float:
        return self.spacing ** 3 / 1000.0


def make_grid(shape: tuple[int, int, int] | None, spacing: float | None, centre_mm: np.ndarray) -> Grid:
    """Grid from a shape (spacing chosen so the field of view holds the brain) or a spacing (default 2 mm)."""
    if shape is not None:
        spacing = max(fov / n for fov, n in zip(FIELD_OF_VIEW_MM, shape, strict=True))
        nx, ny, nz = (int(n) for n in shape)
    else:
        spacing = float(spacing or 2.0)
        nx, ny, nz = (max(8, int(round(fov / spacing))) for fov in FIELD_OF_VIEW_MM)
    affine = np.eye(4)
    affine[:3, :3] *= spacing
    affine[:3, 3] = np.asarray(centre_mm) - spacing * (np.asarray((nx, ny, nz)) - 1) / 2
    return Grid((nx, ny, nz), float(spacing), affine)


@dataclass
class Anatomy:
    """Tissue maps on a grid (float32 fractions inside the brain mask) and helper maps for pathology.

    Attributes:
        gm, wm, csf: tissue fractions, zero outside `mask`, summing to 1 inside.
        mask_fraction: brain fraction per voxel (partial volume at the brain edge); mask = fraction >= 0.5.
        world: (3, X, Y, Z) world coordinates in mm (MNI space for the atlas).
        source: "mni152-2009a" or "procedural".
    """

    grid: Grid
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask_fraction: np.ndarray
    source: str

    @property
    def mask(self) -> np.ndarray:
        return self.mask_fraction >= 0.5

    @functools.cached_property
    def world(self) -> np.ndarray:
        index = np.indices(self.grid.shape, dtype=np.float32)
        return np.einsum("ij,j...->i...", self.grid.affine[:3, :3].astype(np.float32), index) + \
            self.grid.affine[:3, 3, None, None, None].astype(np.float32)

    @functools.cached_property
    def distance_to_edge_mm(self) -> np.ndarray:
        return ndimage.distance_transform_edt(self.mask) * self.grid.spacing

    @functools.cached_property
    def ventricles(self) -> np.ndarray:
        x, y, z = self.world
        central = (np.abs(x) < 32) & (y > -50) & (y < 30) & (z > -25) & (z < 35)
        return (self.csf > 0.5) & central & (self.distance_to_edge_mm > 12)

    @functools.cached_property
    def distance_to_ventricles_mm(self) -> np.ndarray:
        if not self.ventricles.any():
            return np.full(self.grid.shape, np.inf, dtype=np.float32)
        return ndimage.distance_transform_edt(~self.ventricles) * self.grid.spacing

    @functools.cached_property
    def distance_to_grey_mm(self) -> np.ndarray:
        grey = self.gm > 0.5
        if not grey.any():
            return np.full(self.grid.shape, np.inf, dtype=np.float32)
        return ndimage.distance_transform_edt(~grey) * self.grid.spacing

    @functools.cached_property
    def white(self) -> np.ndarray:
        white = (self.wm > 0.5) & self.mask
        return white if white.any() else (self.wm >= self.wm[self.mask].max() * 0.8) & self.mask


def _block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return volume.astype(np.float32)
    shape = [n // factor * factor for n in volume.shape]
    trimmed = volume[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    return trimmed.reshape(shape[0] // factor, factor, shape[1] // factor, factor, shape[2] // factor,
                           factor).mean(axis=(1, 3, 5))


def _tissue_fractions(gm: np.ndarray, wm: np.ndarray, mask_fraction: np.ndarray):
    mask = mask_fraction >= 0.5
    gm = np.clip(gm, 0, 1) * mask
    wm = np.clip(wm, 0, 1) * mask
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.clip(1 - gm - wm, 0, 1) * mask
    return gm.astype(np.float32), wm.astype(np.float32), csf.astype(np.float32)


@functools.lru_cache(maxsize=2)
def _atlas_1mm(folder: str):
    volumes = {tissue: np.asarray(load_nifti(Path(folder) / name).dataobj) for tissue, name in ATLAS_FILES.items()}
    image = load_nifti(Path(folder) / ATLAS_FILES["t1"])
    brain = volumes["t1"] > 0
    # GM/WM maps hold probability outside the skull-stripped brain; only the brain counts
    gm = volumes["gm"].astype(np.float32) / 255 * brain
    wm = volumes["wm"].astype(np.float32) / 255 * brain
    return brain.astype(np.float32), gm, wm, np.asarray(image.affine, dtype=np.float64)


def atlas_brain_centre() -> np.ndarray:
    """World centre (mm) of the atlas brain bounding box; the MNI origin region for the procedural brain."""
    folder = atlas_folder()
    if folder is None:
        return np.array([0.0, -18.0, 8.0])
    brain, _, _, affine = _atlas_1mm(str(folder))
    box = [np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    centre_index = np.array([(b[0] + b[-1]) / 2 for b in box])
    return affine[:3, :3] @ centre_index + affine[:3, 3]


def _resample_atlas(grid: Grid, folder: Path) -> Anatomy:
    brain, gm, wm, affine = _atlas_1mm(str(folder))
    factor = max(1, int(np.floor(grid.spacing + 1e-6)))
    small_affine = affine.copy()
    small_affine[:3, :3] *= factor
    # a block of `factor` voxels has its centre half a block minus half a voxel past its first voxel
    small_affine[:3, 3] += affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    to_small = np.linalg.inv(small_affine) @ grid.affine
    maps = []
    for volume in (brain, gm, wm):
        small = _block_mean(volume, factor)
        maps.append(ndimage.affine_transform(small, to_small[:3, :3].diagonal(), offset=to_small[:3, 3],
                                             output_shape=grid.shape, order=1, mode="constant", cval=0.0)
                    .astype(np.float32))
    mask_fraction, gm_grid, wm_grid = maps
    safe = np.maximum(mask_fraction, 1e-6)
    # block averages mix in outside zeros at the edge; the fractions are per unit of brain
    gm_f, wm_f, csf_f = _tissue_fractions(gm_grid / safe, wm_grid / safe, mask_fraction)
    return Anatomy(grid, gm_f, wm_f, csf_f, np.clip(mask_fraction, 0, 1), "mni152-2009a")


def _procedural(grid: Grid) -> Anatomy:
    """An ellipsoidal brain with a folded cortical ribbon, sulcal CSF and two lateral ventricles."""
    rng = np.random.default_rng(12345)
    index = np.indices(grid.shape, dtype=np.float32)
    world = np.einsum("ij,j...->i...", grid.affine[:3, :3].astype(np.float32), index) + \
        grid.affine[:3, 3, None, None, None].astype(np.float32)
    x, y, z = world[0], world[1] + 18.0, world[2] - 8.0
    rho = np.sqrt((x / 68) ** 2 + (y / 84) ** 2 + (z / 66) ** 2)
    folds = smooth_folds = ndimage.gaussian_filter(rng.standard_normal(grid.shape).astype(np.float32),
                                                   max(0.6, 3.0 / grid.spacing))
    folds = (smooth_folds - smooth_folds.mean()) / (smooth_folds.std() + 1e-6)
    mask_fraction = np.clip((1.0 - rho) * 68 / grid.spacing + 0.5, 0, 1)
    depth = (1.0 - rho) * 68  # mm below the surface
    gm = np.clip(1.0 - np.abs(depth - 4 - 1.5 * folds) / 4.0, 0, 1)
    sulcal_csf = np.clip(1.0 - np.abs(depth - 1.0 - 2.5 * folds) / 2.0, 0, 1) * (folds > 0.3)
    vents = np.zeros(grid.shape, dtype=np.float32)
    for side in (-1, 1):
        r = np.sqrt(((x - side * 12) / 7) ** 2 + ((y + 5) / 24) ** 2 + ((z - 4) / 9) ** 2)
        vents = np.maximum(vents, np.clip((1 - r) * 7 / grid.spacing + 0.5, 0, 1))
    csf = np.clip(np.maximum(sulcal_csf, vents), 0, 1)
    gm = gm * (1 - csf)
    wm = np.clip(1 - gm - csf, 0, 1)
    gm_f, wm_f, csf_f = _tissue_fractions(gm, wm, mask_fraction)
    return Anatomy(grid, gm_f, wm_f, csf_f, mask_fraction.astype(np.float32), "procedural")


@functools.lru_cache(maxsize=4)
def _anatomy_cached(shape, spacing, procedural: bool) -> Anatomy:
    folder = None if procedural else atlas_folder()
    grid = make_grid(shape, spacing, atlas_brain_centre() if folder is not None else np.array([0.0, -18.0, 8.0]))
    return _procedural(grid) if folder is None else _resample_atlas(grid, folder)


def healthy_anatomy(shape: tuple[int, int, int] | None = None, spacing: float | None = None,
                    procedural: bool = False) -> Anatomy:
    """The template anatomy on the requested grid (cached); procedural if asked or if nilearn is missing."""
    return _anatomy_cached(None if shape is None else tuple(int(n) for n in shape),
                           None if spacing is None else float(spacing), bool(procedural))
