import json
from pathlib import Path

import monai.inferers
import nibabel
import numpy as np
import pytest
import torch

from bayesprior.data.naming import case_id_of, case_ids
from bayesprior.evaluation.folders import evaluate_folders
from bayesprior.inference.postprocess import largest_connected_component
from bayesprior.inference.sliding_window_prediction import (
    gaussian_importance_map,
    predict_probabilities,
    sliding_window,
    window_starts,
)

from training_fixtures import TinyNet


def _net():
    torch.manual_seed(1)
    return TinyNet(width=3).eval()


@pytest.mark.parametrize("shape,roi,overlap,batch", [((21, 16, 18), (8, 8, 8), 0.5, 1),
                                                      ((20, 12, 9), (16, 8, 16), 0.25, 1),
                                                      ((16, 16, 16), (16, 8, 8), 0.6, 3)])
def test_sliding_window_matches_monai_gaussian(shape, roi, overlap, batch):
    net = _net()
    x = torch.randn(2 if batch > 1 else 1, 1, *shape)
    with torch.no_grad():
        ours = sliding_window(x, roi, net, overlap=overlap, batch_size=batch)
        theirs = monai.inferers.sliding_window_inference(x, roi, batch, net, overlap=overlap, mode="gaussian")
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, torch.as_tensor(theirs), atol=1e-5)


def test_importance_map_sigma_is_an_eighth_of_the_window():
    w = gaussian_importance_map((9, 9, 9))
    centre = w[4, 4]
    sigma = 9 / 8
    assert centre[4].item() == pytest.approx(1.0)
    assert (centre[5] / centre[4]).item() == pytest.approx(np.exp(-1 / (2 * sigma ** 2)), rel=1e-5)
    assert w.min().item() >= 1e-3


def test_last_window_ends_at_the_border():
    assert window_starts(21, 8, 0.5) == [0, 4, 8, 12, 13]
    assert window_starts(8, 8, 0.5) == [0]


def test_whole_volume_is_padded_to_multiples_of_8_and_cropped_back():
    seen = []

    def predictor(x):
        seen.append(tuple(x.shape[2:]))
        return torch.ones(x.shape[0], 2, *x.shape[2:])

    out = predict_probabilities(predictor, torch.zeros(1, 1, 13, 9, 16), roi=(16, 16, 16))
    assert seen == [(16, 16, 16)]
    assert out.shape == (1, 2, 13, 9, 16)


def test_largest_component_keeps_the_biggest_blob_with_full_connectivity():
    mask = np.zeros((8, 8, 8), np.uint8)
    mask[0:3, 0:3, 0:3] = 1
    mask[3, 3, 3] = 1  # diagonal neighbour: same component under 26-connectivity
    mask[6:8, 6:8, 6:8] = 1
    kept = largest_connected_component(mask)
    assert kept.sum() == 28 and kept[3, 3, 3] == 1 and kept[7, 7, 7] == 0


def test_case_id_strips_suffixes():
    assert case_id_of(Path("BRATS_001_0000.nii.gz")) == "BRATS_001"
    assert case_id_of(Path("case_12.nii")) == "case_12"


def test_evaluate_writes_per_case_csv_and_summary_with_empty_reference_counted(tmp_path):
    (tmp_path / "pred").mkdir()
    (tmp_path / "lab").mkdir()
    rng = np.random.default_rng(0)
    for name, empty in (("a", False), ("b", False), ("c", True)):
        ref = (rng.random((6, 6, 6)) > 0.5).astype(np.uint8) * (0 if empty else 2)
        pred = (rng.random((6, 6, 6)) > 0.5).astype(np.uint8)
        nibabel.save(nibabel.Nifti1Image(pred, np.eye(4)), tmp_path / "pred" / f"{name}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(ref, np.eye(4)), tmp_path / "lab" / f"{name}.nii.gz")
    summary = evaluate_folders(tmp_path / "pred", tmp_path / "lab")
    saved = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert saved["n_empty_reference"] == 1 and saved["n_scored"] == 2
    per_case = [r["dsc"] for r in summary["metric_per_case"] if r["dsc"] is not None]
    assert summary["mean"]["dsc"] == pytest.approx(np.mean(per_case))
    assert len((tmp_path / "pred" / "per_case.csv").read_text().splitlines()) == 4


def test_evaluate_keeps_case_names_that_end_in_four_digits(tmp_path):
    # nnU-Net style case ids such as "Case_0001" must not be mistaken for a channel suffix
    pred, label = tmp_path / "pred", tmp_path / "label"
    pred.mkdir()
    label.mkdir()
    for i in (1, 2, 3):
        mask = np.zeros((4, 4, 4), np.uint8)
        mask[: i, :2, :2] = 1
        nibabel.save(nibabel.Nifti1Image(mask, np.eye(4)), label / f"Case_{i:04d}.nii.gz")
        nibabel.save(nibabel.Nifti1Image(mask, np.eye(4)), pred / f"Case_{i:04d}.nii.gz")
    summary = evaluate_folders(pred, label)
    text = (pred / "per_case.csv").read_text()
    assert all(f"Case_{i:04d}," in text for i in (1, 2, 3))
    assert "Case_0001" in str(summary)


def test_input_case_ids_drop_channel_suffixes_only_when_they_stay_distinct(tmp_path):
    assert case_ids([Path("A_001_0000.nii.gz"), Path("A_002_0000.nii.gz")]) == ["A_001", "A_002"]
    assert case_ids([Path("Case_0001.nii.gz"), Path("Case_0002.nii")]) == ["Case_0001", "Case_0002"]


def test_predicting_a_folder_reads_the_bayesian_model_file_once(tiny_architecture, tmp_path, monkeypatch):
    import bayesprior as bp
    from bayesprior import safe_load
    from bayesprior.inference.prediction import PredictionSettings, predict_folder

    bm = bp.bayesianize(bp.build_architecture(tiny_architecture), {"init_conv": "gaussian"})
    bp.save_model(bm, tmp_path / "model.pt", extra={"preprocess": {"crop_nonzero": False}})
    (tmp_path / "in").mkdir()
    nibabel.save(nibabel.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), tmp_path / "in" / "a.nii.gz")
    loads = []
    real_load = safe_load.torch.load
    monkeypatch.setattr(safe_load.torch, "load", lambda *a, **k: loads.append(a[0]) or real_load(*a, **k))
    written = predict_folder(tmp_path / "model.pt", tmp_path / "in", tmp_path / "out",
                             PredictionSettings(roi=(8, 8, 8), samples=2), progress=False)
    assert [p.name for p in written] == ["a.nii.gz"] and len(loads) == 1
