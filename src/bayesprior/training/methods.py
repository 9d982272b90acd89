"""The training methods of the paper, in one table, and the network each one starts from.

- ``ri``: random initialisation, He (Kaiming) normal for ReLU on every convolution, zero biases;
- ``pr``: weights of a source checkpoint, everything fine-tuned;
- ``prf``: weights of a source checkpoint, only the layers matching the architecture's declared
  ``finetune_layers`` globs stay trainable (for the 3D U-Net: first and last blocks);
- a method a plugin registers (``register_methods``), e.g. ``l2sp``: the source model's weights, every
  layer trained, with the plugin's penalty (times ``penalty_weight``) added to the data loss;
- the name of any registered prior (``gaussian``, ``loguniform``, ``dwp`` ...): the network is made
  Bayesian with that prior on each layer group the architecture declares (or on every convolution
  with a kernel larger than 1 if it declares none), and with ``prior_layers = "all"`` on every other
  convolution and linear layer too; posterior means start from a source checkpoint
  when one is given, or from prior samples with ``init_from_prior``. A prior centred at the source
  network (``l2sp_bayes``, ``swag``, ``dwp_anchored``) needs the source model: it is bound to its weights.

`training_method(name)` answers what a method needs and does (`TrainingMethod`); the CLI, the trainer and
the experiment ask it instead of testing names.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..checkpoints import deterministic_state, read_model_file, require_finite_state
from ..errors import CheckpointError, ConfigError
from ..layers import is_supported
from ..plugins import (
    architecture_finetune_layers,
    architecture_groups,
    build_architecture,
    method_registry,
    prior_centred_at_source,
    prior_fitter,
    prior_per_group,
    prior_registry,
)
from ..selectors import Selector, by_group, by_layer_names
from ..wrap import Rule, bayesianize
from .config import TrainConfig

SOURCE_REQUIRED, SOURCE_OPTIONAL, SOURCE_UNUSED = "required", "optional", "unused"
TRAINS_ALL, TRAINS_FINETUNE_LAYERS = "all", "finetune_layers"


@dataclass(frozen=True)
class TrainingMethod:
    """What a training method needs and what it trains.

    Attributes:
        name: ``ri``, ``pr``, ``prf`` or a registered prior's name.
        source: does it start from a source model? ``"required"`` (its weights), ``"optional"``
            (posterior means start there when one is given) or ``"unused"``.
        bayesian: trained variationally, with the prior `name` on every layer group.
        trains: ``"all"`` layers, or ``"finetune_layers"``: only those the architecture declares.
        learned_prior: the prior is first fitted to the source models' kernels (its plugin gives ``fit``).
        penalty: a deterministic method's penalty on the weights, registered by a plugin
            (``register_methods``), or False.
        description: one line for listings.
    """

    name: str
    source: str
    bayesian: bool
    trains: str
    learned_prior: bool = False
    penalty: bool = False
    description: str = ""

    @property
    def needs_source(self) -> bool:
        return self.source == SOURCE_REQUIRED


_DETERMINISTIC = {m.name: m for m in (
    TrainingMethod("ri", SOURCE_UNUSED, bayesian=False, trains=TRAINS_ALL,
                   description="random initialisation (He normal), every layer trained"),
    TrainingMethod("pr", SOURCE_REQUIRED, bayesian=False, trains=TRAINS_ALL,
                   description="the source model's weights, every layer fine-tuned"),
    TrainingMethod("prf", SOURCE_REQUIRED, bayesian=False, trains=TRAINS_FINETUNE_LAYERS,
                   description="the source model's weights, only the architecture's fine-tuning layers trained"),
)}
DETERMINISTIC_METHODS = tuple(_DETERMINISTIC)
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def known_methods() -> list[str]:
    """The deterministic methods, those plugins register, then every registered prior name."""
    return list(DETERMINISTIC_METHODS) + method_registry().names() + prior_registry().names()


def training_method(name: str) -> TrainingMethod:
    """The table row of method `name`: a deterministic method, a plugin's method, or any registered prior.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
    """
    if name in _DETERMINISTIC:
        return _DETERMINISTIC[name]
    if name in method_registry():
        return TrainingMethod(name, SOURCE_REQUIRED, bayesian=False, trains=TRAINS_ALL, penalty=True,
                              description=method_registry().get(name).description)
    if name in prior_registry():
        return TrainingMethod(name, SOURCE_REQUIRED if prior_centred_at_source(name) else SOURCE_OPTIONAL,
                              bayesian=True, trains=TRAINS_ALL, learned_prior=prior_fitter(name) is not None,
                              description=prior_registry().get(name).description)
    raise ConfigError(f"unknown method {name!r} (known: {', '.join(known_methods())})")


class WeightPenalty(nn.Module):
    """A deterministic method's penalty, times its weight: ``forward(net)`` is what a step adds to its loss."""

    def __init__(self, penalty: nn.Module, weight: float):
        super().__init__()
        self.penalty = penalty
        self.weight = float(weight)

    def forward(self, net: nn.Module) -> Tensor:
        return self.weight * self.penalty(net)


def with_penalty_weight(config: TrainConfig) -> TrainConfig:
    """`config` with the penalty weight its method's run uses written out: the method's registered default where
    none is given, so that a run's record says which weight it trained with, and a run or result made under
    another default is not taken for this one (it is refused, or redone with --rerun-changed)."""
    if config.penalty_weight is not None or not training_method(config.method).penalty:
        return config
    return dataclasses.replace(config, penalty_weight=_default_penalty_weight(config.method))


def _default_penalty_weight(method: str) -> float:
    return float(method_registry().get(method).extras.get("default_weight", 1.0))


def build_penalty(config: TrainConfig, net: nn.Module) -> WeightPenalty | None:
    """The penalty of `config.method` on `net`, which must still hold the source weights (None for a method
    without one). Its weight is ``config.penalty_weight``, or the method's registered default."""
    method = training_method(config.method)
    if not method.penalty:
        if config.penalty_weight is not None:
            raise ConfigError(f"penalty_weight has no effect on method {method.name!r}, which adds no penalty "
                              f"(methods with one: {', '.join(method_registry().names()) or 'none installed'})")
        return None
    weight = config.penalty_weight if config.penalty_weight is not None else _default_penalty_weight(method.name)
    return WeightPenalty(method_registry().get(method.name).obj(net), weight)


def training_methods() -> list[TrainingMethod]:
    """Every method: the deterministic ones, then one per registered prior."""
    return [training_method(name) for name in known_methods()]


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
        CheckpointError: unreadable file, weights that are NaN or infinite, or that do not fit `net` (the message
            names the architecture settings that differ, e.g. another number of input channels).
    """
    payload = read_model_file(source)
    state = deterministic_state(payload)
    require_finite_state(state, source, "its weights")
    try:
        net.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(source, f"its network cannot start this run's: {_misfit(payload, state, net)}") from None


def _misfit(payload: Mapping[str, Any], state: Mapping[str, Any], net: nn.Module) -> str:
    """Why a source's weights do not fit `net`, in one line: the architecture settings both record and that differ
    (``in_channels 2 there, 1 here``), else the first tensors that differ."""
    theirs = payload.get("architecture") or {}
    ours = getattr(net, "architecture_spec", None) or {}
    if theirs.get("name") and ours.get("name") and theirs["name"] != ours["name"]:
        return f"it is a {theirs['name']} network, this run trains a {ours['name']}"
    mine, other = dict(ours.get("config") or {}), dict(theirs.get("config") or {})
    differ = [f"{key} {other[key]} there, {mine[key]} here" for key in sorted(set(mine) & set(other))
              if mine[key] != other[key]]
    if differ:
        return f"its architecture differs ({'; '.join(differ)})"
    own = net.state_dict()
    shapes = [f"{key} {tuple(state[key].shape)} there, {tuple(own[key].shape)} here" for key in own
              if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape]
    missing = sorted(set(own) - set(state))
    return "; ".join(shapes[:2] + ([f"{len(missing)} tensor(s) missing, e.g. {missing[0]}"] if missing else [])) or \
        "its weights do not fit the network"


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


def prior_file_given_twice(prior_path: str | Path | None, prior_options: Mapping[str, Any] | None) -> bool:
    """Whether the prior file and a ``path`` prior option name two different files (one file spelt two ways,
    ``runs/src/swag.pt`` and ``./runs/src/swag.pt``, is given once)."""
    other = (prior_options or {}).get("path")
    if prior_path is None or other is None:
        return False
    return Path(str(other)).expanduser().resolve() != Path(prior_path).expanduser().resolve()


def prior_rules(prior_name: str, groups: Mapping[str, list[str]], prior_path: str | None = None,
                prior_options: Mapping[str, Any] | None = None, other_layers: Sequence[str] = ()) -> list[Rule]:
    """One rule per layer group, each with its own prior built by the registered factory, and one for
    `other_layers` (layers outside the groups, ``prior_layers = "all"``) if any are given.

    The factory config is ``path`` (when `prior_path` is given), the `prior_options`, and ``group``
    when the prior is registered with ``per_group=True`` (so a DWP prior loads that group's VAE).
    Without groups, one rule covers every convolution with a kernel larger than 1.

    Raises:
        ConfigError: `other_layers` for a prior fitted per layer group (it has no prior for them).
    """
    per_group = prior_per_group(prior_name)
    if other_layers:
        check_prior_layers(prior_name, "all")
    base: dict[str, Any] = {}
    if prior_path is not None:
        base["path"] = str(prior_path)
    options = dict(prior_options or {})
    if prior_file_given_twice(prior_path, options):
        raise ConfigError(f"the prior file is given twice: {prior_path} (the prior file) and path={options['path']} "
                          "(a prior option); give it once")
    base.update(options)
    rest = [Rule(by_layer_names(other_layers, "layers outside the groups"), (prior_name, base))] if other_layers else []
    if not groups:
        return [Rule(Selector("convolutions with kernel > 1", _kernel_larger_than_one), (prior_name, base)), *rest]
    rules = []
    for group in groups:
        config = dict(base)
        if per_group:
            config["group"] = group
        rules.append(Rule(by_group(group), (prior_name, config)))
    return rules + rest


def check_prior_layers(prior_name: str, prior_layers: str) -> None:
    """A ConfigError if `prior_layers` is ``all`` for a prior fitted per layer group (it has none for the rest)."""
    if prior_layers == "all" and prior_per_group(prior_name):
        raise ConfigError(f"prior {prior_name!r} is fitted per layer group and has no prior for the layers outside "
                          "them; prior_layers = 'all' needs a prior that is not (e.g. gaussian, l2sp_bayes, swag)")


def layers_outside(net: nn.Module, groups: Mapping[str, list[str]]) -> list[str]:
    """The layers of `net` that can be made Bayesian and that no group holds (without groups: those with no kernel
    larger than 1, the layers `prior_rules` leaves out), in network order; a layer inside one of them is not listed."""
    held = {name for members in groups.values() for name in members}
    outside: list[str] = []
    for name, module in net.named_modules():
        if not name or any(name.startswith(o + ".") for o in outside) or not is_supported(module):
            continue
        covered = name in held if groups else _kernel_larger_than_one(name, module, groups)
        if not covered:
            outside.append(name)
    return outside


def build_model(config: TrainConfig) -> nn.Module:
    """The network `config.method` trains, initialised (and frozen, or made Bayesian) as its table row says.

    Random numbers come from torch's global generator: seed it first for a reproducible start.

    Raises:
        ConfigError: unknown method, a method that needs a source without one, `prf` on an
            architecture that declares no fine-tuning layers.
        CheckpointError: a source file that cannot be read or does not fit.
    """
    method = training_method(config.method)
    if method.needs_source and config.source is None:
        raise ConfigError(f"method {method.name!r} needs a source checkpoint (--source)")
    net = build_architecture(config.architecture, **dict(config.architecture_config))
    if config.source is not None and method.source != SOURCE_UNUSED:
        load_source_weights(net, config.source)
    else:
        he_initialise(net, config.init_scale)
    if method.trains == TRAINS_FINETUNE_LAYERS:
        globs = architecture_finetune_layers(config.architecture)
        if not globs:
            raise ConfigError(f"architecture {config.architecture!r} declares no fine-tuning layers, "
                              f"so method {method.name!r} cannot tell which layers to keep trainable")
        freeze_except(net, globs)
    if not method.bayesian:
        return net
    groups = architecture_groups(config.architecture, net)
    other = layers_outside(net, groups) if config.prior_layers == "all" else []
    rules = prior_rules(method.name, groups, config.prior_path, config.prior_options, other)
    return bayesianize(net, rules, groups=groups, log_variance_init=config.log_variance_init,
                       init_from_prior=config.init_from_prior, mode=config.forward_mode,
                       posterior_std_ratio=config.posterior_std_ratio)
