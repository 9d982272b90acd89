import math

import monai.losses
import monai.metrics
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior.errors import ConfigError
from bayesprior.evaluation.metrics import confusion_counts, dice_score, iou_score
from bayesprior.training.losses import LossConfig, cross_entropy_loss, segmentation_loss, soft_dice_loss


def _batch(seed=0, b=2, n=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 2, n, n, n, generator=g)
    target = (torch.rand(b, n, n, n, generator=g) > 0.6).long()
    return logits, target


@pytest.mark.parametrize("batch", [False, True])
def test_soft_dice_matches_monai_dice_loss(batch):
    logits, target = _batch()
    ours = soft_dice_loss(logits, target, batch=batch, epsilon=1e-5)
    p = logits.softmax(1)[:, 1:]
    ref = monai.losses.DiceLoss(smooth_nr=1e-5, smooth_dr=1e-5, batch=batch)(p, target[:, None].float())
    assert torch.allclose(ours, ref, atol=1e-6)


def test_soft_dice_of_empty_target_and_empty_prediction_is_zero():
    logits = torch.zeros(1, 2, 4, 4, 4)
    logits[:, 0] = 50.0
    assert soft_dice_loss(logits, torch.zeros(1, 4, 4, 4)).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_cross_entropy_reduction_over_voxels(reduction):
    logits, target = _batch()
    expected = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    if reduction == "mean":
        expected = expected / target.numel()
    assert torch.allclose(cross_entropy_loss(logits, target, reduction), expected)


def test_segmentation_loss_is_weighted_dice_plus_ce():
    logits, target = _batch()
    cfg = LossConfig(dice_weight=0.99, ce_weight=0.01, ce_reduction="sum", dice_batch=True)
    expected = 0.99 * soft_dice_loss(logits, target, True) + 0.01 * cross_entropy_loss(logits, target, "sum")
    assert torch.allclose(segmentation_loss(logits, target, cfg), expected)


def test_unknown_ce_reduction_is_rejected_by_name():
    with pytest.raises(ConfigError, match="ce_reduction"):
        LossConfig(ce_reduction="median")


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), p_pred=st.floats(0.0, 1.0), p_ref=st.floats(0.0, 1.0))
def test_dsc_and_iou_equal_monai_metrics(seed, p_pred, p_ref):
    rng = np.random.default_rng(seed)
    pred = (rng.random((5, 5, 5)) < p_pred).astype(np.uint8)
    ref = (rng.random((5, 5, 5)) < p_ref).astype(np.uint8)
    counts = confusion_counts(pred, ref)
    y_pred, y = torch.from_numpy(pred)[None, None].float(), torch.from_numpy(ref)[None, None].float()
    monai_dice = monai.metrics.DiceMetric(include_background=True, reduction="none")(y_pred, y).item()
    monai_iou = monai.metrics.MeanIoU(include_background=True, reduction="none")(y_pred, y).item()
    for ours, theirs in ((dice_score(counts), monai_dice), (iou_score(counts), monai_iou)):
        if math.isnan(theirs):
            assert math.isnan(ours)
        else:
            assert ours == pytest.approx(theirs, abs=1e-6)


def test_empty_reference_policies():
    empty = np.zeros((3, 3, 3))
    some = empty.copy()
    some[0, 0, 0] = 1
    assert math.isnan(dice_score(confusion_counts(empty, empty), "exclude"))
    assert dice_score(confusion_counts(empty, empty), "one") == 1.0
    assert dice_score(confusion_counts(some, empty), "one") == 0.0
    assert iou_score(confusion_counts(empty, empty), "zero") == 0.0


def test_counts_use_label_greater_than_zero():
    ref = np.array([0, 1, 2, 4])
    pred = np.array([0, 1, 0, 1])
    assert confusion_counts(pred, ref)[:3] == (2, 0, 1)
