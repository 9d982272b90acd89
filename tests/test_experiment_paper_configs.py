"""The paper's other experiments as configs (Table 5 on MSD CT, Table 6 with 100 target cases): each runs end to
end on tiny synthetic data written in its layout, with its sizes shrunk. They check the code path, not the result."""
import json
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest

from bayesprior.checkpoints import read_model_file
from bayesprior.data.preprocess import INTENSITY_MODES, ct_statistics
from bayesprior.data.synth import synthesize_dataset
from bayesprior.experiment.config import parse_config
from bayesprior.experiment.pipeline import Experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TINY_PATCH = [16, 16, 8]


def msd_ct_task(folder: Path, name: str, n_cases: int, seed: int, labels: dict[str, str]) -> Path:
    """An MSD task folder of small CT volumes in HU: air, a soft-tissue body, an organ with the task's labels."""
    rng = np.random.default_rng(seed)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in (24, 24, 16)), indexing="ij"))
    training = []
    for i in range(n_cases):
        body = (grid[0] ** 2 + grid[1] ** 2) < 0.8
        centre = rng.uniform(-0.3, 0.3, 3)
        organ = ((grid - centre[:, None, None, None]) ** 2).sum(0) < rng.uniform(0.1, 0.2)
        image = np.where(body, 40.0, -1000.0) + np.where(organ, 60.0, 0.0) + rng.normal(0, 15, grid.shape[1:])
        label = organ.astype(np.uint8) * np.uint8(rng.integers(1, len(labels)) if len(labels) > 2 else 1)
        stem = f"{name.lower()}_{i}"
        nibabel.save(nibabel.Nifti1Image(image.astype(np.int16), affine), folder / "imagesTr" / f"{stem}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(label, affine), folder / "labelsTr" / f"{stem}.nii.gz")
        training.append({"image": f"./imagesTr/{stem}.nii.gz", "label": f"./labelsTr/{stem}.nii.gz"})
    (folder / "dataset.json").write_text(json.dumps({
        "name": name, "modality": {"0": "CT"}, "labels": labels, "numTraining": n_cases, "training": training,
        "test": []}))
    return folder


def tiny_experiment(config_name: str, source: Path, target: Path, out: Path) -> tuple[dict, Experiment]:
    """The config file's settings, and an experiment of it on `source` and `target` with every size shrunk:
    1 split, 1 training case, 1 test case, 1 epoch, 1 source network, patches of 16x16x8, a 4-channel U-Net.

    CT intensities are being added beside this work: until ``ct`` is a known scheme the runs use ``zscore``.
    """
    path = CONFIGS / config_name
    original = tomllib.loads(path.read_text())
    raw = json.loads(json.dumps(original))
    raw["source"]["path"], raw["target"]["path"] = str(source), str(target)
    if raw["preprocess"].get("intensity") not in INTENSITY_MODES:
        raw["preprocess"]["intensity"] = "zscore"
    if "shape" in raw["preprocess"]:
        raw["preprocess"]["shape"] = [16, 16, 16]
    raw["architecture"]["config"] = {"widths": [4, 4, 4, 4]}
    raw["source_training"].update(seeds=[0], restarts=0, max_epochs=1, val_fraction=0.0)
    raw["prior"].update(max_epochs=1, options={"latent_dim": 2, "hidden": 4})
    raw["target_training"]["max_epochs"] = 1
    for section in ("source_training", "target_training"):
        if "patch" in raw[section]:
            raw[section]["patch"] = TINY_PATCH
    raw["protocol"].update(train_sizes=[1], test_size=1, splits=1)
    experiment = Experiment(parse_config(raw, path), out, progress=False, log=lambda line: None)
    return original, experiment


def _ran_every_method(experiment: Experiment, text: str) -> None:
    results = experiment.store.read_all()
    assert sorted(r["method"] for r in results) == sorted(experiment.config.methods)
    assert all(0.0 <= r["dsc"] <= 1.0 for r in results) and "UNet-DWP" in text


@pytest.mark.parametrize("config_name, target_patch, test_size", [
    ("paper_table5_liver.toml", [192, 192, 192], 50),
    ("paper_table5_spleen.toml", [480, 480, 24], 21),
])
def test_table5_configs_run_on_msd_ct_tasks(tmp_path, config_name, target_patch, test_size):
    source = msd_ct_task(tmp_path / "Task08_HepaticVessel", "HepaticVessel", 2, 1,
                         {"0": "background", "1": "Vessel", "2": "Tumour"})
    target = msd_ct_task(tmp_path / "Task_target", "Target", 2, 2, {"0": "background", "1": "Organ"})
    original, experiment = tiny_experiment(config_name, source, target, tmp_path / "out")
    assert original["source"]["layout"] == original["target"]["layout"] == "msd"
    assert original["source"]["path"].endswith("Task08_HepaticVessel") and original["preprocess"]["intensity"] == "ct"
    assert original["source_training"]["patch"] == [400, 400, 40]
    assert original["target_training"]["patch"] == target_patch and original["protocol"]["test_size"] == test_size
    assert original["protocol"]["methods"] == ["dwp", "ri", "pr"]
    _ran_every_method(experiment, experiment.run())
    model = experiment.out / "runs" / "split0_n1_ri" / "config.json"
    assert json.loads(model.read_text())["train_config"]["patch"] == TINY_PATCH
    # the ct statistics of a target run come from its own training case, never from the test case
    result = experiment.store.read_all()[0]
    raw = {c.case_id: c for c in experiment.data.cases(experiment.config.target, "target")}
    expected = ct_statistics([raw[i] for i in result["train_cases"]])
    assert result["settings"]["preprocess"]["intensity_statistics"] == pytest.approx(expected)
    run_id = f"split{result['split']}_n{result['train_size']}_{result['method']}"
    recorded = read_model_file(experiment.out / "runs" / run_id / "model.pt")["extra"]["preprocess"]
    assert recorded["intensity"] == "ct" and recorded["intensity_statistics"] == pytest.approx(expected)
    assert ct_statistics(list(raw.values())) != pytest.approx(expected)


def test_table6_config_runs_with_its_layouts(tmp_path):
    source = synthesize_dataset("ms", 2, tmp_path / "MS", shape=(16, 16, 16), seed=1)
    target = synthesize_dataset("tumour", 2, tmp_path / "BraTS", shape=(16, 16, 16), seed=2, brats_mirror=True)
    original, experiment = tiny_experiment("paper_table6.toml", source, Path(target) / "brats", tmp_path / "out")
    assert original["protocol"]["train_sizes"] == [100] and original["protocol"]["splits"] == 3
    assert original["protocol"]["methods"] == ["dwp", "pr", "prf", "ri"] and original["target"]["layout"] == "brats"
    _ran_every_method(experiment, experiment.run())
