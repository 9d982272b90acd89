"""benchmarks/transfer_diagnostics.py: the last epoch's data term and KL per method, against the baseline's fit."""
import json
import runpy
from pathlib import Path

import pytest

diagnostics = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "transfer_diagnostics.py"))


def _run(folder, run_id, method, split, epochs, dsc):
    (folder / "results").mkdir(parents=True, exist_ok=True)
    (folder / "results" / f"{run_id}.json").write_text(json.dumps(
        {"method": method, "split": split, "train_size": 5, "dsc": dsc}))
    (folder / "runs" / run_id).mkdir(parents=True)
    records = [{"epoch": k, **e} for k, e in enumerate(epochs, start=1)]
    (folder / "runs" / run_id / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_last_epoch_is_read_and_the_data_term_divided_by_the_baselines_on_the_same_split(tmp_path):
    _run(tmp_path, "split0_n5_ri", "ri", 0, [{"loss": 9.0}, {"loss": 4.0}], 0.6)
    _run(tmp_path, "split1_n5_ri", "ri", 1, [{"loss": 2.0}], 0.7)
    _run(tmp_path, "split0_n5_dwp", "dwp", 0, [{"loss": 500.0, "data": 50.0, "kl": 1e4},
                                               {"loss": 220.0, "data": 20.0, "kl": 1e4}], 0.5)
    _run(tmp_path, "split1_n5_dwp", "dwp", 1, [{"loss": 90.0, "data": 10.0, "kl": 8e3}], 0.4)
    (tmp_path / "results" / "split2_n5_dwp.json").write_text(json.dumps(  # a result without a run folder: skipped
        {"method": "dwp", "split": 2, "train_size": 5, "dsc": 0.9}))
    rows = diagnostics["last_epochs"](tmp_path)
    assert len(rows) == 4
    table = {row[0]: row for row in diagnostics["summary"](rows, "ri")}
    # dwp: data 20 and 10 (ratios 5 and 5), weighted KL 200 and 80 (ratios to data 10 and 8), DSC 0.5 and 0.4
    assert table["dwp"][2:] == [2, "2", "15.0", "5.0", "9e+03", "9.0", "0.450"]
    assert table["ri"][2:] == [2, "2", "3.0", "1.0", "0", "0.0", "0.650"]


def test_a_folder_without_finished_runs_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    with pytest.raises(SystemExit, match="no finished run"):
        diagnostics["main"]([str(tmp_path)])
