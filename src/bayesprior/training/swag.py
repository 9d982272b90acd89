"""SWAG moments of a trained network: the source posterior that a ``swag`` prior is made of.

SWAG (Maddox et al. 2019) fits a Gaussian to the weights an optimiser visits at a constant learning rate
around a trained network: one snapshot per epoch gives the running mean, the diagonal variance (mean of
squares minus squared mean) and the deviations of the last K snapshots from the running mean, a low-rank
part. ``train --swag-epochs E`` collects them after training (`collect_swag`), into ``swag.pt`` beside
``model.pt``, which stays the trained network. Unlike Maddox et al., who use SGD, the SWAG epochs here run Adam at
the constant learning rate (a fresh one, as every run here trains with Adam): its steps are normalised per weight,
so the collected spread follows the learning rate and number of steps more than the loss's curvature, and a
``swag`` prior's width is in practice set by its ``scale``.

File format ``bayesprior.swag/1`` (plain types, read with ``weights_only=True``)::

    {"format": ..., "bayesprior_version": ..., "torch_version": ..., "command": ...,
     "rank": K, "snapshots": n, "lr": ..., "source_model_sha256": the model.pt it started from,
     "architecture": {"name": ..., "config": {...}}, "preprocess": {...} or None,
     "input_grid": {"spacing": [...], ...} or None (the source run's grid: `bayesprior.data.provenance`; absent
     in files written before it),
     "params": {"down1.conv1.weight": {"mean": tensor, "variance": tensor, "deviations": tensor (K, *shape)}}}

Only weights of two or more dimensions (convolutions, linear layers) are kept: those are what Bayesian
layers make random.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..atomic import atomic_torch_save
from ..errors import CheckpointError, ConfigError
from ..hashing import file_sha256
from ..safe_load import load_plain
from ..version import __version__, command_line

SWAG_FORMAT = "bayesprior.swag/1"


def swag_parameters(net: nn.Module) -> dict[str, Tensor]:
    """The weights SWAG follows: every parameter of two or more dimensions, by its name in `net`."""
    return {name: p for name, p in net.named_parameters() if p.dim() >= 2}


class SwagMoments:
    """Running first and second moments of snapshots of a network's weights, and the last `rank` deviations."""

    def __init__(self, net: nn.Module, rank: int):
        if not (isinstance(rank, int) and rank >= 2):
            raise ConfigError(f"SWAG rank must be an integer >= 2, got {rank!r}")
        self.rank = rank
        self.snapshots = 0
        self.mean = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in swag_parameters(net).items()}
        self.square_mean = {n: torch.zeros_like(m) for n, m in self.mean.items()}
        self.deviations: deque[dict[str, Tensor]] = deque(maxlen=rank)

    @torch.no_grad()
    def add(self, net: nn.Module) -> None:
        """Take one snapshot of `net`'s weights."""
        self.snapshots += 1
        weights = swag_parameters(net)
        for name, mean in self.mean.items():
            w = weights[name].detach().double()
            mean.add_(w - mean, alpha=1.0 / self.snapshots)
            self.square_mean[name].add_(w * w - self.square_mean[name], alpha=1.0 / self.snapshots)
        self.deviations.append({n: (weights[n].detach().double() - m).float() for n, m in self.mean.items()})

    def state_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "snapshots": self.snapshots, "mean": self.mean,
                "square_mean": self.square_mean, "deviations": list(self.deviations)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from `state_dict()`'s, onto the device of the network the moments were made for (a checkpoint
        is read onto the CPU; a run on a GPU takes its next snapshot there)."""
        device = next(iter(self.mean.values())).device if self.mean else torch.device("cpu")
        self.snapshots = int(state["snapshots"])
        self.mean = {n: t.to(device) for n, t in state["mean"].items()}
        self.square_mean = {n: t.to(device) for n, t in state["square_mean"].items()}
        self.deviations = deque(({n: t.to(device) for n, t in d.items()} for d in state["deviations"]),
                                maxlen=self.rank)

    def params(self) -> dict[str, dict[str, Tensor]]:
        """Per weight: its SWAG mean, diagonal variance and deviations (rank, *shape), as float32."""
        if self.snapshots < self.rank:
            raise ConfigError(f"SWAG needs at least rank = {self.rank} snapshots, has {self.snapshots}")
        out = {}
        for name, mean in self.mean.items():
            variance = (self.square_mean[name] - mean * mean).clamp_min(0.0)
            out[name] = {"mean": mean.float(), "variance": variance.float(),
                         "deviations": torch.stack([d[name] for d in self.deviations])}
        return out


def write_swag_file(moments: SwagMoments, path: str | Path, *, lr: float, source_model: str | Path,
                    architecture: Mapping[str, Any] | None, preprocess: Mapping[str, Any] | None,
                    input_grid: Mapping[str, Any] | None = None) -> None:
    """Write the moments as a SWAG file (module docstring), atomically. `preprocess` and `input_grid` are the
    source run's, so that a target run using the file as a prior is checked against them."""
    atomic_torch_save({"format": SWAG_FORMAT, "bayesprior_version": __version__,
                       "torch_version": str(torch.__version__), "command": command_line(),
                       "rank": moments.rank, "snapshots": moments.snapshots, "lr": float(lr),
                       "source_model_sha256": file_sha256(source_model),
                       "architecture": dict(architecture) if architecture else None,
                       "preprocess": dict(preprocess) if preprocess is not None else None,
                       "input_grid": dict(input_grid) if input_grid is not None else None,
                       "params": moments.params()}, path)


def read_swag_file(path: str | Path) -> dict[str, Any]:
    """Read and check a SWAG file (plain types only).

    Raises:
        CheckpointError: naming the file: not a SWAG file, recorded fields of the wrong type, inconsistent
            shapes, not real floating-point numbers, NaN or infinite values.
    """
    payload = load_plain(path, "a SWAG file")
    if not isinstance(payload, dict) or payload.get("format") != SWAG_FORMAT:
        raise CheckpointError(path, f"not a SWAG file (expected format {SWAG_FORMAT!r}); write one with "
                                    "`bayesprior train --swag-epochs E`")
    for key in ("architecture", "preprocess", "input_grid"):  # what `info` shows and a target run is checked against
        if payload.get(key) is not None and not isinstance(payload[key], dict):
            raise CheckpointError(path, f"SWAG file's {key!r} is a {type(payload[key]).__name__}, not a table")
    for key, kind in (("source_model_sha256", str), ("command", str), ("lr", (int, float)), ("snapshots", int)):
        if payload.get(key) is not None and (not isinstance(payload[key], kind) or isinstance(payload[key], bool)):
            raise CheckpointError(path, f"SWAG file's {key!r} is a {type(payload[key]).__name__}")
    rank, params = payload.get("rank"), payload.get("params")
    if not isinstance(rank, int) or rank < 2 or not isinstance(params, dict) or not params:
        raise CheckpointError(path, "SWAG file holds no rank >= 2 or no weights")
    for name, entry in params.items():
        if not (isinstance(entry, dict) and all(isinstance(entry.get(k), Tensor)
                                                for k in ("mean", "variance", "deviations"))):
            raise CheckpointError(path, f"SWAG entry {name!r} lacks its mean, variance or deviations")
        if not all(entry[k].is_floating_point() for k in ("mean", "variance", "deviations")):
            dtypes = ", ".join(str(entry[k].dtype) for k in ("mean", "variance", "deviations"))
            raise CheckpointError(path, f"SWAG entry {name!r} is not of real floating-point numbers ({dtypes})")
        shape = tuple(entry["mean"].shape)
        if tuple(entry["variance"].shape) != shape or tuple(entry["deviations"].shape) != (rank, *shape):
            raise CheckpointError(path, f"SWAG entry {name!r}: mean {shape}, variance "
                                        f"{tuple(entry['variance'].shape)} and deviations "
                                        f"{tuple(entry['deviations'].shape)} do not fit rank {rank}")
        if not all(torch.isfinite(entry[k]).all() for k in ("mean", "variance", "deviations")):
            raise CheckpointError(path, f"SWAG entry {name!r} holds NaN or infinite values")
        if bool((entry["variance"] < 0).any()):
            raise CheckpointError(path, f"SWAG entry {name!r} has a negative variance")
    return payload

