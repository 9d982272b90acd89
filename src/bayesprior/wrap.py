"""`bayesianize`: make any torch network Bayesian by configuration.

    bm = bayesianize(net, {by_type(nn.Conv3d): "gaussian"})
    loss, data_term, kl = bm.elbo_loss(nll, n_train=len(train_set))

Rules map selectors to priors. A selector picks modules by name glob (``"encoder.*"``), type
(`by_type`), kernel size (`by_kernel_size`) or named group (`by_group`, groups come from an
architecture plugin or `bayesprior.grouping`). A prior is an instance of `Prior` or a registry spec
(``"gaussian"``, ``("gaussian", {"scale": 0.1})``); one prior object is built per rule and shared by
the layers it selects. The first rule that selects a module wins; unselected modules stay deterministic.
Selectors live in `bayesprior.selectors`; saving and loading in `bayesprior.checkpoints`.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Union, cast

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .layers import MODES, BayesianLayer, is_supported
from .plugins import create_prior, parse_spec
from .posteriors import Posterior
from .priors import Prior, PriorLayers, kl_of_priors
from .selectors import Selector, as_selector
from .tables import format_table

PriorSpec = Union[Prior, str, tuple, Mapping]


@dataclass
class Rule:
    """Layers picked by `select` get `prior`."""

    select: Selector
    prior: PriorSpec


def _as_rules(rules: Mapping[Any, PriorSpec] | Sequence[Rule]) -> list[Rule]:
    if isinstance(rules, Mapping):
        return [Rule(as_selector(k), v) for k, v in rules.items()]
    out = []
    for r in rules:
        if isinstance(r, Rule):
            out.append(Rule(as_selector(r.select), r.prior))
        elif isinstance(r, tuple) and len(r) == 2:
            out.append(Rule(as_selector(r[0]), r[1]))
        else:
            raise ConfigError(f"a rule is Rule(selector, prior) or (selector, prior), got {r!r}")
    return out


def _build_prior(spec: PriorSpec) -> Prior:
    if isinstance(spec, Prior):
        return spec
    prior = create_prior(spec)
    if not isinstance(prior, Prior):
        raise ConfigError(f"prior factory for {parse_spec(spec)[0]!r} returned {type(prior).__name__}, not a Prior")
    return prior


def _bayesian_layer(root: nn.Module, name: str) -> BayesianLayer:
    """The Bayesian layer called `name` in `root`; `ConfigError` if something else took its place since."""
    layer = root.get_submodule(name)
    if not isinstance(layer, BayesianLayer):
        raise ConfigError(f"layer {name!r} is no longer a Bayesian layer (it is a {type(layer).__name__}): "
                          "a module was replaced after bayesianize")
    return layer


def _weight_of(model: nn.Module, name: str) -> Tensor:
    # the layers bayesianize chooses passed `is_supported`: convolutions and linear layers, whose weight is a tensor
    return cast(Tensor, model.get_submodule(name).weight)


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


class ELBO(NamedTuple):
    """The negative ELBO to minimise, and its two terms (each a scalar tensor)."""

    loss: Tensor
    data: Tensor
    kl: Tensor


class Predictive(NamedTuple):
    """Predictive mean over posterior samples and a per-element uncertainty (see `BayesianModel.predict`)."""

    mean: Tensor
    uncertainty: Tensor


# ------------------------------------------------------------------------------------ BayesianModel
class BayesianModel(nn.Module):
    """A network whose selected layers are `BayesianLayer`s, with the priors that score them.

    It is an `nn.Module`: its forward is the network's forward, unchanged; `state_dict`, `.to()`,
    DDP and `torch.save` of its state work as usual. Build it with `bayesianize`.
    """

    def __init__(self, net: nn.Module, priors: dict[str, Prior], assignment: dict[str, str],
                 groups: Mapping[str, Sequence[str]] | None = None):
        super().__init__()
        self.net = net
        self.priors = nn.ModuleDict(priors)
        self.assignment = dict(assignment)  # layer name -> prior key
        self.groups = {k: list(v) for k, v in (groups or {}).items()}

    # -- forward and modes
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.net(*args, **kwargs)

    def bayesian_layers(self) -> Iterator[tuple[str, BayesianLayer]]:
        """(name, layer) for every Bayesian layer, in network order."""
        for name in self.assignment:
            yield name, _bayesian_layer(self.net, name)

    def set_mode(self, mode: str) -> None:
        """Set the forward mode of every Bayesian layer: ``"lrt"``, ``"sample"`` or ``"mean"``."""
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {mode!r}")
        for _, layer in self.bayesian_layers():
            layer.mode = mode

    @property
    def mode(self) -> str:
        modes = {layer.mode for _, layer in self.bayesian_layers()}
        return modes.pop() if len(modes) == 1 else "mixed"

    @contextmanager
    def sampling(self, mode: str) -> Iterator["BayesianModel"]:
        """Temporarily switch every Bayesian layer to `mode`: ``with bm.sampling("mean"): y = bm(x)``."""
        before = {name: layer.mode for name, layer in self.bayesian_layers()}
        self.set_mode(mode)
        try:
            yield self
        finally:
            for name, layer in self.bayesian_layers():
                layer.mode = before[name]

    # -- objective
    def prior_of(self, layer_name: str) -> Prior:
        return self.prior_by_key(self.assignment[layer_name])

    def prior_by_key(self, key: str) -> Prior:
        """The prior kept under `key` (a value of `assignment`)."""
        # `priors` is made from the constructor's dict of Prior instances
        return cast(Prior, self.priors[key])

    def kl(self) -> Tensor:
        """KL(q || p) summed over all Bayesian layers (an upper bound where a prior is implicit).

        An estimator that needs a weight sample scores the one the last ``"sample"`` forward drew, while
        it is still a draw from the current q (`BayesianLayer.take_weight_sample`), and else draws its
        own. A prior shared by several layers scores them in one call (`Prior.kl_layers`), and priors that
        declare the same batch key are scored in one pass (`Prior.kl_batch`), so they can batch their work.
        """
        layers_of: dict[str, tuple[list[Posterior], list[Tensor | None]]] = {}  # prior key -> its layers
        for name, layer in self.bayesian_layers():
            posteriors, weight_samples = layers_of.setdefault(self.assignment[name], ([], []))
            posteriors.append(layer.posterior)
            weight_samples.append(layer.take_weight_sample())
        terms = kl_of_priors([PriorLayers(self.prior_by_key(key), posteriors, weight_samples)
                              for key, (posteriors, weight_samples) in layers_of.items()])
        if not terms:
            return torch.zeros(())
        return torch.stack(terms).sum() if len(terms) > 1 else terms[0]

    def elbo_loss(self, nll: Tensor, n_train: int, kl_weight: float = 1.0) -> ELBO:
        """The negative ELBO ``n_train * nll + kl_weight * KL``.

        Args:
            nll: the data loss of the batch as a **mean per training case** (so ``n_train * nll`` equals
                the design's ``(N / B) * sum over the batch``).
            n_train: N, the number of training cases (of the whole dataset, across all processes).
            kl_weight: beta, the weight of the KL term (1 gives the true ELBO).
        Returns:
            `ELBO(loss, data, kl)`.
        """
        if n_train <= 0:
            raise ConfigError(f"n_train must be positive, got {n_train}")
        if not (math.isfinite(kl_weight) and kl_weight >= 0):
            raise ConfigError(f"kl_weight must be a finite number >= 0, got {kl_weight!r}")
        data = nll * n_train
        kl = self.kl().to(data.device)
        return ELBO(data + kl_weight * kl, data, kl)

    # -- prediction
    @torch.no_grad()
    def predict(self, x: Tensor, samples: int = 8, transform: Callable[[Tensor], Tensor] | None = None,
                uncertainty: str = "std", samples_per_forward: int = 1) -> Predictive:
        """Monte-Carlo prediction: the mean of `samples` forwards with weights sampled from q.

        Args:
            x: input batch.
            samples: number of weight samples (0 uses the posterior mean once; uncertainty is then 0).
            transform: applied to each output before averaging, e.g. ``lambda y: y.softmax(1)``; it must
                treat the rows of a batch independently.
            uncertainty: ``"std"`` (element-wise standard deviation over samples) or ``"entropy"``
                (predictive entropy over dim 1 of the mean, for class probabilities).
            samples_per_forward: weight samples that go through one forward together, as a batch S
                times as large (one grouped convolution per layer, `BayesianLayer.stacked_forward`);
                the activations need S times the memory. The network's other layers must treat the
                rows of a batch independently (true of instance, group and layer norms, and of batch
                norm in eval mode). 1 runs one forward per sample.
        """
        if uncertainty not in ("std", "entropy"):
            raise ConfigError(f"uncertainty must be 'std' or 'entropy', got {uncertainty!r}")
        if samples < 0:
            raise ConfigError(f"samples must be >= 0, got {samples}")
        if samples_per_forward < 1:
            raise ConfigError(f"samples_per_forward must be >= 1, got {samples_per_forward}")
        transform = transform or (lambda y: y)
        if samples == 0:
            with self.sampling("mean"):
                at_mean = transform(self(x))
            return Predictive(at_mean, torch.zeros_like(at_mean))
        mean: Tensor | None = None
        m2: Tensor | None = None
        done = 0
        with self.sampling("sample"):
            while done < samples:
                stack = min(samples_per_forward, samples - done)
                for y in self._stacked_outputs(x, stack, transform):  # Welford: no need to keep every sample
                    done += 1
                    if mean is None or m2 is None:
                        mean, m2 = y.clone(), torch.zeros_like(y)
                    else:
                        delta = y - mean
                        mean += delta / done
                        m2 += delta * (y - mean)
        assert mean is not None and m2 is not None  # samples >= 1 outputs went in
        if uncertainty == "std":
            return Predictive(mean, (m2 / max(samples - 1, 1)).sqrt())
        p = mean.clamp_min(1e-12)
        return Predictive(mean, -(p * p.log()).sum(dim=1))

    def _stacked_outputs(self, x: Tensor, stack: int, transform: Callable[[Tensor], Tensor]) -> list[Tensor]:
        """The transformed outputs of `stack` weight samples, from one forward."""
        if stack == 1:
            return [transform(self(x)).float()]
        layers = [layer for _, layer in self.bayesian_layers()]
        for layer in layers:
            layer.stacked_samples = stack
        try:
            y = transform(self(x.repeat_interleave(stack, 0))).float()
        finally:
            for layer in layers:
                layer.stacked_samples = 1
        return list(y.unflatten(0, (x.shape[0], stack)).unbind(1))

    # -- export and inspection
    def mean_model(self) -> nn.Module:
        """A plain deterministic copy of the network with every Bayesian layer at its posterior mean."""
        plain = copy.deepcopy(self.net)
        for name, _ in self.bayesian_layers():
            _replace_module(plain, name, _bayesian_layer(plain, name).to_deterministic())
        return plain

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per layer with a weight: name, type, shape, prior (or 'deterministic'), group."""
        group_of = {layer: g for g, layers in self.groups.items() for layer in layers}
        rows = []
        for name, module in self.net.named_modules():
            if isinstance(module, BayesianLayer):
                prior = self.prior_of(name)
                rows.append({"layer": name, "type": module.wrapped_type,
                             "shape": tuple(module.posterior.shape), "prior": prior.describe(),
                             "unit": prior.unit, "group": group_of.get(name, "")})
            elif isinstance(getattr(module, "weight", None), Tensor) and not any(
                    name.startswith(b + ".") for b in self.assignment):
                rows.append({"layer": name, "type": type(module).__name__,
                             "shape": tuple(module.weight.shape), "prior": "deterministic",
                             "unit": "", "group": group_of.get(name, "")})
        return rows

    def summary(self) -> str:
        """The layer table as aligned text (also what `print(bm)`'s caller usually wants)."""
        rows = self.layer_table()
        n_bayes = sum(1 for r in rows if r["prior"] != "deterministic")
        return (format_table(rows, ["layer", "type", "shape", "group", "prior"])
                + f"\n{n_bayes} Bayesian layer(s), {len(rows) - n_bayes} deterministic")

    # persistence lives in `bayesprior.checkpoints` (which imports this module, never the other way round)


def bayesianize(model: nn.Module, rules: Mapping[Any, PriorSpec] | Sequence[Rule], *,
                groups: Mapping[str, Sequence[str]] | None = None, log_variance_init: float = -10.0,
                mode: str = "lrt", strict: bool = True, init_from_prior: bool = False,
                posterior_std_ratio: float | None = None) -> BayesianModel:
    """Replace the layers selected by `rules` with `BayesianLayer`s, in place, and return the handle.

    Args:
        model: any ``nn.Module``; it is modified in place (wrap it before building the optimiser).
        rules: ``{selector: prior}`` or a list of `Rule`; see the module docstring.
        groups: named layer groups, ``{group: [module names]}``, for `by_group` selectors.
        log_variance_init: initial log-variance of every posterior.
        posterior_std_ratio: instead of `log_variance_init`, start each layer's posterior standard deviation at
            this fraction of the root mean square of its initial means. A fixed log-variance means a different
            signal-to-noise ratio for every weight scale: -10 (std 6.7e-3) is 10 % of He-initialised kernels
            of 16 channels but as large as kernels trained from a small initialisation, whose network then
            starts as noise.
        mode: initial forward mode of every Bayesian layer.
        strict: raise if a rule selects no layer, or selects a module that cannot be wrapped.
        init_from_prior: start each posterior mean at a sample of its prior (`Prior.sample`) instead of
            the module's current weight.
    Returns:
        A `BayesianModel` wrapping `model`.
    Raises:
        ConfigError, PriorMismatchError, PluginError: with the offending rule, layer or prior named.
    """
    if isinstance(model, BayesianModel):
        raise ConfigError("model is already a BayesianModel")
    if posterior_std_ratio is not None and not (math.isfinite(posterior_std_ratio) and posterior_std_ratio > 0):
        raise ConfigError(f"posterior_std_ratio must be a finite number > 0, got {posterior_std_ratio!r}")
    parsed = _as_rules(rules)
    layer_groups = _checked_groups(model, groups)
    chosen, hits = _chosen_layers(model, parsed, layer_groups, strict)
    priors, layer_key = _bound_priors(model, parsed, hits, chosen)
    # check every layer (and draw every initial mean) before touching the model, so that an error
    # leaves the caller's network exactly as it was rather than half wrapped
    initial_means: dict[str, Tensor] = {}
    for name in chosen:
        weight = _weight_of(model, name)
        priors[layer_key[name]].check_compatible(weight.shape, name)
        if init_from_prior:
            initial_means[name] = priors[layer_key[name]].sample(weight.shape)
    log_variances = ({name: _relative_log_variance(initial_means.get(name, _weight_of(model, name)), name,
                                                   posterior_std_ratio) for name in chosen}
                     if posterior_std_ratio is not None else {})
    assignment: dict[str, str] = {}
    for name in chosen:
        layer = BayesianLayer(model.get_submodule(name), log_variance_init=log_variance_init, mode=mode)
        with torch.no_grad():
            if name in initial_means:
                layer.posterior.loc.copy_(initial_means[name])
            if name in log_variances:
                layer.posterior.log_variance.fill_(log_variances[name])
        _replace_module(model, name, layer)
        assignment[name] = layer_key[name]
    return BayesianModel(model, priors, assignment, layer_groups)


def _checked_groups(model: nn.Module, groups: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """The layer groups as lists; `ConfigError` for a group that names a module the model does not have."""
    checked = {k: list(v) for k, v in (groups or {}).items()}
    known = {name for name, _ in model.named_modules()}
    for g, members in checked.items():
        missing = [m for m in members if m not in known]
        if missing:
            raise ConfigError(f"layer group {g!r} names modules the model does not have: {missing[:5]}")
    return checked


def _chosen_layers(model: nn.Module, rules: list[Rule], groups: dict[str, list[str]],
                   strict: bool) -> tuple[dict[str, int], list[int]]:
    """The layers to wrap, in network order, each with the index of the first rule that selects it, and how many
    layers each rule got. A module inside a chosen one is not chosen again. With `strict`, `ConfigError` for a rule
    that selects a layer with a weight that cannot be wrapped, or that selects none."""
    chosen: dict[str, int] = {}
    hits = [0] * len(rules)
    for name, module in model.named_modules():
        if not name or any(name.startswith(c + ".") for c in chosen):
            continue
        for i, rule in enumerate(rules):
            if not rule.select(name, module, groups):
                continue
            if not is_supported(module):
                if strict and getattr(module, "weight", None) is not None and not list(module.children()):
                    raise ConfigError(f"rule {rule.select} selects layer {name!r} of type "
                                      f"{type(module).__name__}, which cannot be made Bayesian")
                continue
            chosen[name] = i
            hits[i] += 1
            break
    if strict:
        for rule, n in zip(rules, hits, strict=True):
            if n == 0:
                raise ConfigError(f"rule {rule.select} selects no layer that can be made Bayesian")
    return chosen, hits


def _bound_priors(model: nn.Module, rules: list[Rule], hits: list[int],
                  chosen: dict[str, int]) -> tuple[dict[str, Prior], dict[str, str]]:
    """The priors by key, and each chosen layer's key: one prior per rule, bound to each of its layers
    (`Prior.bind`, in network order) before any layer is wrapped.

    A prior shared by its layers keeps the rule's key (``prior<k>``, in rule order, so that a saved model's
    keys come back when it is rebuilt rule by rule); a prior bound to one layer alone gets the next key, in
    network order. A Prior instance given to several rules stays one.
    """
    rule_priors = {i: _build_prior(rule.prior) for i, rule in enumerate(rules) if hits[i]}
    bound = {name: rule_priors[i].bind(name, _weight_of(model, name).detach()) for name, i in chosen.items()}
    for name, prior in bound.items():
        if not isinstance(prior, Prior):
            raise ConfigError(f"layer {name!r}: {type(rule_priors[chosen[name]]).__name__}.bind returned "
                              f"{type(prior).__name__}, not a Prior")
    priors: dict[str, Prior] = {}

    def key_of(prior: Prior) -> str:
        key = next((k for k, p in priors.items() if p is prior), None)
        if key is None:
            key = f"prior{len(priors)}"
            priors[key] = prior
        return key

    shared = {id(p) for p in bound.values()}
    for prior in rule_priors.values():
        if id(prior) in shared:
            key_of(prior)
    return priors, {name: key_of(prior) for name, prior in bound.items()}


def _relative_log_variance(means: Tensor, name: str, ratio: float) -> float:
    """The log-variance whose std is `ratio` x the RMS of a layer's initial means (the same signal-to-noise
    ratio at any weight scale)."""
    rms = float(means.detach().double().pow(2).mean().sqrt())
    if not (rms > 0 and math.isfinite(rms)):
        raise ConfigError(f"layer {name!r}: posterior_std_ratio needs initial weights of finite, non-zero scale "
                          f"(their RMS is {rms}); give log_variance_init instead")
    return 2 * math.log(ratio * rms)

