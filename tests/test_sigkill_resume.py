"""SIGKILL in the middle of a write, then the same command again: every output is complete, identical to
an uninterrupted run, and no temporary file is left behind (synth, train, predict; the experiment's kills
are in test_experiment_end_to_end.py)."""
import json
from pathlib import Path

import torch
from click.testing import CliRunner

from bayesprior.cli import cli
from bayesprior.data.synth import synthesize_dataset
from bayesprior.locks import LOCK_NAME
from bayesprior.safe_load import load_plain

from _kill_at import kill_at, temp_files
from hostile import bayesian_model_file
from training_fixtures import write_nnunet_dataset

SYNTH = ["--kind", "tumour", "--cases", "3", "--shape", "16,16,16", "--seed", "5"]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _invoke(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return result


def test_a_killed_synth_is_completed_by_running_it_again(tmp_path):
    kill_at("*/labelsTr/SynBraTS_0002.nii.gz", 1, ["synth", *SYNTH, "--out", str(tmp_path / "killed")])
    killed = tmp_path / "killed"
    assert temp_files(killed) and not (killed / "dataset.json").exists()
    _invoke(["synth", *SYNTH, "--out", str(killed)])
    synthesize_dataset("tumour", 3, tmp_path / "whole", shape=(16, 16, 16), seed=5)
    assert _files(killed) == _files(tmp_path / "whole")
    assert not temp_files(killed) and not (killed / LOCK_NAME).exists()


def test_a_killed_training_run_resumes_to_the_same_weights_and_log(tmp_path):
    data = tmp_path / "data"
    write_nnunet_dataset(data, n=3, size=16)
    args = ["--method", "ri", "--epochs", "3", "--arch-option", "widths=[4,4,4,4]", "--no-progress", "--no-cache"]
    # killed while renaming the checkpoint of epoch 2 into place: its log line is written, its checkpoint not
    kill_at("*/killed/checkpoint.pt", 2, ["train", str(data), str(tmp_path / "killed"), *args])
    assert temp_files(tmp_path / "killed") and len((tmp_path / "killed" / "log.jsonl").read_text().splitlines()) == 2
    _invoke(["train", str(data), str(tmp_path / "killed"), *args])
    _invoke(["train", str(data), str(tmp_path / "whole"), *args])
    killed, whole = (load_plain(tmp_path / name / "model.pt", "model")["state_dict"] for name in ("killed", "whole"))
    assert all(torch.equal(killed[k], whole[k]) for k in whole)
    logs = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (tmp_path / n / "log.jsonl").read_text().splitlines()]
            for n in ("killed", "whole")]
    assert logs[0] == logs[1] and len(logs[0]) == 3
    assert not temp_files(tmp_path / "killed")


def test_a_killed_prediction_is_completed_by_running_it_again(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    write_nnunet_dataset(tmp_path / "data", n=3, size=16)
    for image in (tmp_path / "data" / "imagesTr").iterdir():
        image.rename(images / image.name)
    model = bayesian_model_file(tmp_path / "model.pt")
    args = ["--samples", "2", "--seed", "7", "--no-progress"]
    kill_at("*/killed/case01_probability.nii.gz", 1, ["predict", str(model), str(images), str(tmp_path / "killed"), *args])
    assert temp_files(tmp_path / "killed")
    _invoke(["predict", str(model), str(images), str(tmp_path / "killed"), *args])
    _invoke(["predict", str(model), str(images), str(tmp_path / "whole"), *args])
    killed, whole = _files(tmp_path / "killed"), _files(tmp_path / "whole")
    assert killed.keys() == whole.keys() and len(killed) == 3 * 3 + 1  # mask + 2 maps per case, and the manifest
    assert all(killed[name] == whole[name] for name in killed if name.endswith(".nii.gz"))
    manifest = json.loads(killed["bayesprior_predictions.json"])
    assert sorted(manifest["files"]) == sorted(n for n in killed if n.endswith(".nii.gz"))
    assert not temp_files(tmp_path / "killed")
