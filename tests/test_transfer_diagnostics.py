"""benchmarks/transfer_diagnostics.py: the last epoch's data term and KL per method, against the baseline's fit."""
import json
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from bayesprior.checkpoints import save_model

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
    assert table["dwp"][2:] == [2, "2", "-", "15.0", "5.0", "9e+03", "9.0", "-", "-", "0.450"]
    assert table["ri"][2:] == [2, "2", "-", "3.0", "1.0", "0", "0.0", "-", "-", "0.650"]


def test_a_folder_without_finished_runs_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    with pytest.raises(SystemExit, match="no finished run"):
        diagnostics["main"]([str(tmp_path)])


def _network(path, scale, source=None, pointwise_scale=100.0):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Conv3d(2, 2, 1))
    with torch.no_grad():
        net[0].weight.mul_(scale)
        net[1].weight.mul_(pointwise_scale)  # a 1x1x1 layer: not a kernel, measured on its own
    save_model(net, path, extra={"train_config": {"source": str(source) if source else None}})


def test_the_kernels_distance_from_the_recorded_source_network(tmp_path, capsys):
    _network(tmp_path / "source.pt", 1.0)
    for run_id, method, scale, lrs in [("split0_n5_pr", "pr", 1.5, [1e-3, 1e-3, 1e-4]),
                                        ("split0_n5_dwp", "dwp", 3.0, [1e-3, 1e-3, 1e-3])]:
        _run(tmp_path, run_id, method, 0, [{"loss": 4.0, "data": 4.0, "lr": lr} for lr in lrs], 0.6)
        _network(tmp_path / "runs" / run_id / "model.pt", scale, source=tmp_path / "source.pt")
    (tmp_path / "runs" / "split0_n5_dwp" / "model.pt").rename(tmp_path / "runs" / "split0_n5_dwp" / "gone.pt")
    # records no source (the other's is used); its 1x1x1 layer moved 4 times its own size
    _network(tmp_path / "runs" / "split0_n5_dwp" / "model.pt", 3.0, pointwise_scale=500.0)
    assert diagnostics["recorded_source"](tmp_path) == tmp_path / "source.pt"
    rows = {r["method"]: r for r in diagnostics["last_epochs"](tmp_path, tmp_path / "source.pt")}
    assert rows["pr"]["moved"] == pytest.approx(0.5) and rows["dwp"]["moved"] == pytest.approx(2.0)
    assert rows["pr"]["moved_pointwise"] == pytest.approx(0.0) and rows["dwp"]["moved_pointwise"] == pytest.approx(4.0)
    assert (rows["pr"]["lr_drop"], rows["dwp"]["lr_drop"]) == (3, float("inf"))
    diagnostics["main"]([str(tmp_path), "--baseline", "pr"])
    out = capsys.readouterr().out
    assert str(tmp_path / "source.pt") in out
    assert "| dwp | 5 | 1 | 3 | - (1 never) | 4.0 | 1.0 | 0 | 0.0 | 2.00 | 4.00 | 0.600 |" in out
    assert "| pr | 5 | 1 | 3 | 3 | 4.0 | 1.0 | 0 | 0.0 | 0.50 | 0.00 | 0.600 |" in out


def test_an_unreadable_model_gives_no_distance_and_a_bad_source_is_refused(tmp_path):
    _network(tmp_path / "source.pt", 1.0)
    _run(tmp_path, "split0_n5_pr", "pr", 0, [{"loss": 4.0}], 0.6)
    (tmp_path / "runs" / "split0_n5_pr" / "model.pt").write_bytes(b"not a model")
    [row] = diagnostics["last_epochs"](tmp_path, tmp_path / "source.pt")
    assert row["moved"] != row["moved"]  # NaN
    with pytest.raises(SystemExit, match="not a readable model file"):
        diagnostics["main"]([str(tmp_path), "--source", str(tmp_path / "runs" / "split0_n5_pr" / "model.pt")])


def test_a_bayesian_runs_data_term_is_put_on_the_per_batch_scale_of_a_deterministic_one(tmp_path):
    # the trainer logs N x the mean per case for a Bayesian run (the ELBO's term), the batch's loss otherwise
    for run_id, method in [("split0_n5_ri", "ri"), ("split0_n5_dwp", "dwp")]:
        _run(tmp_path, run_id, method, 0, [{"loss": 50.0 if method == "dwp" else 4.0, "data": 40.0 if method == "dwp"
                                            else 4.0, "kl": 1e4 if method == "dwp" else 0.0}], 0.6)
        (tmp_path / "runs" / run_id / "config.json").write_text(json.dumps(
            {"train_config": {"method": method, "batch_size": 2}, "n_train": 10}))
    rows = {r["method"]: r for r in diagnostics["last_epochs"](tmp_path)}
    assert rows["dwp"]["data"] == pytest.approx(8.0) and rows["ri"]["data"] == pytest.approx(4.0)
    table = {row[0]: row for row in diagnostics["summary"](list(rows.values()), "ri")}
    assert table["dwp"][5:9] == ["8.0", "2.0", "1e+04", "0.2"]  # weighted KL 10 against the loss's data term 40


def test_the_logs_data_per_case_is_used_where_present(tmp_path):
    # a newer log: data_per_case x batch size, whatever the method (the Bayesian data term 40 would give 8.0)
    _run(tmp_path, "split0_n5_dwp", "dwp", 0, [{"loss": 50.0, "data": 40.0, "data_per_case": 1.5, "kl": 1e4}], 0.6)
    (tmp_path / "runs" / "split0_n5_dwp" / "config.json").write_text(json.dumps(
        {"train_config": {"method": "dwp", "batch_size": 2}, "n_train": 10}))
    [row] = diagnostics["last_epochs"](tmp_path)
    assert row["data"] == pytest.approx(3.0) and row["logged_data"] == pytest.approx(40.0)
