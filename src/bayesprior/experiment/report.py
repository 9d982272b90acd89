"""Tables and figures of an experiment, in the layout of the paper's Tables 3-4 and Figures 6-7."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..evaluation.calibration import BAND_MM
from ..figures import pyplot, save_figure
from ..plugins import registered_label
from .statistics import Comparison, compare, comparison_markdown

#: the core's own methods; a prior or method from a plugin names itself (`register(..., label=...)`)
BASELINE_LABELS = {"pr": "UNet-PR", "prf": "UNet-PRf", "ri": "UNet-RI"}
METRICS = (("dsc", "Mean Dice Similarity Coefficient"), ("iou", "Mean Intersection over Union"))
#: calibration of the predicted foreground probability (`bayesprior.evaluation.calibration`); lower is better.
#: Tabled when the results hold them (results written before they were measured do not): over each case's body
#: mask (the image's non-zero voxels) and over the band around its label and prediction; over every voxel, where
#: every method scores about the same, in table.csv only
_REGIONS = (("", "in the body mask (the image's non-zero voxels)"),
            ("_band", f"in the band (label, prediction and {BAND_MM:g} mm around)"))
CALIBRATION_METRICS = tuple(
    (f"{metric}{suffix}", f"{title} {where} (lower is better)") for suffix, where in _REGIONS
    for metric, title in (("ece", "Mean expected calibration error (15 bins)"), ("brier", "Mean Brier score"),
                          ("nll", "Mean voxel negative log-likelihood in nats")))
#: the calibration columns of table.csv: the tabled ones, and those over every voxel
CSV_CALIBRATION_METRICS = (*(m for m, _ in CALIBRATION_METRICS), "ece_all", "brier_all", "nll_all")


def label(method: str) -> str:
    """A method's name in tables and figures: the core's, the one its plugin registered, or UNet-<name>."""
    return BASELINE_LABELS.get(method) or registered_label(method) or f"UNet-{method}"


def with_calibration_regions(result: dict[str, Any]) -> dict[str, Any]:
    """A result as this version reads it: one written before calibration had regions holds ECE, Brier and NLL
    over every voxel under the names the body mask's have now, so they are read as ``*_all``."""
    if "calibration_region" in result or result.get("ece") is None:
        return result
    old = {metric: result.get(metric) for metric in ("ece", "brier", "nll")}
    return {**result, **{f"{m}_all": v for m, v in old.items()}, **{m: None for m in old}}


def summarise(results: Sequence[dict[str, Any]], metric: str) -> dict[tuple[int, str], tuple[float, float, int]]:
    """(train size, method) -> (mean over splits, std over splits, number of splits)."""
    by_key: dict[tuple[int, str], list[float]] = defaultdict(list)
    for r in results:
        if r.get(metric) is None:
            continue  # a result written before the metric was measured
        by_key[(r["train_size"], r["method"])].append(float(r[metric]))
    out = {}
    for key, values in by_key.items():
        v = np.asarray(values)
        out[key] = (float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v))
    return out


def markdown_table(results: Sequence[dict[str, Any]], metric: str, methods: Sequence[str],
                   train_sizes: Sequence[int], lower_is_better: bool = False) -> str:
    """One metric as 'mean (std)' over splits: a row per train size, a column per method; the best mean in bold
    (the highest, or the lowest with `lower_is_better`) when one method alone has it as shown (to 3 decimals):
    equal values are no winner."""
    stats = summarise(results, metric)
    lines = ["| Train size | " + " | ".join(label(m) for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for n in train_sizes:
        shown = {m: f"{stats[(n, m)][0]:.3f}" for m in methods if (n, m) in stats and not np.isnan(stats[(n, m)][0])}
        best = (min if lower_is_better else max)(shown.values(), key=float) if shown else None
        unique = best is not None and list(shown.values()).count(best) == 1
        cells = []
        for m in methods:
            if (n, m) not in stats:
                cells.append("–")
                continue
            mean, std, k = stats[(n, m)]
            cell = f"{mean:.3f} ({std:.3f})" if k > 1 else f"{mean:.3f}"  # no spread from one split
            cells.append(f"**{cell}**" if unique and shown.get(m) == best else cell)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_tables(results: Sequence[dict[str, Any]], methods: Sequence[str], train_sizes: Sequence[int],
                 out_dir: Path, note: str = "") -> str:
    """Write table.md and table.csv; return the Markdown."""
    results = [with_calibration_regions(r) for r in results]
    parts = []
    calibration = [(m, t) for m, t in CALIBRATION_METRICS if any(r.get(m) is not None for r in results)]
    for metric, title in [*METRICS, *calibration]:
        lower = (metric, title) in calibration
        parts.append(f"**{title}** (mean (std) over splits)\n\n"
                     + markdown_table(results, metric, methods, train_sizes, lower_is_better=lower))
    n_splits = len({r["split"] for r in results})
    comparisons = compare(results, methods, train_sizes)
    if comparisons:
        parts.append("**Paired comparisons** (per split: method DSC minus baseline DSC on the same cases; mean over "
                     "splits with a 95 % bootstrap confidence interval and the Wilcoxon signed-rank p-value; the "
                     "verdict needs both, an interval that excludes 0 and p < 0.05, and at least 6 splits; the last "
                     "column is the true difference these splits would detect 4 times in 5, from the spread of the "
                     "differences)\n\n"
                     + comparison_markdown(comparisons, label))
    if n_splits < 2:
        parts.append("One split only: no spread and no confidence interval. One split is not evidence that one "
                     "method is better than another.")
    text = "\n\n".join(parts) + f"\n\n{len(results)} runs, {n_splits} split(s). {note}".rstrip() + "\n"
    atomic_write_text(text, out_dir / "table.md")
    write_comparisons_csv(comparisons, out_dir / "comparisons.csv")
    buf = io.StringIO()
    writer = csv.writer(buf)
    extra = list(CSV_CALIBRATION_METRICS)
    writer.writerow(["train_size", "method", "dsc_mean", "dsc_std", "iou_mean", "iou_std", "splits",
                     *[f"{m}_{s}" for m in extra for s in ("mean", "std")]])
    dsc, iou = summarise(results, "dsc"), summarise(results, "iou")
    calibrated = {m: summarise(results, m) for m in extra}
    for n in train_sizes:
        for m in methods:
            if (n, m) in dsc:
                cells = [f"{v:.4f}" if (n, m) in calibrated[c] else "" for c in extra
                         for v in calibrated[c].get((n, m), (0.0, 0.0))[:2]]
                writer.writerow([n, m, f"{dsc[(n, m)][0]:.4f}", f"{dsc[(n, m)][1]:.4f}",
                                 f"{iou[(n, m)][0]:.4f}", f"{iou[(n, m)][1]:.4f}", dsc[(n, m)][2], *cells])
    atomic_write_text(buf.getvalue(), out_dir / "table.csv")
    return text


def write_comparisons_csv(comparisons: Sequence[Comparison], path: Path) -> None:
    """One row per (method, baseline, train size): splits, mean paired DSC difference, CI, p-value, verdict and
    the difference detectable at 80 % power."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["method", "baseline", "train_size", "splits", "mean_dsc_difference", "ci_low", "ci_high",
                     "wilcoxon_p", "verdict", "detectable_difference"])
    for c in comparisons:
        writer.writerow([c.method, c.baseline, c.train_size, c.splits, f"{c.mean_difference:.4f}",
                         f"{c.ci_low:.4f}", f"{c.ci_high:.4f}", f"{c.p_value:.4f}", c.verdict,
                         f"{c.detectable:.4f}"])
    atomic_write_text(buf.getvalue(), path)


def plot_dsc_vs_train_size(results: Sequence[dict[str, Any]], methods: Sequence[str],
                           train_sizes: Sequence[int], path: Path, title: str = "") -> None:
    """DSC against train size per method with std error bars (the paper's Figure 6)."""
    plt = pyplot()
    stats = summarise(results, "dsc")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, m in enumerate(methods):
        xs = [n for n in train_sizes if (n, m) in stats]
        if not xs:
            continue
        offset = (i - (len(methods) - 1) / 2) * 0.15  # keep error bars apart
        ax.errorbar([x + offset for x in xs], [stats[(n, m)][0] for n in xs], yerr=[stats[(n, m)][1] for n in xs],
                    marker="o", capsize=3, label=label(m))
    ax.set_xlabel("number of training cases")
    ax.set_ylabel("DSC (mean ± std over splits)")
    ax.set_xticks(list(train_sizes))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def plot_predictions(slices: dict[tuple[int, str], dict[str, np.ndarray]], methods: Sequence[str],
                     train_sizes: Sequence[int], path: Path) -> None:
    """The same test slice per train size: image with ground truth, then each method's prediction (Figure 7).

    `slices[(train size, method)]` holds 2D arrays 'image', 'label', 'pred' and optionally 'dsc'.
    """
    plt = pyplot()
    rows = [n for n in train_sizes if any((n, m) in slices for m in methods)]
    if not rows:
        return
    cols = 1 + len(methods)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.3 * len(rows)), squeeze=False)
    for r, n in enumerate(rows):
        first = next(slices[(n, m)] for m in methods if (n, m) in slices)
        _show(axes[r][0], first["image"], first["label"], "#2ca02c")
        axes[r][0].set_title(f"ground truth (n={n})", fontsize=8)
        for c, m in enumerate(methods, start=1):
            ax = axes[r][c]
            if (n, m) not in slices:
                ax.axis("off")
                continue
            s = slices[(n, m)]
            _show(ax, s["image"], s["pred"], "#d62728", reference=s["label"])
            dsc = s.get("dsc")
            ax.set_title(f"{label(m)}" + (f" DSC {float(dsc):.2f}" if dsc is not None else ""), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _show(ax, image: np.ndarray, mask: np.ndarray, color: str, reference: np.ndarray | None = None) -> None:
    ax.imshow(np.rot90(image), cmap="gray")
    if reference is not None and reference.any():
        ax.contour(np.rot90(reference > 0), levels=[0.5], colors="#2ca02c", linewidths=0.6)
    if mask.any():
        ax.contour(np.rot90(mask > 0), levels=[0.5], colors=color, linewidths=0.8)
    ax.axis("off")
