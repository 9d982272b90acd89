"""Training curves: loss, KL and validation DSC per epoch, as one PNG."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from ..figures import pyplot, save_figure


def plot_curves(history: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Draw the loss (and data term), the KL and the validation DSC of `history` into `path`."""
    plt = pyplot()
    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    axes[0].plot(epochs, [r["loss"] for r in history], label="loss")
    axes[0].plot(epochs, [r["data"] for r in history], label="data term", linestyle="--")
    if any("val_loss" in r for r in history):
        axes[0].plot(epochs, [r.get("val_loss", math.nan) for r in history], label="validation loss")
    axes[0].set_yscale("symlog")
    axes[0].legend()
    axes[1].plot(epochs, [r["kl"] for r in history])
    axes[2].plot(epochs, [r.get("val_dsc", math.nan) for r in history])
    for ax, title in zip(axes, ("loss", "KL", "validation DSC"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    save_figure(fig, path, dpi=80)
