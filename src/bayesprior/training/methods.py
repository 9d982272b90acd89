"""Build the network a training method starts from.

- ``ri``: random initialisation, He (Kaiming) normal for ReLU on every convolution, zero biases;
- ``pr``: weights of a source checkpoint, everything fine-tuned;
- ``prf``: weights of a source checkpoint, only the layers matching the architecture's declared
  ``finetune_layers`` globs stay trainable (for the 3D U-Net: first and last blocks);
- the name of any registered prior (``gaussian``, ``loguniform``, ``dwp`` ...): the network is made
  Bayesian with that prior on each layer group the architecture declares (or on every convolution
  with a kernel larger than 1 if it declares none); posterior means start from a source checkpoint
  when one is given, or from prior samples with ``init_from_prior``.
"""
from __future__ import annotations

import fnmatch
import inspect
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..checkpoints import deterministic_state, read_model_file
from ..errors import CheckpointError, ConfigError
from ..plugins import (architecture_finetune_layers, architecture_groups, build_architecture,
                       prior_registry)
from ..wrap import BayesianModel, Rule, Selector, bayesianize, by_group

DETERMINISTIC_METHODS = ("ri", "pr", "prf")
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def known_methods() -> list[str]:
    """The deterministic methods followed by every registered prior name."""
    return list(DETERMINISTIC_METHODS) + prior_registry().names()


def he_initialise(net: nn.Module, scale: float = 1.0) -> None:
    """He (Kaiming) normal initialisation for ReLU on every convolution weight, times `scale`; biases to zero."""
    for module in net.modules():
        if isinstance(module, _CONV_TYPES):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if scale != 1.0:
                with torch.no_grad():
                    module.weight.mul_(scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def load_source_weights(net: nn.Module, source: str | Path) -> None:
    """Copy the plain weights of a source model file (deterministic or Bayesian) into `net`.

    Raises:
        CheckpointError: unreadable file, or weights that do not fit `net`.
    """
    state = deterministic_state(read_model_file(source))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(source, f"weights do not fit the network: {exc}") from None


def _matches(module_name: str, globs: list[str]) -> bool:
    parts = module_name.split(".")
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, g) for p in prefixes for g in globs)


def freeze_except(net: nn.Module, globs: list[str]) -> list[str]:
    """Set ``requires_grad=False`` on every parameter outside modules matching `globs`.

    A parameter stays trainable when its module or any parent module matches a glob.
    Returns the names of the parameters that stay trainable.
    """
    trainable = []
    for name, param in net.named_parameters():
        module_name = name.rsplit(".", 1)[0] if "." in name else ""
        keep = _matches(module_name, globs)
        param.requires_grad_(keep)
        if keep:
            trainable.append(name)
    if not trainable:
        raise ConfigError(f"fine-tuning layers {globs} match no parameter of the network")
    return trainable


def _kernel_larger_than_one(name: str, module: nn.Module, groups: Mapping) -> bool:
    k = getattr(module, "kernel_size", None)
    if not isinstance(module, _CONV_TYPES) or k is None:
        return False
    k = tuple(k) if isinstance(k, (tuple, list)) else (k,)
    return any(v > 1 for v in k)


def prior_rules(prior_name: str, groups: Mapping[str, list[str]], prior_path: str | None = None,
                prior_options: Mapping[str, Any] | None = None) -> list[Rule]:
    """One rule per layer group, each with its own prior built by the registered factory.

    The factory config is ``path`` (when `prior_path` is given), the `prior_options`, and ``group``
    when the factory accepts a ``group`` parameter (so a DWP prior loads that group's VAE).
    Without groups, one rule covers every convolution with a kernel larger than 1.
    """
    factory = prior_registry().get(prior_name).obj
    try:
        accepts_group = "group" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        accepts_group = False
    base: dict[str, Any] = {}
    if prior_path is not None:
        base["path"] = str(prior_path)
    base.update(prior_options or {})
    if not groups:
        return [Rule(Selector("convolutions with kernel > 1", _kernel_larger_than_one), (prior_name, base))]
    rules = []
    for group in groups:
        config = dict(base)
        if accepts_group:
            config["group"] = group
        rules.append(Rule(by_group(group), (prior_name, config)))
    return rules


def build_model(architecture: str, architecture_config: Mapping[str, Any], method: str,
                source: str | Path | None = None, prior_path: str | None = None,
                prior_options: Mapping[str, Any] | None = None, init_from_prior: bool = False,
                log_variance_init: float = -10.0, forward_mode: str = "lrt", init_scale: float = 1.0) -> nn.Module:
    """The network `method` trains, initialised (and frozen, or made Bayesian) as the method says.

    Random numbers come from torch's global generator: seed it first for a reproducible start.

    Raises:
        ConfigError: unknown method, a method that needs a source without one, `prf` on an
            architecture that declares no fine-tuning layers.
        CheckpointError: a source file that cannot be read or does not fit.
    """
    net = build_architecture(architecture, **dict(architecture_config))
    if method == "ri":
        he_initialise(net, init_scale)
        return net
    if method in ("pr", "prf"):
        if source is None:
            raise ConfigError(f"method {method!r} needs a source checkpoint (--source)")
        load_source_weights(net, source)
        if method == "prf":
            globs = architecture_finetune_layers(architecture)
            if not globs:
                raise ConfigError(f"architecture {architecture!r} declares no fine-tuning layers, "
                                  "so method 'prf' cannot tell which layers to keep trainable")
            freeze_except(net, globs)
        return net
    if method not in prior_registry():
        raise ConfigError(f"unknown method {method!r} (known: {', '.join(known_methods())})")
    if source is not None:
        load_source_weights(net, source)
    else:
        he_initialise(net, init_scale)
    groups = architecture_groups(architecture, net)
    rules = prior_rules(method, groups, prior_path, prior_options)
    return bayesianize(net, rules, groups=groups, log_variance_init=log_variance_init,
                       init_from_prior=init_from_prior, mode=forward_mode)


def is_bayesian(model: nn.Module) -> bool:
    return isinstance(model, BayesianModel)
