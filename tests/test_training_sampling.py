"""What a training step sees: patches in bounds, the foreground share, augmentation, determinism."""
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior.checkpoints import read_model_file
from bayesprior.errors import ConfigError
from bayesprior.training.config import TrainConfig
from bayesprior.training.distributed import DistContext
from bayesprior.training.sampling import BatchSampler, SamplingConfig, _forced, augment, crop
from bayesprior.training.trainer import train

from training_fixtures import make_cases


@dataclass
class Case:
    case_id: str
    image: np.ndarray
    label: np.ndarray


def _case(shape, foreground=((1, 1, 1),), seed=0):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for voxel in foreground:
        label[voxel] = 1
    return Case(f"c{seed}", rng.normal(size=shape).astype(np.float32), label)


@settings(max_examples=40, deadline=None)
@given(shape=st.tuples(*[st.integers(4, 40)] * 3), patch=st.tuples(*[st.sampled_from([8, 16, 24])] * 3),
       seed=st.integers(0, 1000), force=st.booleans())
def test_patches_lie_inside_the_volume(shape, patch, seed, force):
    case = _case(shape, foreground=[tuple(s - 1 for s in shape)])
    sampler = BatchSampler([case], SamplingConfig(batch_size=1, patch=patch), seed, torch.device("cpu"))
    corner = sampler.patch_corner(0, case.label, np.random.default_rng(seed), force)
    for c, p, s in zip(corner, patch, shape, strict=True):
        assert 0 <= c and (c + p <= s or c == 0)
    image, label = crop(case.image, case.label, corner, patch)
    assert image.shape == patch and label.shape == patch


def test_a_forced_patch_contains_foreground():
    case = _case((40, 40, 40), foreground=[(35, 2, 20)])
    sampler = BatchSampler([case], SamplingConfig(batch_size=1, patch=(16, 16, 16)), 0, torch.device("cpu"))
    for seed in range(20):
        corner = sampler.patch_corner(0, case.label, np.random.default_rng(seed), True)
        assert crop(case.image, case.label, corner, (16, 16, 16))[1].sum() == 1


@pytest.mark.parametrize("fraction", [0.0, 1 / 3, 0.5, 1.0])
def test_the_forced_share_of_an_epoch_is_the_foreground_fraction(fraction):
    n = 300
    assert sum(_forced(k, fraction) for k in range(n)) == math.floor(n * fraction)


def test_one_third_of_patches_hold_foreground_when_it_is_rare():
    # one foreground voxel in 48^3: a random 8^3 patch almost never holds it, a forced one always does
    cases = [_case((48, 48, 48), foreground=[(24, 24, 24)], seed=s) for s in range(3)]
    config = SamplingConfig(batch_size=3, patch=(8, 8, 8), steps_per_epoch=100)
    sampler = BatchSampler(cases, config, seed=0, device=torch.device("cpu"))
    with_foreground = [float(labels[i].sum() > 0) for _, labels in sampler.epoch(0) for i in range(3)]
    assert np.mean(with_foreground) == pytest.approx(1 / 3, abs=0.03)


def test_batches_depend_only_on_seed_and_epoch():
    cases = make_cases(5, size=16)
    config = SamplingConfig(batch_size=2, patch=(8, 8, 8), steps_per_epoch=4, augment=True)
    first = [b for b in BatchSampler(cases, config, 7, torch.device("cpu")).epoch(3)]
    torch.manual_seed(123)
    np.random.seed(5)  # the global random state plays no part
    second = [b for b in BatchSampler(cases, config, 7, torch.device("cpu")).epoch(3)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    other = next(iter(BatchSampler(cases, config, 7, torch.device("cpu")).epoch(4)))
    assert not torch.equal(first[0][0], other[0])


def test_processes_share_each_global_batch_between_them():
    cases = make_cases(6, size=8)
    config = SamplingConfig(batch_size=4, patch=(8, 8, 8), steps_per_epoch=3)
    whole = list(BatchSampler(cases, config, 1, torch.device("cpu")).epoch(0))
    parts = [list(BatchSampler(cases, config, 1, torch.device("cpu"), DistContext(r, 2)).epoch(0)) for r in (0, 1)]
    for step, (images, _) in enumerate(whole):
        assert torch.equal(images[0::2], parts[0][step][0]) and torch.equal(images[1::2], parts[1][step][0])


def test_augmentation_keeps_image_and_label_aligned():
    rng = np.random.default_rng(0)
    label = (rng.random((9, 10, 11)) > 0.7).astype(np.int64)
    image = label.astype(np.float32) + 1.0
    for seed in range(10):
        out_image, out_label = augment(image, label, np.random.default_rng(seed))
        scale = out_image.max() / 2.0
        assert 0.9 <= scale <= 1.1
        assert np.array_equal(out_image > 1.5 * scale, out_label.astype(bool))


def test_patch_equal_to_the_volume_trains_exactly_like_whole_volumes(tmp_path, tiny_architecture):
    cases = make_cases(4, size=16)
    whole = train(TrainConfig(architecture=tiny_architecture, max_epochs=2, progress=False), cases, None, tmp_path / "a")
    patched = train(TrainConfig(architecture=tiny_architecture, max_epochs=2, progress=False, patch=(16, 16, 16),
                                foreground_fraction=0.0), cases, None, tmp_path / "b")
    a, b = read_model_file(whole)["state_dict"], read_model_file(patched)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_patch_training_resumes_exactly(tmp_path, tiny_architecture):
    cases = make_cases(4, size=16)
    settings_ = dict(architecture=tiny_architecture, progress=False, patch=(8, 8, 8), steps_per_epoch=3, augment=True)
    whole = train(TrainConfig(max_epochs=3, **settings_), cases, cases[:2], tmp_path / "a")
    train(TrainConfig(max_epochs=1, **settings_), cases, cases[:2], tmp_path / "b")
    resumed = train(TrainConfig(max_epochs=3, **settings_), cases, cases[:2], tmp_path / "b")
    a, b = read_model_file(whole)["state_dict"], read_model_file(resumed)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sampling_settings_are_checked():
    with pytest.raises(ConfigError, match="divisible by 8"):
        SamplingConfig(patch=(12, 16, 16))
    with pytest.raises(ConfigError, match="foreground_fraction"):
        SamplingConfig(foreground_fraction=1.5)
    with pytest.raises(ConfigError, match="weight_decay"):
        TrainConfig(method="gaussian", weight_decay=0.1)
    with pytest.raises(ConfigError, match="init_scale"):
        TrainConfig(init_scale=0.0)
