"""Calibration of foreground probabilities (`bayesprior.evaluation.calibration`): every metric against a direct
numpy computation, the edge cases, and `bayesprior evaluate --probabilities`."""
import csv
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior.errors import ConfigError
from bayesprior.evaluation.calibration import (
    EPS,
    N_BINS,
    UEO_THRESHOLDS,
    ReliabilityBins,
    brier_score,
    calibration_scores,
    expected_calibration_error,
    normalised_entropy,
    uncertainty_error_overlap,
    voxel_nll,
)
from bayesprior.evaluation.scoring import CaseScores

from hostile import assert_ok, assert_one_line_error, nifti, run


# ------------------------------------------------------------------ direct numpy references
def reference_ece(p, y, n_bins=N_BINS):
    p, y = p.ravel().astype(np.float64), (y.ravel() > 0).astype(np.float64)
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for b in range(n_bins):
        upper = p <= edges[b + 1] if b == n_bins - 1 else p < edges[b + 1]
        in_bin = (p >= edges[b]) & upper
        if in_bin.any():
            total += in_bin.sum() / p.size * abs(p[in_bin].mean() - y[in_bin].mean())
    return total


def reference_nll(p, y):
    p = np.clip(p.ravel().astype(np.float64), EPS, 1 - EPS)
    y = y.ravel() > 0
    return float(np.mean([-math.log(q) if t else -math.log(1 - q) for q, t in zip(p, y, strict=True)]))


def reference_ueo(p, y, prediction):
    p = p.ravel().astype(np.float64)
    errors = (prediction.ravel() > 0) != (y.ravel() > 0)
    best = 0.0
    for t in UEO_THRESHOLDS:
        u = np.array([0.0 if q in (0.0, 1.0) else -(q * math.log2(q) + (1 - q) * math.log2(1 - q)) for q in p]) > t
        if errors.sum() + u.sum() == 0:
            return 1.0
        best = max(best, 2 * (u & errors).sum() / (u.sum() + errors.sum()))
    return best


cases = st.tuples(st.integers(1, 400), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.1, 0.5, 1.0]))


def random_case(n, seed, rounding):
    """Random probabilities (some exactly 0, 1 and on bin edges when `rounding` > 0) and labels."""
    rng = np.random.default_rng(seed)
    p = rng.random(n)
    if rounding:
        p = np.where(rng.random(n) < 0.3, np.round(p / rounding) * rounding, p)
        p[rng.random(n) < 0.1] = rng.integers(0, 2, 1)[0]
    p[rng.random(n) < 0.05] = np.arange(N_BINS + 1)[rng.integers(0, N_BINS + 1)] / N_BINS  # bin edges
    p = np.clip(p, 0, 1)
    y = (rng.random(n) < p).astype(np.uint8)
    return p, y


@settings(max_examples=60, deadline=None)
@given(cases)
def test_ece_is_the_bin_weighted_gap_between_confidence_and_frequency(case):
    p, y = random_case(*case)
    assert expected_calibration_error(p, y) == pytest.approx(reference_ece(p, y), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_brier_score_is_the_mean_squared_difference(case):
    p, y = random_case(*case)
    assert brier_score(p, y) == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(cases)
def test_voxel_nll_is_the_mean_negative_log_likelihood_of_clipped_probabilities(case):
    p, y = random_case(*case)
    assert voxel_nll(p, y) == pytest.approx(reference_nll(p, y), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(cases, st.booleans())
def test_ueo_is_the_best_dice_of_thresholded_entropy_and_the_error_mask(case, own_prediction):
    p, y = random_case(*case)
    prediction = (np.random.default_rng(case[1]).random(p.shape) < 0.5) if own_prediction else (p > 0.5)
    assert uncertainty_error_overlap(p, y, prediction) == pytest.approx(reference_ueo(p, y, prediction), abs=1e-12)


def test_metrics_keep_the_shape_of_volumes():
    p, y = random_case(4 * 5 * 6, 3, 0.1)
    flat = calibration_scores(p, y)
    assert calibration_scores(p.reshape(4, 5, 6), y.reshape(4, 5, 6)) == flat


def test_normalised_entropy_is_zero_at_certainty_and_one_at_a_coin_flip():
    assert normalised_entropy(np.array([0.0, 1.0, 0.5])).tolist() == [0.0, 0.0, 1.0]


def test_confident_and_right_probabilities_score_perfectly():
    y = np.zeros((4, 4, 4), np.uint8)
    y[1:3, 1:3, 1:3] = 1
    p = y.astype(np.float64)  # exactly 0 and 1
    scores = calibration_scores(p, y)
    assert scores["ece"] == 0.0 and scores["brier"] == 0.0 and scores["ueo"] == 1.0
    assert scores["nll"] == pytest.approx(-math.log(1 - EPS))


def test_confident_and_wrong_probabilities_cost_the_clipped_nll():
    y = np.array([1, 0])
    p = np.array([0.0, 1.0])
    assert voxel_nll(p, y) == pytest.approx(-math.log(EPS))
    assert brier_score(p, y) == 1.0 and expected_calibration_error(p, y) == 1.0


def test_an_all_background_reference_is_scored():
    y = np.zeros(50, np.uint8)
    p = np.linspace(0, 0.4, 50)
    scores = calibration_scores(p, y)
    assert scores["ece"] == pytest.approx(p.mean()) and scores["brier"] == pytest.approx(np.mean(p ** 2))
    assert scores["ueo"] == 0.0  # uncertain voxels, but no error (every p < 0.5): no overlap


def test_pooled_bins_of_several_cases_give_the_ece_of_all_voxels():
    a, b = random_case(100, 1, 0.0), random_case(70, 2, 0.1)
    bins = ReliabilityBins().add(*a).add(*b)
    both = np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    assert bins.ece() == pytest.approx(reference_ece(*both), abs=1e-12)
    assert bins.count.sum() == 170


@pytest.mark.parametrize("probability, fragment", [
    (np.full(4, 1.5), "in [0, 1]"), (np.full(4, np.nan), "in [0, 1]"), (np.full(5, 0.5), "shape"),
])
def test_bad_probabilities_are_refused(probability, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        brier_score(probability, np.zeros(4))


def test_case_scores_add_calibration_only_when_given_probabilities():
    p, y = random_case(64, 5, 0.1)
    plain, calibrated = CaseScores(), CaseScores()
    plain.add("a", p > 0.5, y)
    calibrated.add("a", p > 0.5, y, probability=p)
    assert plain.metrics() == ("dsc", "iou") and "calibration" not in plain.summary()
    assert calibrated.metrics() == ("dsc", "iou", "ece", "brier", "nll", "ueo", "ece_band", "brier_band", "nll_band",
                                    "ece_all", "brier_all", "nll_all")
    assert calibrated.mean()["ece"] == pytest.approx(reference_ece(p, y))
    assert calibrated.summary()["calibration"]["pooled_ece"] == pytest.approx(reference_ece(p, y))


# ------------------------------------------------------------------ evaluate --probabilities
@pytest.fixture
def predicted(tmp_path):
    """Labels, masks and probability maps of three cases (one with an all-background label)."""
    rng = np.random.default_rng(0)
    labels, preds = tmp_path / "labels", tmp_path / "preds"
    truth = {}
    for i in range(3):
        label = np.zeros((8, 8, 8), np.uint8)
        if i:
            label[2:5, 2:6, 1:5] = 1
        p = np.clip(label * 0.8 + rng.random(label.shape) * 0.3, 0, 1).astype(np.float32)
        p[0, 0, 0] = 1.0
        nifti(labels / f"case{i}.nii.gz", label)
        nifti(preds / f"case{i}.nii.gz", (p > 0.5).astype(np.uint8))
        nifti(preds / f"case{i}_probability.nii.gz", p)
        truth[f"case{i}"] = (p.astype(np.float64), label, (p > 0.5))
    return preds, labels, truth


def test_evaluate_scores_calibration_per_case_and_in_the_summary(predicted, tmp_path):
    preds, labels, truth = predicted
    out = tmp_path / "eval"
    result = run("evaluate", preds, labels, "--probabilities", preds, "--out-dir", out)
    assert_ok(result)
    assert "ECE" in result.output and "UEO" in result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["case_id"]: r for r in summary["metric_per_case"]}
    for case_id, (p, y, prediction) in truth.items():
        assert rows[case_id]["ece"] == pytest.approx(reference_ece(p, y), abs=1e-9)
        assert rows[case_id]["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-9)
        assert rows[case_id]["nll"] == pytest.approx(reference_nll(p, y), rel=1e-7)
        assert rows[case_id]["ueo"] == pytest.approx(reference_ueo(p, y, prediction), abs=1e-9)
    assert summary["mean"]["ece"] == pytest.approx(np.mean([r["ece"] for r in rows.values()]))
    assert summary["calibration"]["n_bins"] == 15 and sum(summary["calibration"]["bin_count"]) == 3 * 512
    with open(out / "per_case.csv") as f:
        assert {"ece", "brier", "nll", "ueo"} <= set(next(csv.DictReader(f)))
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_without_probabilities_writes_no_calibration(predicted):
    preds, labels, _ = predicted
    assert_ok(run("evaluate", preds, labels))
    assert "calibration" not in json.loads((preds / "summary.json").read_text())
    assert not (preds / "reliability.png").exists()


def test_a_missing_probability_map_is_a_one_line_error_naming_it(predicted):
    preds, labels, _ = predicted
    (preds / "case1_probability.nii.gz").unlink()
    assert_one_line_error(run("evaluate", preds, labels, "--probabilities", preds),
                          "case1_probability.nii.gz", "no probability map")


def test_a_probability_map_of_another_shape_is_a_one_line_error_naming_it(predicted):
    preds, labels, _ = predicted
    nifti(preds / "case2_probability.nii.gz", np.zeros((8, 8, 9), np.float32))
    assert_one_line_error(run("evaluate", preds, labels, "--probabilities", preds),
                          "case2_probability.nii.gz", "differs from its label's")


def test_a_probability_map_outside_zero_one_is_a_one_line_error_naming_it(predicted):
    preds, labels, _ = predicted
    nifti(preds / "case0_probability.nii.gz", np.full((8, 8, 8), 2.0, np.float32))
    assert_one_line_error(run("evaluate", preds, labels, "--probabilities", preds),
                          "case0_probability.nii.gz", "outside [0, 1]")
