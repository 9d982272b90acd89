"""Is a method better than a baseline? Paired differences over splits, bootstrap intervals, Wilcoxon tests.

Every split trains every method on the same training cases and scores it on the same test cases, so
methods are compared split by split: the difference of their mean test DSC on each split. Over the
splits we report the mean difference, a 95 % percentile-bootstrap confidence interval of that mean,
and the two-sided Wilcoxon signed-rank p-value (scipy).

The verdict asks for both: an interval that excludes 0 *and* p < 0.05. Below 6 splits it gives none, because
the exact Wilcoxon test cannot reach 0.05 there (its smallest two-sided p with 5 pairs is 1/16) and a
percentile bootstrap over so few values is far too narrow (over 2 it is just their range).

Each comparison also gives the smallest mean difference its splits could detect: the true difference at which a
paired t-test at the same level would find it 80 % of the time, given the spread of the differences seen. It
says what a "no difference shown" rules out, and how many splits a smaller effect would need (it shrinks as
one over the square root of the number of splits).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
#: the fewest splits at which the verdict can say better or worse (see the module docstring)
MIN_SPLITS_FOR_VERDICT = 6
POWER = 0.8


def paired_differences(results: Sequence[dict[str, Any]], metric: str, method: str, baseline: str,
                       train_size: int) -> np.ndarray:
    """Per split (where both ran and both scores are finite): metric of `method` minus metric of `baseline`."""
    by_split: dict[tuple[str, int], float] = {}
    for r in results:
        if r["train_size"] == train_size and r["method"] in (method, baseline):
            by_split[(r["method"], r["split"])] = float(r[metric])
    splits = sorted({s for m, s in by_split if m == method} & {s for m, s in by_split if m == baseline})
    diffs = [by_split[(method, s)] - by_split[(baseline, s)] for s in splits]
    return np.asarray([d for d in diffs if math.isfinite(d)], dtype=np.float64)


def bootstrap_interval(values: np.ndarray, confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of `values` (NaNs if there are none)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def wilcoxon_p(values: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of `values` against 0 (NaN below 2 non-zero values)."""
    from scipy.stats import wilcoxon

    values = np.asarray(values, dtype=np.float64)
    if np.count_nonzero(values) < 2:
        return math.nan
    return float(wilcoxon(values, alternative="two-sided").pvalue)


def detectable_difference(values: np.ndarray, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true mean difference a two-sided paired t-test over len(`values`) splits detects with probability
    `power`, at the standard deviation of `values` (NaN below 2 values)."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return math.nan
    quantiles = t.ppf(1 - alpha / 2, n - 1) + t.ppf(power, n - 1)
    return float(quantiles * values.std(ddof=1) / math.sqrt(n))


def holm_adjusted(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values of a family of tests, in the order given.

    A test is rejected at level a with Holm's correction exactly when its adjusted p is below a: sorted
    ascending, the i-th smallest p (from 0) is multiplied by m - i, and each adjusted value is at least the one
    before it (a test is only rejected if every smaller p was). NaN p-values (a test that could not run) count
    in m, which keeps the correction conservative, and stay NaN.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), kind="stable")
    adjusted = np.full(m, np.nan)
    running = 0.0
    for i, index in enumerate(order):
        if np.isnan(p[index]):
            break
        running = max(running, min(1.0, (m - i) * p[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """`method` against `baseline` at one train size: paired differences over `splits` splits."""

    method: str
    baseline: str
    train_size: int
    splits: int
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    detectable: float = math.nan  # see detectable_difference

    @property
    def verdict(self) -> str:
        if self.splits < 2 or math.isnan(self.ci_low):
            return "one split: no evidence"
        if self.splits < MIN_SPLITS_FOR_VERDICT:
            return f"too few splits ({self.splits} < {MIN_SPLITS_FOR_VERDICT})"
        significant = not math.isnan(self.p_value) and self.p_value < ALPHA
        if significant and self.ci_low > 0:
            return "better"
        if significant and self.ci_high < 0:
            return "worse"
        return "no difference shown"


def compare(results: Sequence[dict[str, Any]], methods: Sequence[str], train_sizes: Sequence[int],
            baselines: Sequence[str] = ("ri", "pr"), metric: str = "dsc") -> list[Comparison]:
    """Every method against every baseline present in `methods`, at every train size."""
    out = []
    for baseline in [b for b in baselines if b in methods]:
        for method in [m for m in methods if m != baseline]:
            for n in train_sizes:
                diffs = paired_differences(results, metric, method, baseline, n)
                if len(diffs) == 0:
                    continue
                low, high = bootstrap_interval(diffs) if len(diffs) > 1 else (math.nan, math.nan)
                out.append(Comparison(method, baseline, n, len(diffs), float(diffs.mean()), low, high,
                                      wilcoxon_p(diffs), detectable_difference(diffs)))
    return out


def comparison_markdown(comparisons: Sequence[Comparison], label=lambda m: m, metric: str = "DSC") -> str:
    """A Markdown table: method vs baseline per train size, mean paired difference [95 % CI], p-value."""
    lines = [f"| Method vs baseline | Train size | Splits | Mean paired {metric} difference [95 % CI] | "
             "Wilcoxon p | Verdict | Detectable at 80 % power |", "|---|---:|---:|---|---:|---|---:|"]
    for c in comparisons:
        ci = "–" if math.isnan(c.ci_low) else f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}]"
        p = "–" if math.isnan(c.p_value) else f"{c.p_value:.3f}"
        detectable = "–" if math.isnan(c.detectable) else f"{c.detectable:.3f}"
        lines.append(f"| {label(c.method)} vs {label(c.baseline)} | {c.train_size} | {c.splits} | "
                     f"{c.mean_difference:+.3f} {ci} | {p} | {c.verdict} | {detectable} |")
    return "\n".join(lines)
