"""MS-like white-matter lesions: ovoids, mostly periventricular (long axis away from the ventricle
wall, like Dawson's fingers), some juxtacortical, deep and infratentorial."""
from __future__ import annotations

import numpy as np

from .anatomy import Anatomy
from .fields import random_rotation

CATEGORIES = ("periventricular", "juxtacortical", "deep", "infratentorial")
CATEGORY_WEIGHTS = (0.55, 0.25, 0.10, 0.10)


def _candidates(anatomy: Anatomy) -> dict[str, np.ndarray]:
    white = anatomy.white
    x, y, z = anatomy.world
    periventricular = white & (anatomy.distance_to_ventricles_mm <= 10)
    juxtacortical = white & (anatomy.distance_to_grey_mm <= 5) & ~periventricular
    infratentorial = white & (z < -20) & (y < -30)
    deep = white & ~periventricular & ~juxtacortical & ~infratentorial
    return {name: np.argwhere(m) for name, m in zip(CATEGORIES, (periventricular, juxtacortical, deep, infratentorial), strict=True)}


def _long_axis(anatomy: Anatomy, centre: np.ndarray, category: str, rng: np.random.Generator) -> np.ndarray:
    if category == "periventricular":
        distance = anatomy.distance_to_ventricles_mm
        i, j, k = np.clip(np.round(centre).astype(int), 1, np.array(distance.shape) - 2)
        gradient = np.array([distance[i + 1, j, k] - distance[i - 1, j, k], distance[i, j + 1, k] - distance[i, j - 1, k],
                             distance[i, j, k + 1] - distance[i, j, k - 1]], dtype=float)
        if np.isfinite(gradient).all() and np.linalg.norm(gradient) > 0:
            return gradient / np.linalg.norm(gradient)
    return random_rotation(rng)[:, 0]


def draw_lesions(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Lesion fraction map, per-voxel lesion contrast (x WM signal) and the lesion list for the manifest."""
    shape, spacing = anatomy.grid.shape, anatomy.grid.spacing
    fraction = np.zeros(shape, dtype=np.float32)
    contrast = np.ones(shape, dtype=np.float32)
    candidates = _candidates(anatomy)
    available = [c for c in CATEGORIES if len(candidates[c])]
    if not available:
        candidates["deep"] = np.argwhere(anatomy.mask)
        available = ["deep"]
    weights = np.array([CATEGORY_WEIGHTS[CATEGORIES.index(c)] for c in available])
    rate = rng.uniform(5, 30)
    count = int(np.clip(rng.poisson(rate), 5, 30))
    lesions = []
    for _ in range(count):
        category = available[rng.choice(len(available), p=weights / weights.sum())]
        pool = candidates[category]
        centre = pool[rng.integers(len(pool))] + rng.uniform(-0.5, 0.5, 3)
        diameter = float(np.clip(rng.lognormal(np.log(5.0), 0.5), 3.0, 15.0))
        # a lesion narrower than two voxels would vanish in partial volume on a coarse grid
        drawn_diameter = max(diameter, 2.0 * spacing)
        ratio = rng.uniform(1.5, 2.5)
        radius = drawn_diameter / 2
        long_semi, short_semi = radius * ratio ** (2 / 3), radius * ratio ** (-1 / 3)
        axis = _long_axis(anatomy, centre, category, rng)
        half = int(np.ceil(long_semi / spacing)) + 2
        low = np.maximum(np.floor(centre).astype(int) - half, 0)
        high = np.minimum(np.floor(centre).astype(int) + half + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        offsets = (np.indices(high - low, dtype=np.float32) + low[:, None, None, None] - centre[:, None, None, None]) * spacing
        along = np.einsum("i,i...->...", axis.astype(np.float32), offsets)
        across_sq = np.maximum((offsets ** 2).sum(axis=0) - along ** 2, 0)
        rho = np.sqrt(along ** 2 / long_semi ** 2 + across_sq / short_semi ** 2)
        # partial volume: a ramp about one voxel wide across the ovoid surface
        part = np.clip(0.5 + (1 - rho) * short_semi / spacing, 0, 1) * (1 - anatomy.csf[box]) * anatomy.mask[box]
        lesion_contrast = rng.uniform(1.8, 2.6)
        stronger = part > fraction[box]
        contrast[box][stronger] = lesion_contrast
        fraction[box] = np.maximum(fraction[box], part)
        lesions.append({"category": category, "centre_mm": (anatomy.grid.affine[:3, :3] @ centre
                                                            + anatomy.grid.affine[:3, 3]).round(2).tolist(),
                        "diameter_mm": round(diameter, 2), "drawn_diameter_mm": round(drawn_diameter, 2),
                        "axis_ratio": round(ratio, 3), "contrast_vs_wm": round(lesion_contrast, 3)})
    return fraction, contrast, lesions
