"""The whole protocol on tiny synthetic data: killed mid-way, restarted, every run present exactly once."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

TINY = """
[source]
synthetic = { kind = "ms", cases = 4, shape = [16, 24, 16], seed = 1 }
[target]
synthetic = { kind = "tumour", cases = 6, shape = [16, 24, 16], seed = 2 }
[preprocess]
crop_nonzero = false
[source_training]
seeds = [0]
max_epochs = 1
val_fraction = 0.0
[prior]
max_epochs = 2
[target_training]
max_epochs = 1
forward_mode = "sample"
[protocol]
train_sizes = [1, 2]
test_size = 2
splits = 2
methods = ["dwp", "ri", "prf"]
"""


def _experiment(config: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, BAYESPRIOR_CACHE_DIR=str(out.parent / "cache"))
    return subprocess.Popen([sys.executable, "-m", "bayesprior.cli", "experiment", str(config), "--out", str(out),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def test_killed_experiment_resumes_and_every_run_appears_once(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    results = out / "results"

    first = _experiment(config, out)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(results.glob("*.json"))) < 2 and first.poll() is None:
        time.sleep(0.2)
    if first.poll() is None:
        first.send_signal(signal.SIGKILL)
    first.wait()
    finished_before = {p.name: p.read_text() for p in results.glob("*.json")}
    assert finished_before, first.stdout.read()

    second = _experiment(config, out)
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output

    expected = {f"split{s}_n{n}_{m}.json" for s in (0, 1) for n in (1, 2) for m in ("dwp", "ri", "prf")}
    assert {p.name for p in results.glob("*.json")} == expected
    for name, text in finished_before.items():  # finished runs were skipped, not redone
        assert (results / name).read_text() == text
    for name in expected:
        result = json.loads((results / name).read_text())
        assert 0.0 <= result["dsc"] <= 1.0 and len(result["test_cases"]) == 2
    table = (out / "table.md").read_text()
    assert "UNet-DWP" in table and "UNet-PRf" in table and "12 runs" in table
    for figure in ("dsc_vs_train_size.png", "predictions.png"):
        assert (out / figure).stat().st_size > 1000
    assert (out / "source" / "bank.npz").is_file() and (out / "source" / "prior_dwp.pt").is_file()
    # the DWP's held-out ELBO beside the Gaussian baselines, for every group of the bank
    structure = json.loads((out / "source" / "structure_dwp.json").read_text())
    assert [row["group"] for row in structure] and all(row["learned"] is not None for row in structure)
    assert "Paired comparisons" in table and "UNet-DWP vs UNet-RI" in table


def test_demo_and_experiment_have_help_with_an_example():
    from click.testing import CliRunner

    from bayesprior.cli import cli

    for command in ("demo", "experiment"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output


SMALL = """
[source]
synthetic = { kind = "ms", cases = 3, shape = [16, 16, 16], seed = 1 }
[target]
synthetic = { kind = "tumour", cases = 3, shape = [16, 16, 16], seed = 2 }
[preprocess]
crop_nonzero = false
[architecture]
config = { widths = [4, 4, 4, 4] }
[source_training]
seeds = [0]
max_epochs = 2
val_fraction = 0.0
[prior]
max_epochs = 1
options = { hidden = 4, latent_dim = 2 }
[target_training]
max_epochs = 2
forward_mode = "sample"
[protocol]
train_sizes = [1]
test_size = 1
splits = 1
methods = ["dwp", "ri"]
"""


def _results(out: Path) -> dict:
    # the settings name the prior file by its SHA-256, and two experiments' prior files differ in their bytes
    # (their provenance names their own folders); a moved folder's results keep theirs (it resumed, not refused)
    ignored = {"train_seconds", "settings", "settings_sha256"}
    return {p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in ignored}
            for p in sorted((out / "results").glob("*.json"))}


def _models(out: Path) -> dict:
    from bayesprior.safe_load import load_plain

    return {str(p.relative_to(out)): load_plain(p, "model")["state_dict"] for p in sorted(out.rglob("model.pt"))}


def test_an_experiment_killed_in_each_stage_and_moved_resumes_to_the_uninterrupted_result(tmp_path):
    from click.testing import CliRunner

    from bayesprior.cli import cli

    from _kill_at import kill_at, temp_files

    config = tmp_path / "small.toml"
    config.write_text(SMALL)
    out = tmp_path / "killed"
    command = ["experiment", str(config), "--out", str(out), "--quiet"]
    kill_at("*/data/source/labelsTr/SynMS_0002.nii.gz", 1, command)  # during synthesis
    assert not (out / "data" / "source" / "dataset.json").exists()
    kill_at("*/source/runs/seed0/checkpoint.pt", 2, command)  # during the source model's second epoch
    assert (out / "source" / "runs" / "seed0" / "checkpoint.pt").is_file()
    kill_at("*/runs/split0_n1_ri/checkpoint.pt", 2, command)  # during the last target run
    assert temp_files(out) and len(_results(out)) == 1
    moved = tmp_path / "moved" / "elsewhere"
    moved.parent.mkdir()
    out.rename(moved)  # a moved experiment folder resumes from where it lies now
    result = CliRunner().invoke(cli, ["experiment", str(config), "--out", str(moved), "--quiet"])
    assert result.exit_code == 0, result.output
    whole = tmp_path / "whole"
    result = CliRunner().invoke(cli, ["experiment", str(config), "--out", str(whole), "--quiet"])
    assert result.exit_code == 0, result.output

    assert _results(moved) == _results(whole) and len(_results(whole)) == 2
    killed_models, whole_models = _models(moved), _models(whole)
    assert killed_models.keys() == whole_models.keys() and len(whole_models) == 3
    for name, state in whole_models.items():
        assert all(torch.equal(state[k], killed_models[name][k]) for k in state), name
    assert not temp_files(moved)
