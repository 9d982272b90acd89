"""Kernel pictures: harvested kernels beside samples of the fitted prior (the paper's Figure 5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bayesprior.errors import ConfigError
from bayesprior.figures import pyplot, save_figure
from bayesprior.kernels import KernelBank

from .prior_file import PriorFile


def central_slice(kernels: np.ndarray) -> np.ndarray:
    """The middle slice along the first spatial axis: (n, k, k, k) -> (n, k, k); 2D kernels unchanged."""
    return kernels[:, kernels.shape[1] // 2] if kernels.ndim == 4 else kernels


def draw_kernel_figure(bank: KernelBank, prior: PriorFile, out: Path, count: int = 8, seed: int = 0) -> None:
    """Write a PNG: one row per group, `count` harvested kernels left, `count` VAE samples right.

    Each row shares one symmetric colour scale, so harvested and sampled kernels compare directly.
    Raises `ConfigError` if the bank and the prior share no group.
    """
    plt = pyplot()
    if count < 1:
        raise ConfigError(f"count must be >= 1, got {count}")
    groups = [g for g in bank.groups if g in prior.groups and len(bank.kernels[g])]
    if not groups:
        raise ConfigError(f"the kernel bank and the prior file {prior.path} share no group with kernels")
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(groups), 2 * count + 1, figsize=(0.7 * (2 * count + 1), 0.8 * len(groups) + 0.6),
                             squeeze=False)
    for row, g in enumerate(groups):
        harvested = bank.kernels[g][rng.choice(len(bank.kernels[g]), size=min(count, len(bank.kernels[g])),
                                               replace=False)]
        sampled = prior.vae(g).sample(count, generator=torch.Generator().manual_seed(seed + row)).numpy()
        limit = float(np.abs(np.concatenate([harvested.ravel(), sampled.ravel()])).max()) or 1.0
        for col in range(2 * count + 1):
            ax = axes[row, col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == count:
                ax.axis("off")
                continue
            source, i = (harvested, col) if col < count else (sampled, col - count - 1)
            if i < len(source):
                ax.imshow(central_slice(source[i:i + 1])[0], cmap="RdBu_r", vmin=-limit, vmax=limit)
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(g, rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("harvested", loc="left", fontsize=9)
    axes[0, count + 1].set_title("VAE samples", loc="left", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out, dpi=100)
