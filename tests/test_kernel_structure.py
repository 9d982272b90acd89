"""The structure report: Gaussian baselines of kernel banks, held out."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior.checkpoints import save_model
from bayesprior.kernel_structure import (
    full_gaussian_loglik,
    group_structure,
    heldout_split,
    iid_gaussian_loglik,
    structure_rows,
    structure_table,
)
from bayesprior.kernels import harvest_kernels
from bayesprior.plugins import build_architecture
from bayesprior.training.methods import he_initialise


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 500), fraction=st.floats(0.01, 0.99), seed=st.integers(0, 100))
def test_heldout_split_is_a_seeded_partition_with_both_parts_non_empty(n, fraction, seed):
    train, heldout = heldout_split(n, fraction, seed)
    assert len(train) >= 1 and len(heldout) >= 1
    assert sorted(torch.cat([train, heldout]).tolist()) == list(range(n))
    again = heldout_split(n, fraction, seed)
    assert torch.equal(train, again[0]) and torch.equal(heldout, again[1])


def test_iid_kernels_show_no_structure():
    kernels = np.random.default_rng(0).normal(0, 0.05, size=(20_000, 27))
    s = group_structure(kernels, "g")
    assert abs(s.gain) < 0.3


def test_correlated_kernels_show_the_expected_gain():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(27, 27))
    cov = a @ a.T / 27 + 0.1 * np.eye(27)
    kernels = rng.multivariate_normal(np.zeros(27), cov, size=30_000)
    s = group_structure(kernels, "g")
    # population values: -H(N(0, cov)) and -(d/2) log(2 pi e tr(cov)/d)
    full = -0.5 * (27 * math.log(2 * math.pi * math.e) + np.linalg.slogdet(cov)[1])
    iid = -0.5 * 27 * math.log(2 * math.pi * math.e * np.trace(cov) / 27)
    assert s.full == pytest.approx(full, abs=0.3)
    assert s.iid == pytest.approx(iid, abs=0.3)
    assert s.gain == pytest.approx(full - iid, abs=0.4) and s.gain > 5


def test_loglik_functions_agree_with_scipy():
    from scipy.stats import multivariate_normal, norm

    rng = np.random.default_rng(2)
    mixing = rng.normal(size=(4, 4)) + 2 * np.eye(4)
    train, heldout = rng.normal(size=(400, 4)) @ mixing, rng.normal(size=(50, 4)) @ mixing
    cov = np.cov(train.T, bias=True)
    expected_full = multivariate_normal(train.mean(0), cov).logpdf(heldout).mean()
    expected_iid = norm(train.mean(), train.std()).logpdf(heldout).sum(1).mean()
    assert full_gaussian_loglik(train, heldout) == pytest.approx(expected_full, abs=1e-3)
    assert iid_gaussian_loglik(train, heldout) == pytest.approx(expected_iid, abs=1e-9)


def test_a_bank_harvested_from_freshly_initialised_networks_shows_no_structure(tmp_path):
    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        net = build_architecture("unet3d", in_channels=1, n_classes=2)
        he_initialise(net)
        save_model(net, tmp_path / f"init{seed}.pt")
        paths.append(tmp_path / f"init{seed}.pt")
    bank = harvest_kernels(paths)
    rows = structure_rows(bank.kernels)
    assert [r.group for r in rows] == bank.groups
    # enc_full mixes a 1-channel and a 16-channel layer (two He scales): scale, not spatial, structure
    for r in rows:
        if r.group != "enc_full":
            assert abs(r.gain) < 1.0, r


def test_non_finite_kernels_are_refused():
    kernels = np.zeros((10, 27))
    kernels[3, 4] = np.nan
    with pytest.raises(Exception, match="non-finite"):
        group_structure(kernels, "g")


def test_table_has_a_learned_column_only_when_given():
    rows = structure_rows({"a": np.random.default_rng(0).normal(size=(100, 27))}, learned={"a": 1.0})
    table = structure_table(rows, extra={"epochs": {"a": 7}}).splitlines()
    assert table[0].split() == ["group", "kernels", "epochs", "iid", "Gaussian", "full-cov", "Gaussian", "gain",
                                "VAE", "ELBO", "VAE", "ELBO", "-", "full"]
    assert table[2].split()[:3] == ["a", "100", "7"] and len(table) == 3
    plain = structure_table(structure_rows({"a": np.ones((10, 27)) + np.arange(27)}))
    assert "VAE" not in plain
