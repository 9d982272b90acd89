"""benchmarks/holm_family.py: one family's comparisons from several experiments, with Holm's adjusted p."""
import runpy
from pathlib import Path

import pytest

family = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "holm_family.py"))
HEADER = "method,baseline,train_size,splits,mean_dsc_difference,ci_low,ci_high,wilcoxon_p,verdict,detectable_difference\n"


def _csv(path, *rows):
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


def test_the_family_is_read_across_files_and_better_needs_the_corrected_p(tmp_path):
    near = _csv(tmp_path / "near_comparisons.csv", "a,pr,5,10,0.03,0.01,0.05,0.0039,better,0.02",
                "a,pr,10,10,0.03,0.01,0.05,0.0039,better,0.02",   # another size: not in the family
                "a,ri,5,10,0.03,0.01,0.05,0.0039,better,0.02")    # another baseline: not in the family
    far = _csv(tmp_path / "far_comparisons.csv", "a,pr,5,10,-0.05,-0.08,-0.02,0.0195,worse,0.04",
               "b,pr,5,10,0.02,0.001,0.04,0.0273,better,0.02")
    rows = family["family_rows"]([near, far], 5, "pr")
    assert [(r["file"], r["method"]) for r in rows] == [("near", "a"), ("far", "a"), ("far", "b")]
    adjusted = family["holm_adjusted"]([float(r["wilcoxon_p"]) for r in rows])
    assert adjusted == pytest.approx([0.0117, 0.039, 0.039])
    verdicts = [family["corrected_verdict"](r, p) for r, p in zip(rows, adjusted, strict=True)]
    assert verdicts == ["better", "worse", "better"]
    # the same "b" in a larger family: its corrected p passes 0.05, so its raw "better" does not stand
    assert family["corrected_verdict"](rows[2], 0.0546) == "no difference shown"
    # a harm is read at its raw level, whatever the correction
    assert family["corrected_verdict"](rows[1], 0.2) == "worse"


def test_too_few_splits_give_no_verdict(tmp_path):
    rows = family["family_rows"]([_csv(tmp_path / "x_comparisons.csv", "a,pr,5,4,0.03,0.01,0.05,0.125,-,0.1")], 5, "pr")
    assert family["corrected_verdict"](rows[0], 0.125) == "too few splits (4)"


def test_the_family_is_drawn_as_one_interval_per_comparison(tmp_path):
    rows = family["family_rows"]([_csv(tmp_path / "x_comparisons.csv", "a,pr,5,10,0.03,0.01,0.05,0.0039,better,0.02",
                                        "b,pr,5,10,-0.01,-0.02,0.01,0.5,-,0.02")], 5, "pr")
    family["plot_family"](rows, [0.0078, 0.5], tmp_path / "family.png", -0.03)
    assert (tmp_path / "family.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_excluded_method_is_left_out_of_the_family(tmp_path):
    both = _csv(tmp_path / "far_dwp_comparisons.csv", "ri,pr,5,10,-0.05,-0.08,-0.03,0.0039,worse,0.04",
                "dwp_prior,pr,5,10,-0.03,-0.05,-0.01,0.037,worse,0.04")
    assert [r["method"] for r in family["family_rows"]([both], 5, "pr")] == ["ri", "dwp_prior"]
    assert [r["method"] for r in family["family_rows"]([both], 5, "pr", ("ri",))] == ["dwp_prior"]
