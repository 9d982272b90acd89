"""The whole protocol on tiny synthetic data: killed mid-way, restarted, every run present exactly once."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


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
