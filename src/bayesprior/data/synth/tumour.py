"""Glioma-like tumours: a deformed core in white matter with optional necrosis and an enhancing rim,
edema spreading preferentially along white matter, and the displacement field of the mass effect.
Labels follow BRATS: 1 necrotic / non-enhancing core, 2 edema, 4 enhancing tumour."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy
from .fields import random_rotation, smooth_noise

CLASSES = ("necrosis", "solid", "rim", "edema")
BRATS_LABEL = {"necrosis": 1, "solid": 1, "rim": 4, "edema": 2}


def _lowest(values: np.ndarray, allowed: np.ndarray, count: int) -> np.ndarray:
    """Mask of the `count` allowed voxels with the lowest values."""
    flat = np.flatnonzero(allowed)
    count = int(np.clip(count, 1, len(flat)))
    chosen = flat[np.argpartition(values.ravel()[flat], count - 1)[:count]]
    mask = np.zeros(values.size, dtype=bool)
    mask[chosen] = True
    return mask.reshape(values.shape)


def geodesic_arrival(seed: np.ndarray, allowed: np.ndarray, step: np.ndarray, sweeps: int = 4) -> np.ndarray:
    """Arrival time of a front leaving `seed` through `allowed` voxels, each voxel entered costing `step`.

    Fast sweeping: scans along each axis in both directions, so a front crosses the volume in one sweep;
    a few sweeps settle paths that turn corners. Unreached voxels are +inf.
    """
    arrival = np.full(seed.shape, np.inf, dtype=np.float32)
    arrival[seed] = 0.0
    passable = allowed | seed
    for _ in range(sweeps):
        before = arrival.copy()
        for axis in range(3):
            times, costs, open_ = (np.moveaxis(a, axis, 0) for a in (arrival, step, passable))
            n = times.shape[0]
            for order in (range(1, n), range(n - 2, -1, -1)):
                delta = 1 if order.step == 1 else -1
                for i in order:
                    candidate = times[i - delta] + costs[i]
                    np.minimum(times[i], np.where(open_[i], candidate, np.inf), out=times[i])
        if np.array_equal(before, arrival):
            break
    return arrival


def draw_tumour(anatomy: Anatomy, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Tumour class fractions (atlas grid), the tumour centre (voxel coordinates) and manifest parameters."""
    grid = anatomy.grid
    spacing, voxel_ml = grid.spacing, grid.voxel_volume_ml
    z_world = anatomy.world[2]
    pool = np.argwhere(anatomy.white & (anatomy.distance_to_edge_mm >= 15) & (z_world > -15))
    if not len(pool):
        pool = np.argwhere(anatomy.white) if anatomy.white.any() else np.argwhere(anatomy.mask)
    centre = pool[rng.integers(len(pool))] + rng.uniform(-0.5, 0.5, 3)
    whole_ml = float(rng.uniform(20, 150))
    core_ratio = float(rng.uniform(0.2, 0.6))
    core_ml = whole_ml * core_ratio
    core_radius = (3 * core_ml * 1000 / (4 * np.pi)) ** (1 / 3)

    offsets = (np.indices(grid.shape, dtype=np.float32) - centre[:, None, None, None].astype(np.float32)) * spacing
    rotation = random_rotation(rng).astype(np.float32)
    radii = core_radius * rng.uniform(0.75, 1.25, 3)
    local = np.einsum("ji,j...->i...", rotation, offsets)
    shape_noise = smooth_noise(grid.shape, max(1.0, core_radius / 2 / spacing), rng)
    # exp keeps the bumpy radius positive however far the Gaussian noise strays
    phi = np.sqrt(sum((local[i] / radii[i]) ** 2 for i in range(3))) * np.exp(0.22 * shape_noise)
    inside = anatomy.mask & (anatomy.csf < 0.7)
    core = _lowest(phi, inside, int(round(core_ml / voxel_ml)))
    threshold = float(phi[core].max())

    necrotic = bool(rng.random() < 0.7)
    necrosis_scale = float(rng.uniform(0.3, 0.7))
    rim_mm = max(float(rng.uniform(2, 5)), spacing)
    necrosis = core & (phi <= threshold * necrosis_scale) if necrotic else np.zeros_like(core)
    inner = ndimage.binary_erosion(core, iterations=max(1, int(round(rim_mm / spacing))))
    rim = core & ~inner & ~necrosis
    solid = core & ~rim & ~necrosis

    # edema: grows from the core along a geodesic front that is faster in white matter and blocked by CSF
    edema_allowed = anatomy.mask & ~core & (anatomy.csf < 0.5)
    wanted = int(round((whole_ml - core_ml) / voxel_ml))
    conductance = 0.35 + 0.65 * ndimage.gaussian_filter(anatomy.wm, 0.7)
    step = (spacing / conductance) * np.exp(0.15 * smooth_noise(grid.shape, max(1.0, 6 / spacing), rng))
    arrival = geodesic_arrival(core, edema_allowed, step)
    edema = _lowest(arrival, edema_allowed & np.isfinite(arrival), wanted) if wanted > 0 else np.zeros_like(core)
    fractions = {}
    for name, hard in zip(CLASSES, (necrosis, solid, rim, edema), strict=True):
        fractions[name] = ndimage.gaussian_filter(hard.astype(np.float32), 0.5) * anatomy.mask
    total = sum(fractions.values())
    over = total > 1
    for name in CLASSES:
        fractions[name][over] /= total[over]

    mass_mm = float(min(rng.uniform(3, 8), 0.5 * core_radius))
    params = {
        "centre_mm": (grid.affine[:3, :3] @ centre + grid.affine[:3, 3]).round(2).tolist(),
        "whole_tumour_target_ml": round(whole_ml, 2), "core_ratio": round(core_ratio, 3),
        "core_radius_mm": round(core_radius, 2), "core_radii_mm": radii.round(2).tolist(),
        "necrosis": necrotic, "necrosis_scale": round(necrosis_scale, 3) if necrotic else None,
        "rim_thickness_mm": round(rim_mm, 2), "mass_effect_mm": round(mass_mm, 2),
        "mass_effect_sigma_mm": round(core_radius, 2),
    }
    return fractions, centre, params


def mass_effect_shift(coordinates: np.ndarray, centre: np.ndarray, amplitude_mm: float, sigma_mm: float,
                      spacing: float) -> np.ndarray:
    """Atlas coordinates from which the pushed anatomy is sampled.

    The anatomy at distance r from the centre moves outwards by a (r/s) exp(1/2 - r^2/2s^2) (peak a at r=s);
    with a <= s/2 the map stays one-to-one, so nothing folds over.
    """
    delta = (coordinates - centre[:, None, None, None].astype(np.float32)) * spacing
    r = np.sqrt((delta ** 2).sum(axis=0)) + 1e-6
    push = amplitude_mm * (r / sigma_mm) * np.exp(0.5 - r ** 2 / (2 * sigma_mm ** 2))
    return coordinates - delta / r * (push / spacing)
