"""One synthetic subject: deformed template anatomy, pathology, and the image formation chain
(signal equations, texture, PSF blur, bias field, Rician noise, skull-stripped int16)."""
from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ...errors import ConfigError
from .anatomy import Anatomy, healthy_anatomy
from .fields import bias_field, rotation_matrix, smooth_noise
from .ms import draw_lesions
from .signal import rician, tissue_signals
from .tumour import BRATS_LABEL, CLASSES, draw_tumour, mass_effect_shift

GENERATOR_VERSION = "bayesprior-synth/1"
KINDS = {"ms": "FLAIR", "tumour": "T2"}
# tumour classes relative to WM (T2) or to WM (FLAIR); necrosis relative to CSF in T2 (as bright)
TUMOUR_CONTRAST = {
    "T2": {"edema": (1.9, 2.4), "solid": (1.6, 2.0), "rim": (1.5, 1.9), "necrosis": (0.9, 1.05)},
    "FLAIR": {"edema": (1.8, 2.3), "solid": (1.5, 1.9), "rim": (1.4, 1.8), "necrosis": (0.8, 1.2)},
}


@dataclass
class SyntheticCase:
    """Images by sequence name (int16), the label (uint8), the affine and the generator's parameters."""

    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray
    manifest: dict = field(default_factory=dict)


def case_seed(seed: int, kind: str, index: int) -> np.random.SeedSequence:
    """Seed of one case from the base seed, the kind and the case index (independent of other cases)."""
    return np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(kind.encode()), int(index)])


def _subject_coordinates(anatomy: Anatomy, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Atlas voxel coordinates sampled by every output voxel: random affine plus smooth elastic field."""
    shape, spacing = anatomy.grid.shape, anatomy.grid.spacing
    angles = rng.uniform(-6, 6, 3)
    scales = rng.uniform(0.93, 1.05, 3)
    translation_mm = rng.uniform(-3, 3, 3)
    elastic_mm = rng.uniform(1.5, 3.0)
    matrix = (rotation_matrix(angles).T / scales[:, None]).astype(np.float32)
    centre = (np.asarray(shape, dtype=np.float32) - 1) / 2
    index = np.indices(shape, dtype=np.float32) - centre[:, None, None, None]
    coords = np.einsum("ij,j...->i...", matrix, index) + (centre + translation_mm / spacing)[:, None, None, None]
    correlation = max(1.0, 30.0 / spacing)  # control points about 3 cm apart
    for axis in range(3):
        coords[axis] += smooth_noise(shape, correlation, rng) * np.float32(elastic_mm / spacing)
    params = {"rotation_deg": angles.round(3).tolist(), "scale": scales.round(4).tolist(),
              "translation_mm": translation_mm.round(3).tolist(), "elastic_sd_mm": round(float(elastic_mm), 3)}
    return coords.astype(np.float32), params


def _warp(volume: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0, prefilter=False)


def _form_image(sequence: str, healthy: dict[str, np.ndarray], pathology_terms, mask_fraction: np.ndarray,
                rng: np.random.Generator, kind: str, spacing: float,
                tumour_texture: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Image of one sequence; `pathology_terms(signals, params)` gives [(fraction, signal)] for the
    pathology, relative to this subject's own tissue signals."""
    signals, params = tissue_signals(sequence, rng)
    pathology = pathology_terms(signals, params)
    image = sum(healthy[t] * np.float32(signals[t]) for t in ("csf", "gm", "wm"))
    pathology_total = sum((f for f, _ in pathology), np.zeros_like(image))
    image = image * (1 - pathology_total) + sum((f * s for f, s in pathology), np.zeros_like(image))
    texture = rng.uniform(0.02, 0.04)
    image *= 1 + np.float32(texture) * smooth_noise(image.shape, max(0.6, 1.5 / spacing), rng)
    if tumour_texture is not None:
        image *= 1 + np.float32(0.1) * tumour_texture * pathology_total
    image *= mask_fraction
    sigma_z = 0.5
    if kind == "ms":
        # MS scans were thick-slice acquisitions: extra blur along z (FWHM 3-5 mm)
        slice_fwhm = rng.uniform(3, 5)
        sigma_z = float(np.hypot(0.5, slice_fwhm / 2.355 / spacing))
        params["slice_fwhm_mm"] = round(float(slice_fwhm), 3)
    image = ndimage.gaussian_filter(image, (0.5, 0.5, sigma_z))
    mask = mask_fraction >= 0.5
    inu = rng.uniform(0.1, 0.2)
    image *= bias_field(image.shape, rng, inu, mask)
    reference = signals["wm"] if sequence == "FLAIR" else signals["csf"]
    noise_fraction = rng.uniform(0.015, 0.035) if sequence == "FLAIR" else rng.uniform(0.008, 0.02)
    image = rician(image, float(noise_fraction * reference), rng)
    image[~mask] = 0
    target = rng.uniform(1000, 3000)
    high = float(np.percentile(image[mask], 99)) if mask.any() else 1.0
    stored = np.clip(np.rint(image * (target / max(high, 1e-6))), 0, 32767).astype(np.int16)
    params.update({"signals": signals, "texture_sd": round(float(texture), 4), "psf_sigma_voxels": [0.5, 0.5, round(sigma_z, 3)],
                   "bias_half_range": round(float(inu), 4), "rician_noise_fraction": round(float(noise_fraction), 4),
                   "noise_reference": "wm" if sequence == "FLAIR" else "csf", "brain_p99_int16": round(float(target), 1),
                   "snr_wm": round(float(signals["wm"] / (noise_fraction * reference)), 2)})
    return stored, params


def generate_case(kind: str, index: int, seed: int = 0, shape: tuple[int, int, int] | None = None,
                  spacing: float | None = None, sequences: tuple[str, ...] | None = None,
                  procedural: bool = False) -> SyntheticCase:
    """Generate one synthetic subject.

    Args:
        kind: "ms" (FLAIR, binary lesion label) or "tumour" (T2, BRATS labels {0,1,2,4}).
        index: case index; with `seed` and `kind` it fixes every random choice.
        shape / spacing: output grid (see `anatomy.make_grid`); default 2 mm.
        sequences: images to form (default the kind's own: FLAIR for ms, T2 for tumour).
        procedural: use the procedural brain instead of the MNI template.
    Returns:
        a `SyntheticCase`.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    sequences = sequences or (KINDS[kind],)
    rng = np.random.default_rng(case_seed(seed, kind, index))
    anatomy = healthy_anatomy(shape, spacing, procedural)
    spacing_mm = anatomy.grid.spacing
    coords, transform = _subject_coordinates(anatomy, rng)
    manifest: dict = {"generator": GENERATOR_VERSION, "kind": kind, "index": int(index), "seed": int(seed),
                      "anatomy": anatomy.source, "shape": list(anatomy.grid.shape), "spacing_mm": spacing_mm,
                      "affine": anatomy.grid.affine.tolist(), "transform": transform}
    anatomy_coords = coords
    if kind == "ms":
        lesion_fraction, lesion_contrast, lesions = draw_lesions(anatomy, rng)
        atlas_pathology = {"lesion": lesion_fraction}
        manifest["lesions"] = lesions
    else:
        atlas_pathology, centre, tumour = draw_tumour(anatomy, rng)
        manifest["tumour"] = tumour
        anatomy_coords = mass_effect_shift(coords, centre, tumour["mass_effect_mm"], tumour["mass_effect_sigma_mm"],
                                           spacing_mm)
    mask_fraction, healthy = _healthy_tissues(anatomy, anatomy_coords)
    mask = mask_fraction >= 0.5
    warped = {name: np.clip(_warp(f, coords), 0, 1) * mask for name, f in atlas_pathology.items()}

    tumour_texture = None
    if kind == "ms":
        label, manifest["label_forced"] = _lesion_label(warped["lesion"], mask)
        contrast_out = ndimage.map_coordinates(lesion_contrast, coords, order=0, mode="nearest")
    else:
        label = _tumour_label(warped, mask)
        tumour_texture = smooth_noise(label.shape, max(0.6, 3.0 / spacing_mm), rng)

    images, imaging = {}, {}
    for sequence in sequences:
        sequence_rng = np.random.default_rng(rng.integers(2 ** 63))
        terms = _lesion_terms(warped, contrast_out) if kind == "ms" else _tumour_terms(warped, sequence, sequence_rng)
        images[sequence], imaging[sequence] = _form_image(
            sequence, healthy, terms, mask_fraction, sequence_rng, kind, spacing_mm, tumour_texture)
    manifest["imaging"] = imaging
    label = label.astype(np.uint8)
    manifest.update(_label_summary(label, kind, anatomy.grid.voxel_volume_ml))
    return SyntheticCase(images, label, anatomy.grid.affine.copy(), manifest)


def _healthy_tissues(anatomy: Anatomy, coords: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The brain's partial-volume fraction and the fractions of GM, WM and CSF inside it (summing to at most 1),
    warped to the subject by `coords`."""
    mask_fraction = np.clip(_warp(anatomy.mask_fraction, coords), 0, 1)
    mask = mask_fraction >= 0.5
    gm = _warp(anatomy.gm, coords)
    wm = _warp(anatomy.wm, coords)
    safe = np.maximum(mask_fraction, 1e-6)
    gm, wm = np.clip(gm / safe, 0, 1) * mask, np.clip(wm / safe, 0, 1) * mask
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    return mask_fraction, {"gm": gm, "wm": wm, "csf": np.clip(1 - gm - wm, 0, 1) * mask}


def _lesion_label(lesion: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, bool]:
    """The lesion mask (lesion fraction >= 0.5, in the brain), and whether it had to be forced: where partial
    volume hid every lesion centre, the most lesion-filled voxel is labelled."""
    label = (lesion >= 0.5) & mask
    if label.any():
        return label, False
    label.flat[int(np.argmax(lesion))] = True
    return label, True


def _tumour_label(warped: dict[str, np.ndarray], mask: np.ndarray) -> np.ndarray:
    """BRATS labels: where the tumour's classes fill at least half a brain voxel, the code of the largest; never
    empty (the most tumour-filled voxel is labelled)."""
    whole = sum(warped.values())
    stacked = np.stack([warped[c] for c in CLASSES])
    codes = np.array([BRATS_LABEL[c] for c in CLASSES], dtype=np.uint8)
    label = np.where((whole >= 0.5) & mask, codes[np.argmax(stacked, axis=0)], 0).astype(np.uint8)
    if not label.any():
        flat = int(np.argmax(whole))
        label.flat[flat] = codes[int(np.argmax(stacked.reshape(len(CLASSES), -1)[:, flat]))]
    return label


#: what `_form_image` asks of the pathology: given the subject's tissue signals and the sequence's parameters
#: (for the manifest), its [(fraction, signal)] terms
PathologyTerms = Callable[[dict[str, float], dict[str, Any]], list[tuple[np.ndarray, Any]]]


def _lesion_terms(warped: dict[str, np.ndarray], contrast: np.ndarray) -> PathologyTerms:
    """MS lesions: their fraction, at the lesion's contrast times this subject's white-matter signal."""
    def terms(signals: dict[str, float], params: dict[str, Any]) -> list[tuple[np.ndarray, Any]]:
        return [(warped["lesion"], contrast * np.float32(signals["wm"]))]
    return terms


def _tumour_terms(warped: dict[str, np.ndarray], sequence: str, rng: np.random.Generator) -> PathologyTerms:
    """The tumour's classes, each at a contrast drawn from `TUMOUR_CONTRAST` for `sequence` (recorded in the
    parameters) times the white-matter signal (CSF's for T2 necrosis)."""
    def terms(signals: dict[str, float], params: dict[str, Any]) -> list[tuple[np.ndarray, Any]]:
        out, factors = [], {}
        for name in CLASSES:
            low, high = TUMOUR_CONTRAST[sequence][name]
            factors[name] = float(rng.uniform(low, high))
            # necrosis is as bright as CSF in T2, so a threshold cannot tell it from the ventricles
            base = signals["csf"] if (name == "necrosis" and sequence == "T2") else signals["wm"]
            out.append((warped[name], np.float32(factors[name] * base)))
        params["tumour_contrast"] = {k: round(v, 3) for k, v in factors.items()}
        return out
    return terms


def _label_summary(label: np.ndarray, kind: str, voxel_volume_ml: float) -> dict[str, Any]:
    """The label's size for the manifest: voxels and volume, and lesion components (ms) or class volumes."""
    summary: dict[str, Any] = {"label_voxels": int((label > 0).sum()),
                               "label_volume_ml": round(float((label > 0).sum() * voxel_volume_ml), 3)}
    if kind == "ms":
        summary["lesion_components"] = int(ndimage.label(label)[1])
    else:
        summary["class_volumes_ml"] = {str(v): round(float((label == v).sum() * voxel_volume_ml), 3)
                                       for v in (1, 2, 4)}
    return summary
