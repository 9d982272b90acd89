"""benchmarks/training_fit.py: the data term of a network on its training cases, at the means and with samples."""
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import bayesprior as bp
from bayesprior.training.losses import LossConfig
from bayesprior.training.trainer import batch_data_loss

fit_script = runpy.run_path(str(Path(__file__).parents[1] / "benchmarks" / "training_fit.py"))


def _data(n=5):
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(8, 8, 8)).astype(np.float32) for _ in range(n)]
    labels = [(rng.random((8, 8, 8)) > 0.7).astype(np.int64) for _ in range(n)]
    return images, labels


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


def test_the_loss_is_the_trainers_data_term_averaged_over_batches_the_last_one_short():
    images, labels = _data(5)
    net, loss = _net(), LossConfig()
    expected = []
    for start in (0, 2, 4):
        x = torch.stack([torch.as_tensor(a)[None] for a in images[start:start + 2]])
        y = torch.stack([torch.as_tensor(a) for a in labels[start:start + 2]])
        with torch.no_grad():
            expected.append(float(batch_data_loss(net(x), y, loss)[0]))
    assert fit_script["fit"](net, images, labels, loss, 2, samples=2) == {"means": pytest.approx(np.mean(expected))}


@pytest.mark.parametrize("log_variance, close", [(-30.0, True), (0.0, False)])
def test_weight_samples_cost_the_fit_only_when_the_posterior_is_wide(log_variance, close):
    images, labels = _data(4)
    deterministic = fit_script["fit"](_net(), images, labels, LossConfig(), 2, samples=2)["means"]
    bm = bp.bayesianize(_net(), {bp.by_kernel_size(3): ("gaussian", {"scale": 0.1})}, log_variance_init=log_variance,
                        mode="sample")
    values = fit_script["fit"](bm, images, labels, LossConfig(), 2, samples=3)
    assert values["means"] == pytest.approx(deterministic, rel=1e-5)  # the means are the network's weights
    assert (values["samples"] == pytest.approx(values["means"], rel=1e-3)) is close
    assert bm.mode == "sample"  # the forward mode is given back


def test_a_missing_run_is_refused_in_one_line(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[source]\nsynthetic = { kind = "ms", cases = 2, shape = [16, 16, 16] }\n[target]\nsynthetic = { kind = "tumour", cases = 2, shape = [16, 16, 16] }\n'
                      '[protocol]\nmethods = ["ri"]\ntrain_sizes = [1]\ntest_size = 1\nsplits = 1\n')
    with pytest.raises(SystemExit, match="training_fit: .*split0_n1_ri.json"):
        fit_script["main"]([str(config), str(tmp_path / "out"), "split0_n1_ri"])
