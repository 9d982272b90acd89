"""Paired comparisons over splits: differences, bootstrap intervals, Wilcoxon p-values, the report table."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ttest_1samp, wilcoxon

from bayesprior.experiment.statistics import (
    MIN_SPLITS_FOR_VERDICT,
    Comparison,
    bootstrap_interval,
    compare,
    comparison_markdown,
    detectable_difference,
    holm_adjusted,
    paired_differences,
    wilcoxon_p,
)


def _results(dsc):
    """dsc: {method: [DSC per split]} at train size 5."""
    return [{"split": s, "train_size": 5, "method": m, "dsc": v} for m, values in dsc.items()
            for s, v in enumerate(values)]


def test_differences_pair_the_same_split_and_skip_missing_ones():
    results = _results({"dwp": [0.5, 0.6, 0.7], "ri": [0.4, 0.6]})
    assert np.allclose(paired_differences(results, "dsc", "dwp", "ri", 5), [0.1, 0.0])


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=30))
def test_the_bootstrap_interval_brackets_the_mean(values):
    low, high = bootstrap_interval(np.asarray(values), resamples=2000)
    mean = float(np.mean(values))
    assert low <= mean + 1e-12 and mean - 1e-12 <= high


def test_a_constant_difference_has_a_zero_width_interval():
    assert bootstrap_interval(np.full(10, 0.05)) == pytest.approx((0.05, 0.05))


def test_the_interval_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(0)
    widths = {n: np.subtract(*bootstrap_interval(rng.normal(0, 1, n))[::-1]) for n in (20, 320)}
    assert widths[20] / widths[320] == pytest.approx(4.0, rel=0.3)


def test_wilcoxon_matches_scipy_and_needs_two_non_zero_differences():
    d = np.array([0.03, -0.01, 0.05, 0.02, 0.04, 0.01, -0.02, 0.06])
    assert wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue)
    assert math.isnan(wilcoxon_p(np.array([0.1, 0.0])))


def test_compare_gives_every_method_against_each_baseline_with_a_verdict():
    results = _results({"dwp": [0.70, 0.72, 0.71, 0.73, 0.69, 0.74], "ri": [0.60, 0.61, 0.62, 0.60, 0.59, 0.63],
                        "pr": [0.80, 0.81, 0.79, 0.82, 0.80, 0.81]})
    rows = {(c.method, c.baseline): c for c in compare(results, ["dwp", "pr", "ri"], [5])}
    assert set(rows) == {("dwp", "ri"), ("pr", "ri"), ("dwp", "pr"), ("ri", "pr")}
    assert rows[("dwp", "ri")].verdict == "better" and rows[("dwp", "pr")].verdict == "worse"
    assert rows[("dwp", "ri")].mean_difference == pytest.approx(0.64 / 6, abs=1e-9)
    table = comparison_markdown(compare(results, ["dwp", "pr", "ri"], [5]))
    assert "| dwp vs ri | 5 | 6 | +0.107 [" in table


def test_one_split_is_no_evidence():
    [row] = [c for c in compare(_results({"dwp": [0.9], "ri": [0.1]}), ["dwp", "ri"], [5])]
    assert row.verdict == "one split: no evidence" and math.isnan(row.ci_low)


def test_two_splits_that_agree_are_too_few_for_a_verdict():
    # a percentile bootstrap over 2 values is their range: it excludes 0 whenever both have one sign
    [row] = compare(_results({"dwp": [0.9, 0.8], "ri": [0.1, 0.2]}), ["dwp", "ri"], [5])
    assert row.ci_low > 0 and row.verdict == "too few splits (2 < 6)"


def test_below_six_pairs_the_exact_wilcoxon_test_cannot_reach_five_percent():
    for n in range(2, MIN_SPLITS_FOR_VERDICT):
        assert wilcoxon(np.arange(1.0, n + 1)).pvalue > 0.05
    assert wilcoxon(np.arange(1.0, MIN_SPLITS_FOR_VERDICT + 1)).pvalue < 0.05


@pytest.mark.parametrize("ci, p, verdict", [((0.01, 0.05), 0.03, "better"), ((-0.05, -0.01), 0.03, "worse"),
                                            ((0.01, 0.05), 0.08, "no difference shown"),
                                            ((-0.01, 0.05), 0.03, "no difference shown")])
def test_a_verdict_needs_the_interval_to_exclude_zero_and_p_below_five_percent(ci, p, verdict):
    assert Comparison("dwp", "ri", 5, 10, 0.03, *ci, p).verdict == verdict


@pytest.mark.parametrize("n", [6, 10, 30])
def test_a_true_difference_of_the_detectable_size_is_found_four_times_in_five(n):
    rng = np.random.default_rng(n)
    spread = rng.normal(size=n)
    spread = (spread - spread.mean()) / spread.std(ddof=1)  # standard deviation exactly 1
    effect = detectable_difference(spread)
    trials = rng.normal(effect, 1.0, size=(20_000, n))
    power = np.mean(ttest_1samp(trials, 0.0, axis=1).pvalue < 0.05)
    assert power == pytest.approx(0.8, abs=0.02)


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.floats(-1, 1, allow_nan=False), min_size=2, max_size=30, unique=True),
       scale=st.floats(0.1, 10))
def test_the_detectable_difference_scales_with_the_spread_and_ignores_the_mean(values, scale):
    values = np.asarray(values)
    assert detectable_difference(scale * values + 3.0) == pytest.approx(scale * detectable_difference(values))


def test_the_detectable_difference_needs_two_splits_and_is_reported():
    assert math.isnan(detectable_difference(np.array([0.1])))
    results = _results({"dwp": [0.70, 0.72, 0.71, 0.73, 0.69, 0.74], "ri": [0.60, 0.61, 0.62, 0.60, 0.59, 0.63]})
    [row] = compare(results, ["dwp", "ri"], [5])
    diffs = paired_differences(results, "dsc", "dwp", "ri", 5)
    assert row.detectable == pytest.approx(detectable_difference(diffs)) and row.detectable > 0
    assert comparison_markdown([row]).splitlines()[-1].endswith(f"| {row.detectable:.3f} |")


def _holm_step_down_rejects(p: list[float], level: float) -> set[int]:
    """Holm's procedure as stated: go up the sorted p-values, reject while (m - i) p_(i) < level."""
    rejected: set[int] = set()
    for i, index in enumerate(sorted(range(len(p)), key=lambda j: p[j])):
        if (len(p) - i) * p[index] >= level:
            break
        rejected.add(index)
    return rejected


@given(p=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=12),
       level=st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_adjusted_p_rejects_exactly_what_the_step_down_procedure_rejects(p, level):
    adjusted = holm_adjusted(p)
    assert {i for i, a in enumerate(adjusted) if a < level} == _holm_step_down_rejects(p, level)
    assert np.all(adjusted >= np.asarray(p)) and np.all(adjusted <= 1)
    # the adjusted values keep the raw ones' order
    for i in range(len(p)):
        for j in range(len(p)):
            if p[i] < p[j]:
                assert adjusted[i] <= adjusted[j]


def test_holm_adjusted_by_hand_and_a_test_that_did_not_run_counts_in_the_family():
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjusted([0.02]) == pytest.approx([0.02])
    adjusted = holm_adjusted([0.01, math.nan])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
