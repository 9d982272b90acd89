"""Does a kernel bank carry structure a prior can transfer? Held-out likelihoods of two Gaussian baselines.

For each group the kernels (rows of k^d values) are split into a training and a held-out share, and
two densities are fitted to the training share and scored on the held-out one, in nats per kernel:

- an **i.i.d. Gaussian**: every element of every kernel from one N(mu, sigma^2). Kernels of a randomly
  initialised network are exactly this, so a learned prior must beat it to carry anything;
- a **full-covariance Gaussian**: one mean vector and one k^d x k^d covariance (spatial correlations,
  e.g. smooth or edge-like kernels). A learned prior that does not beat it gives nothing a correlated
  Gaussian (the ``corrnormal`` prior) would not give more cheaply.

A learned prior (the DWP's kernel VAE) is scored on the same held-out kernels by its plugin and put in
the same table (`structure_rows`). `heldout_split` is the one split every score uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from .errors import ConfigError
from .tables import Column, format_table

#: a learned prior must beat the full-covariance Gaussian by this much (nats per kernel) to count as better
MARGIN = 0.1
#: ridge added to the covariance, relative to its mean variance (keeps it invertible for few kernels)
COVARIANCE_RIDGE = 1e-6
HELDOUT_FRACTION = 0.2


def heldout_split(n: int, fraction: float = HELDOUT_FRACTION, seed: int = 0,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, heldout) of a seeded random split of `n` kernels; at least one of each.

    `generator`, if given, is used (and advanced) instead of a new one seeded with `seed`.
    """
    if not 0 < fraction < 1:
        raise ConfigError(f"heldout fraction must be in (0, 1), got {fraction!r}")
    if n < 2:
        raise ConfigError(f"a held-out split needs at least 2 kernels, got {n}")
    generator = generator if generator is not None else torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=generator)
    n_heldout = min(n - 1, max(1, round(fraction * n)))
    return order[n_heldout:], order[:n_heldout]


def iid_gaussian_loglik(train: np.ndarray, heldout: np.ndarray) -> float:
    """Mean held-out log-likelihood per kernel (nats) of one N(mu, sigma^2) for every element."""
    train, heldout = _rows(train), _rows(heldout)
    mu, var = train.mean(), max(train.var(), np.finfo(np.float64).tiny)
    per_element = -0.5 * (math.log(2 * math.pi * var) + (heldout - mu) ** 2 / var)
    return float(per_element.sum(axis=1).mean())


def full_gaussian_loglik(train: np.ndarray, heldout: np.ndarray) -> float:
    """Mean held-out log-likelihood per kernel (nats) of N(mean vector, full covariance) fitted by ML."""
    train, heldout = _rows(train), _rows(heldout)
    d = train.shape[1]
    mean = train.mean(axis=0)
    centred = train - mean
    covariance = centred.T @ centred / len(train)
    covariance += COVARIANCE_RIDGE * max(np.trace(covariance) / d, np.finfo(np.float64).tiny) * np.eye(d)
    cholesky = np.linalg.cholesky(covariance)
    solved = np.linalg.solve(cholesky, (heldout - mean).T)  # L^-1 (x - mean)
    log_det = 2 * np.log(np.diag(cholesky)).sum()
    per_kernel = -0.5 * (d * math.log(2 * math.pi) + log_det + (solved ** 2).sum(axis=0))
    return float(per_kernel.mean())


@dataclass(frozen=True)
class GroupStructure:
    """Held-out scores of one group, nats per kernel (`learned` from a prior's plugin, or None)."""

    group: str
    n_kernels: int
    iid: float
    full: float
    learned: float | None = None

    @property
    def gain(self) -> float:
        """What spatial correlations add: full-covariance minus i.i.d. log-likelihood."""
        return self.full - self.iid

    @property
    def learned_beats_full(self) -> bool | None:
        """Whether the learned prior is ahead of the full-covariance Gaussian by at least `MARGIN`."""
        return None if self.learned is None else self.learned >= self.full + MARGIN


def group_structure(kernels: np.ndarray, group: str, fraction: float = HELDOUT_FRACTION, seed: int = 0,
                    learned: float | None = None) -> GroupStructure:
    """Both Gaussian baselines of one group's kernels (n, *kernel) on the split `heldout_split(n, fraction, seed)`."""
    rows = _rows(kernels)
    if not np.isfinite(rows).all():
        raise ConfigError(f"group {group!r} holds non-finite kernels; its structure cannot be measured")
    train, heldout = heldout_split(len(rows), fraction, seed)
    return GroupStructure(group, len(rows), iid_gaussian_loglik(rows[train.numpy()], rows[heldout.numpy()]),
                          full_gaussian_loglik(rows[train.numpy()], rows[heldout.numpy()]), learned)


def structure_rows(kernels: Mapping[str, np.ndarray], fraction: float = HELDOUT_FRACTION, seed: int = 0,
                   learned: Mapping[str, float] | None = None) -> list[GroupStructure]:
    """`group_structure` of every group (groups with fewer than 2 kernels are left out)."""
    learned = learned or {}
    return [group_structure(k, g, fraction, seed, learned.get(g)) for g, k in kernels.items() if len(k) >= 2]


def structure_table(rows: list[GroupStructure], learned_name: str = "VAE ELBO",
                    extra: Mapping[str, Mapping[str, object]] | None = None) -> str:
    """The rows as an aligned text table, nats per held-out kernel.

    `extra` adds columns after ``kernels``: ``{column title: {group: value}}``.
    """
    extra = dict(extra or {})
    with_learned = any(r.learned is not None for r in rows)
    records = []
    for r in rows:
        record = {"group": r.group, "kernels": r.n_kernels, "iid": f"{r.iid:.1f}", "full": f"{r.full:.1f}",
                  "gain": f"{r.gain:+.1f}"}
        record.update({title: values.get(r.group, "-") for title, values in extra.items()})
        if with_learned:
            record["learned"] = "-" if r.learned is None else f"{r.learned:.1f}"
            record["learned_gain"] = "-" if r.learned is None else f"{r.learned - r.full:+.1f}"
        records.append(record)
    columns: list[Column] = ["group", "kernels", *extra, ("iid", "iid Gaussian"), ("full", "full-cov Gaussian"), "gain"]
    if with_learned:
        columns += [("learned", learned_name), ("learned_gain", f"{learned_name} - full")]
    return format_table(records, columns)


def structure_warnings(rows: list[GroupStructure], learned_name: str = "VAE") -> list[str]:
    """One line per group whose learned prior does not beat the full-covariance Gaussian on held-out kernels."""
    return [f"group {r.group!r}: the {learned_name} ({r.learned:.2f} nats per kernel) does not beat a "
            f"full-covariance Gaussian ({r.full:.2f}) by {MARGIN} on held-out kernels, so it transfers nothing "
            "that the corrnormal prior would not" for r in rows if r.learned_beats_full is False]


def _rows(kernels: np.ndarray) -> np.ndarray:
    kernels = np.asarray(kernels, dtype=np.float64)
    return kernels.reshape(len(kernels), -1)
