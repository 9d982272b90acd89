"""The rule that turns the tuning grid into the benchmark's settings: best mean validation DSC, ties to the cheaper
and simpler variant, shared Bayesian settings to the Bayesian methods' per-method tables; an unfinished grid or a
test-scored one refused."""
import json
import runpy
import tomllib
from pathlib import Path

import pytest

from bayesprior.experiment.config import parse_config
from bayesprior.experiment.runs import all_runs

REPO = Path(__file__).parents[1]
GRID = REPO / "benchmarks" / "transfer_cpu_tuning.toml"
choose = runpy.run_path(str(REPO / "benchmarks" / "choose_target_settings.py"))


def _write_results(out, dsc_of, skip=()):
    config = parse_config(tomllib.loads(GRID.read_text()), GRID)
    (out / "results").mkdir(parents=True)
    for run in all_runs(config):
        if run.method not in skip:
            result = {"split": run.split, "train_size": run.train_size, "method": run.method,
                      "dsc": dsc_of(run.method, run.split), "scored_on": "validation"}
            (out / "results" / f"{run.run_id}.json").write_text(json.dumps(result))


def test_the_variant_with_the_best_mean_validation_dsc_is_chosen_and_its_settings_printed(tmp_path, capsys):
    _write_results(tmp_path, lambda m, s: {"dwp_source_narrow": 0.70, "dwp_narrow": 0.66}.get(m, 0.5) + 0.01 * s)
    choose["main"]([str(GRID), str(tmp_path)])
    out = capsys.readouterr().out
    assert "chosen: dwp_source_narrow" in out
    assert 'prior_init = "source"' in out and "log_variance_init = -14.0" in out
    for method in ("dwp", "gaussian", "corrnormal"):  # the Bayesian baselines are trained the same way
        table = out.split(f"[target_training.per_method.{method}]\n")[1].split("\n\n")[0]
        assert table.splitlines() == ['prior_init = "source"', "log_variance_init = -14.0"]
    lines = [line.split()[0] for line in out.splitlines() if "mean validation DSC" in line]
    assert lines[:2] == ["dwp_source_narrow", "dwp_narrow"] and lines[-2:] == ["ri", "pr"]


def test_within_the_tie_margin_sample_beats_lrt_and_fewer_changes_win(tmp_path, capsys):
    _write_results(tmp_path, lambda m, s: {"dwp_lrt": 0.702, "dwp_source_narrow": 0.701, "dwp_narrow": 0.699}.get(m, 0.5))
    choose["main"]([str(GRID), str(tmp_path)])
    out = capsys.readouterr().out
    assert "chosen: dwp_narrow" in out  # one change, sample, within 0.005 of the lrt variant
    assert "[target_training.per_method.dwp]\nlog_variance_init = -14.0\n" in out


def test_dwp_only_settings_go_to_the_dwp_section(tmp_path, capsys):
    _write_results(tmp_path, lambda m, s: 0.8 if m == "dwp_frozen" else 0.5)
    choose["main"]([str(GRID), str(tmp_path)])
    out = capsys.readouterr().out
    assert "chosen: dwp_frozen" in out
    assert "[target_training.per_method.dwp]\nprior_options = { fine_tune_encoder = false }" in out
    assert "per_method.gaussian" not in out and "per_method.corrnormal" not in out


def test_an_unfinished_grid_is_refused(tmp_path):
    _write_results(tmp_path, lambda m, s: 0.5, skip=("dwp_warmup",))
    with pytest.raises(SystemExit, match="not finished.*dwp_warmup"):
        choose["main"]([str(GRID), str(tmp_path)])


def test_a_grid_scored_on_the_test_set_is_refused(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(GRID.read_text().replace('score_on = "validation"', 'score_on = "test"'))
    with pytest.raises(SystemExit, match="validation cases only"):
        choose["main"]([str(config), str(tmp_path)])


def test_a_result_scored_on_the_test_set_is_refused(tmp_path):
    _write_results(tmp_path, lambda m, s: 0.5)
    path = next((tmp_path / "results").glob("split1_*.json"))
    path.write_text(path.read_text().replace('"validation"', '"test"'))
    with pytest.raises(SystemExit, match="scored on 'test' cases.*validation cases only"):
        choose["main"]([str(GRID), str(tmp_path)])


def test_a_setting_that_repeats_the_base_value_is_not_a_change(tmp_path):
    config = parse_config(tomllib.loads(GRID.read_text()), GRID)
    variants = choose["dwp_variants"](config)
    assert variants["dwp"] == {} and variants["dwp_kl_small"] == {"kl_weight": 0.001}
    config.target_method_options["dwp_kl_small"]["forward_mode"] = "sample"  # the base's own value
    assert choose["dwp_variants"](config)["dwp_kl_small"] == {"kl_weight": 0.001}
