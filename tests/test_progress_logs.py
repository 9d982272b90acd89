"""Logs that fit where people run them: a bar on a terminal only, one plain line per epoch elsewhere, nothing with
--quiet; TensorBoard curves on request."""
import io
import json
import re
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from bayesprior.cli import cli
from bayesprior.progress import Progress, bars_wanted, plain_lines, progress_line

from hostile import assert_one_line_error
from training_fixtures import write_nnunet_dataset


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_is_drawn_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert bars_wanted()
    progress = Progress(range(3), "epochs", "epoch")
    list(progress)
    progress.close()
    assert "\r" in sys.stderr.getvalue()  # tqdm's redraws
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not bars_wanted()


def test_elsewhere_each_report_is_one_plain_line(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    progress = Progress(range(2), "epochs", "epoch", total=2)
    for _ in progress:
        progress.report(loss=0.5, lr=1e-3)
    progress.close()
    assert sys.stderr.getvalue() == "epoch 1/2: loss 0.5 lr 0.001\nepoch 2/2: loss 0.5 lr 0.001\n"


def test_plain_lines_are_used_on_a_terminal_when_asked_for(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    with plain_lines():
        assert not bars_wanted()
        for _ in Progress(["a", "b"], "predicting", "case", line_per_item=True):
            pass
    assert sys.stderr.getvalue() == "predicting 1/2 case\npredicting 2/2 case\n"


def test_disabled_progress_says_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    progress = Progress(range(2), "epochs", "epoch", enabled=False, line_per_item=True)
    for _ in progress:
        progress.report(loss=1.0)
    progress_line("done", enabled=False)
    assert sys.stderr.getvalue() == ""


def _train(tiny_architecture, tmp_path, *options):
    data = tmp_path / "data"
    if not data.is_dir():
        write_nnunet_dataset(data, n=2)
    return CliRunner().invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                    "--epochs", "3", "--no-cache", *options], catch_exceptions=False)


@pytest.mark.parametrize("options", [(), ("--no-progress",)])
def test_train_prints_one_plain_line_per_epoch_outside_a_terminal_or_with_no_progress(tiny_architecture, tmp_path,
                                                                                       options):
    result = _train(tiny_architecture, tmp_path, *options)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    epochs = [line for line in result.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all(" loss " in line and " kl " in line and " lr " in line for line in epochs)


def test_train_with_several_seeds_names_the_seed_on_every_epoch_line(tiny_architecture, tmp_path):
    result = _train(tiny_architecture, tmp_path, "--seeds", "0,1", "--epochs", "2")
    assert result.exit_code == 0, result.output
    epochs = [line.split(":")[0] for line in result.stderr.splitlines() if " epoch " in line]
    assert epochs == ["seed 0 epoch 1/2", "seed 0 epoch 2/2", "seed 1 epoch 1/2", "seed 1 epoch 2/2"]


def test_train_quiet_prints_no_epoch_line(tiny_architecture, tmp_path):
    result = _train(tiny_architecture, tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    assert not [line for line in result.stderr.splitlines() if line.startswith("epoch ")]


def test_train_writes_tensorboard_scalars_per_epoch(tiny_architecture, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = _train(tiny_architecture, tmp_path, "--quiet", "--val-fraction", "0.5", "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"train/loss", "train/data_term", "train/data_per_case", "train/kl", "train/lr", "val/loss",
                    "val/dsc"}
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3]
    assert [e.value for e in losses] == pytest.approx([r["loss"] for r in log], rel=1e-6)


def test_tensorboard_without_the_package_is_a_one_line_error_saying_how_to_install_it(tiny_architecture, tmp_path,
                                                                                       monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    data = tmp_path / "data"
    write_nnunet_dataset(data, n=2)
    result = CliRunner().invoke(cli, ["train", str(data), str(tmp_path / "run"), "--architecture", tiny_architecture,
                                      "--epochs", "1", "--no-cache", "--tensorboard", str(tmp_path / "tb")])
    assert_one_line_error(result, "--tensorboard", "pip install tensorboard")
    assert not (tmp_path / "run").exists()  # refused before any work


TINY_DEMO = textwrap.dedent("""
    import sys
    from bayesprior.commands import experiment_cmd
    experiment_cmd.DEMO_CONFIG = {
        "architecture": {"name": "unet3d", "config": {"in_channels": 1, "n_classes": 2, "widths": [4, 4, 4, 4]}},
        "source": {"synthetic": {"kind": "ms", "cases": 2, "shape": [16, 16, 16], "seed": 6}},
        "target": {"synthetic": {"kind": "tumour", "cases": 3, "shape": [16, 16, 16], "seed": 5}},
        "preprocess": {"crop_nonzero": False, "divisible_by": 8},
        "target_training": {"max_epochs": 2},
        "protocol": {"train_sizes": [1], "test_size": 2, "splits": 1, "methods": ["ri"]},
    }
    from bayesprior.cli import cli
    cli(["demo", "--out", sys.argv[1]])
""")


def test_the_demo_log_redirected_to_a_file_has_no_carriage_return_and_one_line_per_epoch(tmp_path):
    log = tmp_path / "demo.log"
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, "-c", TINY_DEMO, str(tmp_path / "demo")], stdout=f,
                              stderr=subprocess.STDOUT, timeout=300,
                              env={**__import__("os").environ, "BAYESPRIOR_CACHE_DIR": str(tmp_path / "cache")})
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text
    assert [line.split(":")[0] for line in text.splitlines() if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert "expected calibration error" in (tmp_path / "demo" / "table.md").read_text()
    result = json.loads((tmp_path / "demo" / "results" / "split0_n1_ri.json").read_text())
    assert 0 <= result["ece"] <= 1 and 0 <= result["brier"] <= 1 and result["nll"] > 0
    assert all({"dsc", "ece", "brier", "nll", "ueo"} <= set(case) for case in result["per_case"].values())


def test_demo_help_states_its_measured_time():
    result = CliRunner().invoke(cli, ["demo", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and re.search(r"took \d+ min \d+ s on 2 CPU cores \(measured \d{4}-\d\d-\d\d", text)
