"""Random smooth fields: correlated noise, elastic displacements, polynomial bias fields."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _interpolation_matrix(n_out: int, n_coarse: int, width: float) -> np.ndarray:
    """(n_out, n_coarse) Gaussian-kernel weights from coarse control points to output voxels."""
    out = np.linspace(0.0, n_coarse - 1.0, n_out, dtype=np.float32)[:, None]
    points = np.arange(n_coarse, dtype=np.float32)[None, :]
    return np.exp(-0.5 * ((out - points) / np.float32(width)) ** 2)


def smooth_noise(shape: tuple[int, ...], correlation_voxels: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise correlated over about `correlation_voxels`, float32 of `shape`.

    Large correlations are drawn on a coarse grid of control points and interpolated with separable
    Gaussian weights (three small matrix products), far cheaper than filtering a full-size volume.
    """
    correlation_voxels = max(float(correlation_voxels), 0.5)
    if correlation_voxels <= 1.5:
        noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), correlation_voxels * 0.5)
    else:
        coarse = tuple(max(3, int(np.ceil(n / correlation_voxels)) + 2) for n in shape)
        grid = rng.standard_normal(coarse).astype(np.float32)
        wx, wy, wz = (_interpolation_matrix(n, c, 0.7) for n, c in zip(shape, coarse, strict=True))
        # contract z, then y, then x, keeping every intermediate contiguous for BLAS
        along_z = grid @ wz.T                                     # (cx, cy, Z)
        along_y = np.matmul(wy, along_z)                          # (cx, Y, Z)
        noise = (wx @ along_y.reshape(coarse[0], -1)).reshape(shape)
    std = float(noise.std())
    return ((noise - noise.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z by the given angles in degrees."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, half_range: float, mask: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field exp(cubic polynomial), scaled so it spans 1 -/+ `half_range` in the mask."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij", sparse=True)
    log_field = np.zeros(shape, dtype=np.float32)
    for i in range(4):
        for j in range(4 - i):
            for k in range(4 - i - j):
                if i + j + k:
                    log_field = log_field + np.float32(rng.uniform(-0.3, 0.3)) * (x ** i) * (y ** j) * (z ** k)
    inside = log_field[mask] if mask.any() else log_field.ravel()
    log_field -= np.float32(inside.mean())
    spread = float(np.abs(inside - inside.mean()).max()) or 1.0
    return np.exp(log_field * np.float32(np.log1p(half_range) / spread)).astype(np.float32)
