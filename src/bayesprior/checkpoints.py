"""Saved models: one file format for deterministic and Bayesian networks.

A model file is a `torch.save`d dict with ``format == "bayesprior.model/1"``:

- ``kind``: ``"deterministic"`` or ``"bayesian"``;
- ``architecture``: ``{"name": ..., "config": {...}}`` of the architecture plugin that built the
  network (or None for a network built by hand; then the loader must be given the network);
- ``state_dict``: the network's state (for Bayesian models, the `BayesianModel` state);
- for Bayesian models also ``priors``, ``assignment``, ``groups``, ``modes`` (see `bayesprior.wrap`);
- ``extra``: free-form metadata (training configuration, metrics, provenance).

Files are written atomically. `load_model` rebuilds either kind; `deterministic_state` gives the
plain weights of either kind (posterior means for Bayesian models), which is what kernel harvesting
and fine-tuning start from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .atomic import atomic_torch_save
from .errors import CheckpointError
from .safe_load import load_plain

MODEL_FORMAT = "bayesprior.model/1"


def model_payload(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model-file dictionary of `model` (deterministic or `BayesianModel`), e.g. to embed in a checkpoint."""
    from .wrap import BayesianModel

    if isinstance(model, BayesianModel):
        return model.payload(extra)
    return {
        "format": MODEL_FORMAT,
        "kind": "deterministic",
        "architecture": getattr(model, "architecture_spec", None),
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }


def save_model(model: nn.Module, path: str | Path, extra: Mapping[str, Any] | None = None) -> None:
    """Write `model` (deterministic or `BayesianModel`) to `path` atomically."""
    atomic_torch_save(model_payload(model, extra), path)


def read_model_file(path: str | Path, map_location: str | torch.device = "cpu",
                    trust: bool | None = None) -> dict[str, Any]:
    """The raw payload of a model file, validated. Raises `CheckpointError` naming the file.

    The file is read without running code (plain types only); `trust=True` allows an older file that
    needs the unsafe unpickler (see `bayesprior.safe_load`).
    """
    path = Path(path)
    payload = load_plain(path, "a model file", map_location, trust)
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        payload = payload["model"]  # a training checkpoint embeds its model payload
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise CheckpointError(path, f"not a bayesprior model file (expected format {MODEL_FORMAT!r})")
    return payload


def load_model(path: str | Path, model: nn.Module | None = None,
               map_location: str | torch.device = "cpu", trust: bool | None = None) -> nn.Module:
    """Load a model file; `model` is a freshly built network to fill when the file names no architecture."""
    from .plugins import build_architecture
    from .wrap import load_bayesian

    payload = read_model_file(path, map_location, trust)
    if payload["kind"] == "bayesian":
        return load_bayesian(path, model, map_location, trust)
    if model is None:
        arch = payload.get("architecture")
        if not arch:
            raise CheckpointError(path, "records no architecture; pass the network as `model`")
        model = build_architecture(arch["name"], **arch["config"])
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(path, f"state does not fit the model: {exc}") from None
    return model


def deterministic_state(payload: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Plain network weights from a model payload: as saved, or posterior means for Bayesian models.

    Keys are those of the deterministic network (``down1.conv1.weight``), whichever kind was saved.
    """
    state = payload["state_dict"]
    if payload["kind"] == "deterministic":
        return dict(state)
    out = {}
    for key, value in state.items():
        if not key.startswith("net."):
            continue  # prior parameters
        key = key[len("net."):]
        if key.endswith(".posterior.loc"):
            out[key[: -len(".posterior.loc")] + ".weight"] = value
        elif key.endswith(".posterior.log_variance"):
            continue
        else:
            out[_unwrapped_key(key, payload.get("assignment", {}))] = value
    return out


def _unwrapped_key(key: str, wrapped_layers: Mapping[str, Any]) -> str:
    # strip exactly the wrapper's ".module" of a Bayesian layer; a network may itself name a
    # submodule "module" (e.g. "encoder.module.conv"), so no blind first-match replacement
    for layer in wrapped_layers:
        prefix = layer + ".module."
        if key.startswith(prefix):
            return layer + "." + key[len(prefix):]
    return key
