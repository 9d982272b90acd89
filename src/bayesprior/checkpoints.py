"""Saved models: one file format for deterministic and Bayesian networks.

A model file is a `torch.save`d dict with ``format == "bayesprior.model/1"``:

- ``kind``: ``"deterministic"`` or ``"bayesian"``;
- ``architecture``: ``{"name": ..., "config": {...}}`` of the architecture plugin that built the
  network (or None for a network built by hand; then the loader must be given the network);
- ``state_dict``: the network's state (for Bayesian models, the `BayesianModel` state);
- for Bayesian models also ``bayesprior_version``, ``priors`` (each prior's registry name and config),
  ``assignment`` (layer -> prior key), ``groups`` and ``modes`` (see `bayesprior.wrap`);
- ``extra``: free-form metadata (training configuration, metrics, provenance).

This module owns all persistence of models: it writes files (`save_model`), reads them without running
code (`read_model_file`), and rebuilds either kind (`load_model`, `load_bayesian`, `model_from_payload`).
`deterministic_state` gives the plain weights of either kind (posterior means for Bayesian models), which
is what kernel harvesting and fine-tuning start from. It imports `bayesprior.wrap`; `wrap` never imports it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .atomic import atomic_torch_save
from .errors import CheckpointError, ConfigError
from .plugins import build_architecture
from .safe_load import load_plain
from .selectors import by_layer_names
from .version import __version__
from .wrap import BayesianModel, Rule, bayesianize

MODEL_FORMAT = "bayesprior.model/1"


def model_payload(model: nn.Module, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The model-file dictionary of `model` (deterministic or `BayesianModel`), e.g. to embed in a checkpoint.

    A Bayesian model records each prior by registry name and config, so loading rebuilds the priors
    through the plugin registry; priors not built from the registry cannot be saved (`ConfigError`).
    """
    if isinstance(model, BayesianModel):
        return _bayesian_payload(model, extra)
    return {
        "format": MODEL_FORMAT,
        "kind": "deterministic",
        "architecture": getattr(model, "architecture_spec", None),
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }


def _bayesian_payload(model: BayesianModel, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    specs = {}
    for key in model.priors:
        prior = model.prior_by_key(key)
        if prior.registry_name is None:
            raise ConfigError(f"prior {key!r} ({type(prior).__name__}) was not built through the plugin "
                              "registry, so it cannot be saved by name; build it with a registry spec")
        specs[key] = {"name": prior.registry_name, "config": prior.config()}
    return {
        "format": MODEL_FORMAT,
        "kind": "bayesian",
        "bayesprior_version": __version__,
        "architecture": getattr(model.net, "architecture_spec", None),
        "priors": specs,
        "assignment": model.assignment,
        "groups": model.groups,
        "modes": {name: layer.mode for name, layer in model.bayesian_layers()},
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
    _check_payload(payload, path)
    return payload


def _check_payload(payload: Mapping[str, Any], path: Path) -> None:
    """The keys every reader of a model payload relies on, with their types."""
    kind = payload.get("kind")
    if kind not in ("deterministic", "bayesian"):
        raise CheckpointError(path, f"model file of unknown kind {kind!r} (expected 'deterministic' or 'bayesian')")
    expected: dict[str, type | tuple[type, ...]] = {"state_dict": dict, "extra": (dict, type(None)),
                                                    "architecture": (dict, type(None))}
    if kind == "bayesian":
        expected.update(priors=dict, assignment=dict)
    for key, types in expected.items():
        if not isinstance(payload.get(key), types):
            raise CheckpointError(path, f"model file's {key!r} is {type(payload.get(key)).__name__}, "
                                        "not what a bayesprior model file holds")


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold a NaN or an infinity."""
    return [name for name, value in state.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()]


def require_finite_state(state: Mapping[str, Any], path: str | Path, what: str = "weights") -> None:
    """Raise `CheckpointError` naming `path` and the tensors if `state` holds NaN or infinite values.

    A network trained into NaN predicts nothing useful (an all-NaN softmax argmaxes to background), and
    kernels or weights taken from it poison whatever starts from them; such a file is refused, not used.
    """
    bad = non_finite_tensors(state)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise CheckpointError(path, f"{what} hold NaN or infinite values ({shown}); the run that wrote it "
                                    "diverged, so it is refused")


def load_model(path: str | Path, model: nn.Module | None = None,
               map_location: str | torch.device = "cpu", trust: bool | None = None) -> nn.Module:
    """Load a model file of either kind.

    Args:
        path: the file.
        model: a freshly built network to fill (for a Bayesian file, its deterministic network); needed
            when the file names no architecture, else rebuilt from the architecture plugin it records.
        map_location, trust: as for `read_model_file`.
    Raises:
        CheckpointError: unreadable file, wrong format, or a state that does not fit the model.
    """
    return model_from_payload(read_model_file(path, map_location, trust), path, model)


def load_bayesian(path: str | Path, model: nn.Module | None = None,
                  map_location: str | torch.device = "cpu", trust: bool | None = None) -> BayesianModel:
    """Load a Bayesian model file (written by `save_model` from a `BayesianModel`); see `load_model`.

    Raises:
        CheckpointError: unreadable file, a deterministic model, or a state that does not fit the model.
    """
    payload = read_model_file(path, map_location, trust)
    if payload.get("kind") != "bayesian":
        raise CheckpointError(path, "holds a deterministic model, not a Bayesian one (use load_model)")
    loaded = model_from_payload(payload, path, model)
    if not isinstance(loaded, BayesianModel):  # a Bayesian payload is rebuilt by bayesianize
        raise CheckpointError(path, f"holds a Bayesian model that was rebuilt as a {type(loaded).__name__}")
    return loaded


def model_from_payload(payload: Mapping[str, Any], path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the model a payload (`read_model_file`) describes; `path` only names the file in errors.

    Raises:
        CheckpointError: a state that does not fit, or weights that are NaN or infinite.
    """
    require_finite_state(payload["state_dict"], path)
    net = model if model is not None else recorded_architecture(payload, path)
    if payload["kind"] == "bayesian":
        return _bayesian_from_payload(payload, path, net)
    try:
        net.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(path, f"state does not fit the model: {exc}") from None
    return net


def recorded_architecture(payload: Mapping[str, Any], path: str | Path) -> nn.Module:
    """A fresh network built by the architecture plugin the payload records. Raises `CheckpointError` naming `path`."""
    arch = payload.get("architecture")
    if not arch:
        raise CheckpointError(path, "records no architecture; pass the network as `model`")
    return build_architecture(arch["name"], **arch["config"])


def _bayesian_from_payload(payload: Mapping[str, Any], path: str | Path, net: nn.Module) -> BayesianModel:
    # rebuild the rules in the saved order, so the priors get the same keys as in the file
    rules = []
    for key, spec in payload["priors"].items():
        layers = [n for n, k in payload["assignment"].items() if k == key]
        rules.append(Rule(by_layer_names(layers, f"layers of {key}"), (spec["name"], spec["config"])))
    try:
        bm = bayesianize(net, rules, groups=payload.get("groups"), strict=True)
    except Exception as exc:
        raise CheckpointError(path, f"does not fit the given model: {exc}") from None
    state = payload["state_dict"]
    missing, unexpected = _state_mismatch(bm, state)
    if missing or unexpected:
        raise CheckpointError(path, f"state does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    try:
        bm.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(path, f"state does not fit the model: {exc}") from None
    for name, mode in payload.get("modes", {}).items():
        bm.net.get_submodule(name).mode = mode
    return bm


def _state_mismatch(bm: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    own = set(bm.state_dict())
    return sorted(own - set(state)), sorted(set(state) - own)


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
