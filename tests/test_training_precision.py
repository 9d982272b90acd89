"""Mixed precision and KL warm-up in the trainer."""
import json

import numpy as np
import pytest
import torch

from bayesprior.checkpoints import load_model
from bayesprior.training.config import TrainConfig
from bayesprior.training.trainer import evaluate_cases, train

from training_fixtures import make_cases


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_bf16_autocast_on_cpu_trains_to_the_same_dsc_within_noise(tmp_path, tiny_architecture):
    cases, val = make_cases(6, size=16, seed=0), make_cases(3, size=16, seed=1)
    scores = {}
    for amp in (None, "bf16"):
        config = TrainConfig(architecture=tiny_architecture, architecture_config={"in_channels": 1, "n_classes": 2,
                             "width": 8}, max_epochs=10, lr=0.02, progress=False, amp=amp, ce_reduction="mean",
                             dice_weight=0.5, ce_weight=0.5)
        run = tmp_path / str(amp)
        train(config, cases, val, run)
        log = _log(run)
        assert all(np.isfinite(r["loss"]) for r in log)
        model = load_model(run / "model.pt")
        scores[amp] = evaluate_cases(model, val, config, torch.device("cpu"))["val_dsc"]
    assert scores[None] > 0.5 and abs(scores["bf16"] - scores[None]) < 0.15


def test_the_kl_stays_float32_under_autocast(tmp_path, tiny_architecture):
    config = TrainConfig(architecture=tiny_architecture, method="gaussian", max_epochs=1, progress=False, amp="bf16",
                         forward_mode="sample")
    train(config, make_cases(2, size=8), None, tmp_path / "run")
    log = _log(tmp_path / "run")[0]
    # a float32 KL of ~1e3 nats keeps its fractional digits; bfloat16 would round it to a multiple of 4 or more
    assert log["kl"] > 100 and log["kl"] != round(log["kl"] / 4) * 4


def test_kl_warmup_raises_the_weight_linearly(tmp_path, tiny_architecture):
    config = TrainConfig(architecture=tiny_architecture, method="gaussian", max_epochs=4, progress=False,
                         kl_weight=0.5, kl_warmup=4, batch_size=2)
    train(config, make_cases(2, size=8), None, tmp_path / "run")
    for record in _log(tmp_path / "run"):
        weight = 0.5 * min(1.0, record["epoch"] / 4)
        assert record["loss"] == pytest.approx(record["data"] + weight * record["kl"], rel=1e-5)


def test_fp16_resume_restores_the_gradient_scaler(tmp_path, tiny_architecture):
    cases = make_cases(3, size=8)
    settings = dict(architecture=tiny_architecture, progress=False, amp="fp16")
    whole = train(TrainConfig(max_epochs=2, **settings), cases, None, tmp_path / "a")
    train(TrainConfig(max_epochs=1, **settings), cases, None, tmp_path / "b")
    resumed = train(TrainConfig(max_epochs=2, **settings), cases, None, tmp_path / "b")
    a, b = load_model(whole).state_dict(), load_model(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
