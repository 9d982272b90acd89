"""Experiment configuration, splits, sharding, resumable results and tables."""
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior.errors import ConfigError
from bayesprior.experiment.config import load_config, parse_config
from bayesprior.experiment.report import markdown_table, write_tables
from bayesprior.experiment.runs import ResultStore, RunSpec, all_runs, make_splits, parse_shard, shard_runs

REPO = Path(__file__).resolve().parents[1]


def _config(**protocol):
    raw = {"source": {"synthetic": {"kind": "ms", "cases": 4}},
           "target": {"synthetic": {"kind": "tumour", "cases": 12}},
           "protocol": {"train_sizes": [2, 4], "test_size": 5, "splits": 3, "methods": ["dwp", "ri"], **protocol}}
    return parse_config(raw)


def test_shipped_configs_are_valid():
    paper = load_config(REPO / "configs" / "paper.toml")
    assert paper.train_sizes == (5, 10, 15, 20) and paper.test_size == 50 and paper.splits == 3
    cpu = load_config(REPO / "benchmarks" / "transfer_cpu.toml")
    assert cpu.target.synthetic_shape == (40, 48, 40)
    for path in [*(REPO / "configs").glob("*.toml"), *(REPO / "benchmarks").rglob("*.toml")]:
        load_config(path)  # every shipped experiment config parses


@pytest.mark.parametrize("probe", ["transfer_gpu_ms_probe.toml", "transfer_gpu_ms_probe_priors.toml"])
def test_the_ms_probes_differ_from_the_benchmark_only_on_the_target_side(probe):
    # they run on a copy of the benchmark's source stage: any source-side difference would be refused there,
    # and a target-training difference would make them a different question from the one their header asks
    cpu = load_config(REPO / "benchmarks" / "transfer_cpu.toml").to_dict()
    other = load_config(REPO / "benchmarks" / probe).to_dict()
    assert {k for k in cpu if cpu[k] != other[k]} == {"target", "target_train_options", "target_method_options",
                                                       "train_sizes", "splits", "methods"}
    assert other["target_train_options"] == {**cpu["target_train_options"], "device": "cuda"}
    assert all(other["target_method_options"][m] == cpu["target_method_options"][m] for m in other["methods"]
               if m in other["target_method_options"])


def test_unknown_key_is_named_in_the_error():
    with pytest.raises(ConfigError, match="bogus"):
        parse_config({"source": {"path": "x"}, "target": {"path": "y"}, "protocol": {"bogus": 1}})


def test_dataset_needs_exactly_one_of_path_or_synthetic():
    with pytest.raises(ConfigError, match=r"\[target\]"):
        parse_config({"source": {"path": "x"}, "target": {}})


def test_splits_are_seeded_disjoint_and_nested():
    ids = [f"c{i:02d}" for i in range(12)]
    a, b = make_splits(ids, _config()), make_splits(ids, _config())
    assert a == b
    assert [s.seed for s in a] == [42, 43, 44]
    for s in a:
        assert len(s.test) == 5 and not set(s.test) & set(s.train_pool)
        assert set(s.train_cases(2)) <= set(s.train_cases(4))
    assert a[0].test != a[1].test


@settings(max_examples=60, deadline=None)
@given(n_cases=st.integers(8, 30), test_size=st.integers(1, 8), largest=st.integers(1, 6), k=st.integers(0, 5),
       listed=st.booleans())
def test_schedule_cases_come_off_the_pool_end_and_leave_training_prefixes_as_they_were(n_cases, test_size, largest,
                                                                                       k, listed):
    ids = [f"c{i:02d}" for i in range(n_cases)]
    protocol = {"train_sizes": [largest], "test_size": test_size, "splits": 2}
    if listed:
        protocol["test_cases"] = ids[:test_size]
    if test_size + largest + k > n_cases:
        with pytest.raises(ConfigError, match="schedule_cases" if k else "train"):
            make_splits(ids, _config(**protocol, schedule_cases=k))
        return
    without, with_k = make_splits(ids, _config(**protocol)), make_splits(ids, _config(**protocol, schedule_cases=k))
    for a, b in zip(without, with_k, strict=True):
        assert b.test == a.test and len(b.schedule) == k
        assert b.train_pool + b.schedule == a.train_pool  # the same shuffled pool, its last k cases set aside
        assert b.train_cases(largest) == a.train_cases(largest)
        assert not set(b.schedule) & (set(b.test) | set(b.unused_pool(largest)) | set(b.train_cases(largest)))


def test_too_few_cases_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs 9"):
        make_splits([f"c{i}" for i in range(8)], _config())
    with pytest.raises(ConfigError, match="schedule_cases 3 needs 12"):
        make_splits([f"c{i}" for i in range(11)], _config(schedule_cases=3))


def test_shards_partition_the_runs():
    runs = all_runs(_config())
    assert len(runs) == 3 * 2 * 2
    shards = [shard_runs(runs, (i, 3)) for i in range(3)]
    assert sorted(r.run_id for s in shards for r in s) == sorted(r.run_id for r in runs)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "a/b", "1"):
        with pytest.raises(ConfigError):
            parse_shard(bad)


def test_result_store_skips_finished_runs(tmp_path):
    store = ResultStore(tmp_path)
    runs = [RunSpec(0, 2, "ri"), RunSpec(0, 2, "dwp")]
    store.write(runs[0], {"dsc": 0.5, "iou": 0.33})
    assert store.pending(runs) == [runs[1]]
    assert store.read_all()[0]["method"] == "ri"


def test_table_has_mean_std_per_train_size_and_bold_best(tmp_path):
    results = [{"split": s, "train_size": 2, "method": m, "dsc": d + 0.01 * s, "iou": d / 2}
               for s in range(3) for m, d in (("dwp", 0.7), ("ri", 0.6))]
    table = markdown_table(results, "dsc", ["dwp", "ri"], [2])
    assert "**0.710 (0.010)**" in table and "0.610 (0.010)" in table
    text = write_tables(results, ["dwp", "ri"], [2], tmp_path)
    assert "Intersection over Union" in text
    assert (tmp_path / "table.csv").read_text().splitlines()[1].startswith("2,dwp,0.7100")


def test_a_validation_fraction_outside_zero_one_is_refused_when_the_config_is_read():
    raw = {"source": {"synthetic": {"kind": "ms"}}, "target": {"synthetic": {"kind": "tumour"}},
           "source_training": {"val_fraction": 1.0}}
    with pytest.raises(ConfigError, match="source_training.val_fraction"):
        parse_config(raw)


def test_table_reports_calibration_beside_dsc_with_the_lowest_in_bold(tmp_path):
    results = [{"split": s, "train_size": 2, "method": m, "dsc": 0.7, "iou": 0.5, "ece": e + 0.002 * s,
                "brier": e, "nll": 10 * e, "ece_band": 5 * e, "brier_band": 5 * e, "nll_band": 50 * e,
                "ece_all": e / 10, "brier_all": e / 10, "nll_all": e, "calibration_region": "body mask"}
               for s in range(2) for m, e in (("dwp", 0.02), ("ri", 0.05))]
    text = write_tables(results, ["dwp", "ri"], [2], tmp_path)
    assert "expected calibration error" in text and "Brier" in text and "log-likelihood" in text
    assert "in the body mask" in text and "in the band" in text and "every voxel" not in text
    assert "**0.021 (0.001)**" in text and "**0.051 (0.001)**" not in text
    header, first = (tmp_path / "table.csv").read_text().splitlines()[:2]
    assert header.endswith("ece_mean,ece_std,brier_mean,brier_std,nll_mean,nll_std,ece_band_mean,ece_band_std,"
                           "brier_band_mean,brier_band_std,nll_band_mean,nll_band_std,ece_all_mean,ece_all_std,"
                           "brier_all_mean,brier_all_std,nll_all_mean,nll_all_std")
    assert first.split(",")[7] == "0.0210"


def test_results_written_before_calibration_was_measured_still_make_a_table(tmp_path):
    results = [{"split": 0, "train_size": 2, "method": "ri", "dsc": 0.7, "iou": 0.5}]
    text = write_tables(results, ["ri"], [2], tmp_path)
    assert "calibration" not in text
    assert (tmp_path / "table.csv").read_text().splitlines()[1] == "2,ri,0.7000,0.0000,0.5000,0.0000,1" + "," * 18
