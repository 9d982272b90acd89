import json

import pytest
import torch

from bayesprior.checkpoints import load_model, read_model_file
from bayesprior.errors import ConfigError
from bayesprior.training.trainer import TrainConfig, TrainingStopped, train

from training_fixtures import make_cases


def _config(arch, **kw):
    base = dict(architecture=arch, architecture_config={"in_channels": 1, "n_classes": 2}, max_epochs=4,
                batch_size=2, progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _weights(path):
    return read_model_file(path)["state_dict"]


def _stop_after(n):
    def callback(epoch, record):
        if epoch == n:
            raise TrainingStopped(f"stopped after epoch {epoch}")
    return callback


@pytest.mark.parametrize("method", ["ri", "gaussian"])
def test_interrupted_run_resumes_to_the_same_weights(tiny_architecture, tmp_path, method):
    cases = make_cases(3)
    full = train(_config(tiny_architecture, method=method), cases, run_dir=tmp_path / "full")
    with pytest.raises(TrainingStopped):
        train(_config(tiny_architecture, method=method), cases, run_dir=tmp_path / "cut",
              epoch_callback=_stop_after(2))
    resumed = train(_config(tiny_architecture, method=method), cases, run_dir=tmp_path / "cut")
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    # the training time counts the epochs of both sessions, each once
    assert all(r["seconds"] > 0 for r in log)
    recorded = read_model_file(resumed)["extra"]["train_seconds"]
    assert recorded == pytest.approx(sum(r["seconds"] for r in log), abs=0.06)


def test_resume_with_different_settings_is_refused(tiny_architecture, tmp_path):
    cases = make_cases(2)
    with pytest.raises(TrainingStopped):
        train(_config(tiny_architecture), cases, run_dir=tmp_path, epoch_callback=_stop_after(1))
    with pytest.raises(ConfigError, match="lr"):
        train(_config(tiny_architecture, lr=1e-2), cases, run_dir=tmp_path)


def test_run_records_config_log_curves_and_model(tiny_architecture, tmp_path):
    cases = make_cases(4)
    model_path = train(_config(tiny_architecture, max_epochs=2, ce_reduction="mean", kl_weight=0.5),
                       cases[:3], val_cases=cases[3:], run_dir=tmp_path, preprocess={"intensity": "minmax"})
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["monitor"] == "validation loss"
    assert record["val_cases"] == ["case03"] and record["train_cases"] == ["case00", "case01", "case02"]
    assert record["loss"]["ce_reduction"] == "mean" and record["loss"]["kl_weight"] == 0.5
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"loss", "data", "kl", "lr", "val_loss", "val_dsc"} <= set(log[0])
    assert (tmp_path / "curves.png").stat().st_size > 0
    extra = read_model_file(model_path)["extra"]
    assert extra["preprocess"] == {"intensity": "minmax"}
    assert extra["train_config"]["architecture"] == tiny_architecture
    assert isinstance(load_model(model_path), torch.nn.Module)


def test_without_validation_the_training_loss_is_monitored(tiny_architecture, tmp_path):
    train(_config(tiny_architecture, max_epochs=1), make_cases(2), run_dir=tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["monitor"] == "training loss"


def test_lr_monitor_data_steps_the_schedule_on_the_data_term_alone(tiny_architecture, tmp_path):
    from bayesprior.training import trainer

    class Scheduler:  # records what it was stepped on
        def __init__(self):
            self.seen = []

        def step(self, value):
            self.seen.append(value)

    entry = {"epoch": 1, "loss": 40.0, "data": 2.0}  # a Bayesian run: the loss is mostly weighted KL
    for monitor, expected in (("loss", 40.0), ("data", 2.0)):
        net = torch.nn.Linear(1, 1)
        run = trainer._Run(net, torch.optim.Adam(net.parameters()), Scheduler(), None, None)
        trainer._end_of_epoch(run, dict(entry), _config(tiny_architecture, lr_monitor=monitor), {}, None)
        assert run.scheduler.seen == [expected]
    run.scheduler.seen.clear()
    trainer._end_of_epoch(run, dict(entry, val_loss=3.0), _config(tiny_architecture, lr_monitor="data"), {}, None)
    assert run.scheduler.seen == [3.0]  # validation cases: their loss, whatever the setting
    train(_config(tiny_architecture, max_epochs=1, method="gaussian", lr_monitor="data"), make_cases(2),
          run_dir=tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["monitor"] == "training data term"
    with pytest.raises(ConfigError, match="lr_monitor must be one of 'loss', 'data', got 'kl'"):
        _config(tiny_architecture, lr_monitor="kl")


def test_restarts_write_one_checkpoint_per_minimum(tiny_architecture, tmp_path):
    # patience 0 and a big factor reach lr < min_lr fast, so each minimum takes two epochs
    cfg = _config(tiny_architecture, max_epochs=20, patience=0, factor=0.001, min_lr=1e-6, threshold=10.0,
                  restarts=1, zoo_dir=str(tmp_path / "zoo"))
    train(cfg, make_cases(2), run_dir=tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["seed3_min0.pt", "seed3_min1.pt"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("restart") == 1 for r in log)
    assert len(log) < 20


def test_seed_fixes_the_result(tiny_architecture, tmp_path):
    cases = make_cases(2)
    a = train(_config(tiny_architecture, max_epochs=1), cases, run_dir=tmp_path / "a")
    b = train(_config(tiny_architecture, max_epochs=1), cases, run_dir=tmp_path / "b")
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_bayesian_loss_is_n_times_mean_nll_plus_weighted_kl(tiny_architecture, tmp_path):
    cfg = _config(tiny_architecture, method="gaussian", max_epochs=1, kl_weight=0.25)
    train(cfg, make_cases(2), run_dir=tmp_path)  # one batch of 2 = all N cases
    (entry,) = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert entry["kl"] > 0
    assert entry["loss"] == pytest.approx(entry["data"] + 0.25 * entry["kl"], rel=1e-5)
    assert entry["data"] == pytest.approx(2 * entry["data_per_case"], rel=1e-5)  # N = 2 times the mean per case


@pytest.mark.parametrize("method", ["ri", "gaussian"])
def test_data_per_case_is_on_one_scale_for_every_method(tiny_architecture, tmp_path, method):
    # 4 cases, batches of 2: the logged data term is N = 4 x the mean per case for a Bayesian run (the ELBO's)
    # and the batch's loss = 2 x the mean per case for a deterministic one; data_per_case is the same quantity
    cfg = _config(tiny_architecture, method=method, max_epochs=1, batch_size=2)
    train(cfg, make_cases(4), run_dir=tmp_path)
    (entry,) = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert entry["data_per_case"] > 0
    assert entry["data"] == pytest.approx((4 if method == "gaussian" else 2) * entry["data_per_case"], rel=1e-5)


def test_batch_data_loss_in_one_process_is_the_segmentation_loss():
    from bayesprior.training.losses import segmentation_loss
    from bayesprior.training.trainer import batch_data_loss

    logits, target = torch.randn(2, 2, 4, 4, 4), (torch.rand(2, 4, 4, 4) > 0.5).long()
    cfg = TrainConfig().loss_config()
    loss, n = batch_data_loss(logits, target, cfg)
    assert n.item() == 2 and torch.allclose(loss, segmentation_loss(logits, target, cfg))


def test_resume_drops_log_lines_of_an_epoch_that_was_not_checkpointed(tiny_architecture, tmp_path):
    cases = make_cases(2)
    with pytest.raises(TrainingStopped):
        train(_config(tiny_architecture, max_epochs=3), cases, run_dir=tmp_path, epoch_callback=_stop_after(1))
    with open(tmp_path / "log.jsonl", "a") as log:  # as if killed between the log line and the checkpoint
        log.write(json.dumps({"epoch": 2, "loss": -1.0}) + "\n")
    train(_config(tiny_architecture, max_epochs=3), cases, run_dir=tmp_path)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3] and all(r["loss"] != -1.0 for r in log)


_KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import torch
torch.set_num_threads({threads})  # same as the resuming process: results depend on it
from bayesprior.plugins import register_plugin
from bayesprior.training.trainer import TrainConfig, train
from training_fixtures import TinyArchitecturePlugin, make_cases
register_plugin(TinyArchitecturePlugin(), "tiny")

def kill(epoch, record):
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGKILL)

train(TrainConfig(architecture="tiny3d", max_epochs=4, progress=False, seed=3), make_cases(3),
      run_dir={run_dir!r}, epoch_callback=kill)
"""


def test_run_killed_by_sigkill_resumes_to_the_same_weights(tiny_architecture, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = _KILLED_RUN.format(tests=str(Path(__file__).parent), run_dir=str(tmp_path / "killed"),
                                threads=torch.get_num_threads())
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    assert not (tmp_path / "killed" / "model.pt").exists()
    resumed = train(_config(tiny_architecture), make_cases(3), run_dir=tmp_path / "killed")
    full = train(_config(tiny_architecture), make_cases(3), run_dir=tmp_path / "full")
    a, b = _weights(full), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_relative_and_an_absolute_posterior_variance_together_are_refused():
    with pytest.raises(ConfigError, match="log_variance_init has no effect with posterior_std_ratio"):
        TrainConfig(method="gaussian", posterior_std_ratio=0.1, log_variance_init=-14.0)
    assert TrainConfig(method="gaussian", posterior_std_ratio=0.1).log_variance_init == -10.0
