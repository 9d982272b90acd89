"""Is the predicted uncertainty any good? Calibration and uncertainty-error overlap of foreground probabilities.

Every function takes the foreground probability `p` of each voxel (any shape, values in [0, 1]) and the
reference mask (binarised as ``> 0``, the same shape):

- expected calibration error (ECE): the voxels are put into `N_BINS` = 15 equal-width bins of ``p``
  (``[0, 1/15), [1/15, 2/15), ..., [14/15, 1]``); ECE = sum over bins of (voxels in bin / all voxels) x
  |mean ``p`` in the bin - foreground frequency in the bin| (Guo et al. 2017, applied voxel-wise);
- Brier score: the mean of (p - y)^2 over voxels;
- voxel negative log-likelihood (NLL): the mean of -[y log p + (1 - y) log(1 - p)], with ``p`` clipped to
  ``[EPS, 1 - EPS]`` so a confident mistake costs -log(EPS) (about 16.1 nats) rather than infinity;
- uncertainty-error overlap (UEO, Jungo & Reyes 2019): the Dice between the thresholded uncertainty
  ``u > t`` and the error mask (prediction != reference), where ``u`` is the binary entropy of ``p`` in bits
  (0 for p in {0, 1}, 1 for p = 0.5). Reported as the **maximum over the fixed thresholds**
  `UEO_THRESHOLDS` = 0.05, 0.10, ..., 0.95, as Jungo & Reyes do; when a case has no error and no
  uncertain voxel at any threshold the overlap is perfect (1.0).

All metrics are defined for an empty reference (an all-background case is scored, unlike its DSC).
`ReliabilityBins` holds the per-bin counts, so the ECE of many cases pooled and the reliability diagram
(`plot_reliability_diagram`) come from the same numbers as each case's ECE.

**Where ECE, Brier and NLL are computed** (`calibration_scores`). Over every voxel of a 240x240x155 volume they
say little: 99 % of the voxels are air or healthy tissue that every method calls background with certainty, so
every method scores about 0.002. So each is given over three regions:

- ``ece``, ``brier``, ``nll``: the **region** the caller gives, by default the body (or brain) mask, the
  image's non-zero voxels (`body_mask`): what a reader of the image would score, without the air around it;
  every voxel when no region is given;
- ``ece_band``, ``brier_band``, ``nll_band``: the **band**, the voxels of the reference or the prediction and
  every voxel within `BAND_MM` mm of them (`boundary_band`): where segmentations disagree and calibration
  decides; empty (NaN) when both are empty;
- ``ece_all``, ``brier_all``, ``nll_all``: **every voxel**, as before.

The UEO is a Dice, which background voxels do not move: it is computed over every voxel.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ConfigError
from ..figures import pyplot, save_figure

N_BINS = 15
#: probabilities are clipped to [EPS, 1 - EPS] for the NLL
EPS = 1e-7
#: thresholds of the normalised uncertainty over which the UEO is maximised
UEO_THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(1, 20))
#: the band around the reference and the prediction, in mm (`boundary_band`)
BAND_MM = 5.0
_REGION_METRICS = ("ece", "brier", "nll")
#: the per-case columns `calibration_scores` gives (lower is better for all but ``ueo``)
CALIBRATION_METRICS = ("ece", "brier", "nll", "ueo",
                       *(f"{m}{suffix}" for suffix in ("_band", "_all") for m in _REGION_METRICS))


def _checked(probability: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(reference) > 0
    if p.shape != y.shape:
        raise ConfigError(f"probability shape {p.shape} differs from reference shape {y.shape}")
    if p.size and not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ConfigError("probabilities must be finite and in [0, 1]")
    return p.ravel(), y.ravel()


class ReliabilityBins:
    """Counts, summed probabilities and summed foreground voxels in `n_bins` equal-width bins of ``p``.

    ``add`` may be called for several cases; `ece` and `plot_reliability_diagram` use the pooled counts.
    """

    def __init__(self, n_bins: int = N_BINS):
        if n_bins < 1:
            raise ConfigError(f"n_bins must be >= 1, got {n_bins}")
        self.edges = np.linspace(0.0, 1.0, n_bins + 1)
        self.count = np.zeros(n_bins, dtype=np.int64)
        self.probability_sum = np.zeros(n_bins)
        self.foreground_sum = np.zeros(n_bins)

    def add(self, probability: Any, reference: Any) -> "ReliabilityBins":
        """Add the voxels of one case; returns self."""
        p, y = _checked(probability, reference)
        # bin b holds edges[b] <= p < edges[b + 1]; p = 1 falls into the last bin
        index = np.minimum(np.searchsorted(self.edges, p, side="right") - 1, len(self.count) - 1)
        n = len(self.count)
        self.count += np.bincount(index, minlength=n)
        self.probability_sum += np.bincount(index, weights=p, minlength=n)
        self.foreground_sum += np.bincount(index, weights=y.astype(np.float64), minlength=n)
        return self

    def confidence(self) -> np.ndarray:
        """Mean ``p`` per bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.probability_sum / self.count

    def frequency(self) -> np.ndarray:
        """Foreground frequency per bin (NaN for an empty bin)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.foreground_sum / self.count

    def ece(self) -> float:
        """Expected calibration error of the voxels added so far (NaN if none)."""
        total = int(self.count.sum())
        if total == 0:
            return float("nan")
        filled = self.count > 0
        gaps = np.abs(self.probability_sum[filled] - self.foreground_sum[filled]) / self.count[filled]
        return float((self.count[filled] / total * gaps).sum())


def expected_calibration_error(probability: Any, reference: Any, n_bins: int = N_BINS) -> float:
    """ECE of one case over `n_bins` equal-width bins (see the module docstring). NaN for an empty array."""
    return ReliabilityBins(n_bins).add(probability, reference).ece()


def brier_score(probability: Any, reference: Any) -> float:
    """Mean squared difference between ``p`` and the reference (0 or 1) over voxels."""
    p, y = _checked(probability, reference)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def voxel_nll(probability: Any, reference: Any, eps: float = EPS) -> float:
    """Mean negative log-likelihood (nats) of the reference under ``p``, clipped to ``[eps, 1 - eps]``."""
    p, y = _checked(probability, reference)
    if not p.size:
        return float("nan")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


def normalised_entropy(probability: Any) -> np.ndarray:
    """Binary entropy of ``p`` in bits: in [0, 1], 0 at p in {0, 1}, 1 at p = 0.5."""
    p = np.asarray(probability, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = -(p * np.log2(p) + (1.0 - p) * np.log2(1.0 - p))
    return np.nan_to_num(terms, nan=0.0)  # 0 log 0 = 0


def uncertainty_error_overlap(probability: Any, reference: Any, prediction: Any | None = None,
                              thresholds: tuple[float, ...] = UEO_THRESHOLDS) -> float:
    """UEO: the largest Dice over `thresholds` between ``normalised_entropy(p) > t`` and the error mask.

    Args:
        prediction: the predicted mask (``> 0`` is foreground); default ``p > 0.5``.
    """
    p, y = _checked(probability, reference)
    if prediction is None:
        predicted = p > 0.5
    else:
        predicted = (np.asarray(prediction) > 0).ravel()
        if predicted.shape != y.shape:
            raise ConfigError(f"prediction shape {np.shape(prediction)} differs from reference shape "
                              f"{np.shape(reference)}")
    errors = predicted != y
    n_errors = int(errors.sum())
    uncertainty = normalised_entropy(p)
    best = 0.0
    for t in thresholds:
        uncertain = uncertainty > t
        n_uncertain = int(uncertain.sum())
        if n_errors + n_uncertain == 0:
            return 1.0  # no error and no uncertain voxel: the uncertainty says exactly where the errors are
        best = max(best, 2.0 * int((uncertain & errors).sum()) / (n_errors + n_uncertain))
    return best


def body_mask(image: Any) -> np.ndarray:
    """The body (or brain) mask of an image: its non-zero voxels."""
    return np.asarray(image) != 0


def boundary_band(reference: Any, prediction: Any, spacing: Any = None, width_mm: float = BAND_MM) -> np.ndarray:
    """The voxels of the reference or the prediction (both ``> 0``) and every voxel within `width_mm` mm of them.

    Args:
        spacing: the voxel size in mm per axis (default 1 mm).
    Returns:
        a boolean array of the reference's shape; all False when both masks are empty.
    """
    union = (np.asarray(reference) > 0) | (np.asarray(prediction) > 0)
    band = np.zeros(union.shape, dtype=bool)
    if not union.any():
        return band
    spacing = np.ones(union.ndim) if spacing is None else np.asarray(spacing, dtype=np.float64)
    reach = [int(math.ceil(width_mm / s)) for s in spacing]
    extent = []
    for axis in range(union.ndim):  # the distance transform only where the band can reach
        other = tuple(a for a in range(union.ndim) if a != axis)
        hits = np.flatnonzero(union.any(axis=other))
        extent.append(slice(max(0, hits[0] - reach[axis]), min(union.shape[axis], hits[-1] + reach[axis] + 1)))
    box = tuple(extent)
    band[box] = ndimage.distance_transform_edt(~union[box], sampling=spacing) <= width_mm
    return band


def calibration_scores(probability: Any, reference: Any, prediction: Any | None = None, region: Any | None = None,
                       spacing: Any = None) -> dict[str, float]:
    """ECE, Brier score and voxel NLL of one case over `region`, over the band around the reference and the
    prediction and over every voxel, and its UEO (keys `CALIBRATION_METRICS`; see the module docstring).

    Args:
        prediction: the predicted mask (``> 0``); default ``probability > 0.5``.
        region: a boolean mask of the voxels ``ece``, ``brier`` and ``nll`` are computed over (e.g.
            `body_mask` of the image); None: every voxel.
        spacing: the voxel size in mm per axis, for the band (default 1 mm).
    """
    p, y = np.asarray(probability), np.asarray(reference)
    predicted = p > 0.5 if prediction is None else np.asarray(prediction) > 0
    if predicted.shape != y.shape:
        raise ConfigError(f"prediction shape {predicted.shape} differs from reference shape {y.shape}")
    masks = {"": region, "_band": boundary_band(y, predicted, spacing), "_all": None}
    scores = {}
    for suffix, mask in masks.items():
        if mask is not None and np.shape(mask) != y.shape:
            raise ConfigError(f"region shape {np.shape(mask)} differs from reference shape {y.shape}")
        chosen = (p, y) if mask is None else (p[np.asarray(mask, dtype=bool)], y[np.asarray(mask, dtype=bool)])
        scores.update({f"ece{suffix}": expected_calibration_error(*chosen), f"brier{suffix}": brier_score(*chosen),
                       f"nll{suffix}": voxel_nll(*chosen)})
    scores["ueo"] = uncertainty_error_overlap(p, y, predicted)
    return {key: scores[key] for key in CALIBRATION_METRICS}


def plot_reliability_diagram(bins: ReliabilityBins, path: str | Path, title: str = "") -> Path:
    """The reliability diagram of `bins` as a PNG: foreground frequency against mean ``p`` per bin, the
    diagonal of perfect calibration, and the share of voxels per bin (log scale) below."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(4.5, 5.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    centres = (bins.edges[:-1] + bins.edges[1:]) / 2
    width = bins.edges[1] - bins.edges[0]
    filled = bins.count > 0
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    top.bar(centres[filled], bins.frequency()[filled], width=width * 0.9, color="#1f77b4", alpha=0.8,
            label="foreground frequency")
    top.plot(bins.confidence()[filled], bins.frequency()[filled], "o", color="#d62728", markersize=3,
             label="mean probability")
    top.set_ylabel("foreground frequency")
    top.set_ylim(0, 1)
    top.legend(fontsize=7, loc="upper left")
    top.set_title(title or f"reliability (ECE {bins.ece():.4f})", fontsize=9)
    total = max(int(bins.count.sum()), 1)
    bottom.bar(centres[filled], bins.count[filled] / total, width=width * 0.9, color="0.5")
    bottom.set_yscale("log")
    bottom.set_xlabel("predicted foreground probability")
    bottom.set_ylabel("share of voxels")
    bottom.set_xlim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
