"""Plugins: discovery by entry point, and the registries they fill (the hooks are in `bayesprior.hookspecs`).

A plugin is any importable module (or object) holding functions marked with `@bayesprior.hookimpl`.
Installed packages announce theirs through the entry-point group ``bayesprior``::

    [project.entry-points.bayesprior]
    laplace = "bayesprior_laplace"

The built-in plugins (Gaussian, log-uniform, DWP priors, the 3D U-Net, the NIfTI dataset layouts) are
found the same way. Every hook takes a ``register`` callback, so one plugin can register several things
and the core keeps the registries: it refuses duplicate names and remembers which plugin (and which
distribution) registered what. A plugin that fails to import, or whose hook raises, is reported by name
(``bayesprior plugins``, `plugin_report()`) and never stops the others from loading.

Set ``BAYESPRIOR_DISABLE_PLUGINS=name1,name2`` to skip entry points by name.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import os
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pluggy

from .errors import ConfigError, PluginError
from .hookspecs import PROJECT, HookSpecs, hookimpl  # noqa: F401  (hookimpl: plugins may import it from here)


@dataclass(frozen=True)
class Entry:
    """One registered thing: its name, the callable, and where it came from."""

    name: str
    obj: Callable[..., Any]
    description: str
    plugin: str
    distribution: str | None
    extras: Mapping[str, Any] = field(default_factory=dict)


class Registry:
    """Name -> `Entry` for one kind of thing (priors, architectures, dataset layouts)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry) -> None:
        if entry.name in self._entries:
            first = self._entries[entry.name]
            raise PluginError(
                f"{self.kind} {entry.name!r} is registered by both plugin {first.plugin!r} and "
                f"plugin {entry.plugin!r}; keeping the one from {first.plugin!r}"
            )
        self._entries[entry.name] = entry

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(f"no {self.kind} named {name!r} is registered (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        return [self._entries[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._entries


@dataclass
class PluginInfo:
    """What `bayesprior plugins` shows about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


# registry kind -> (hook name, extra keyword arguments its register callback accepts)
_REGISTRY_HOOKS = {
    "prior": ("register_priors", ("fit", "per_group", "check_fit_options", "check_options", "centred_at_source",
                                  "source_file", "source_setting", "label")),
    "method": ("register_methods", ("default_weight", "label")),
    "architecture": ("register_architectures", ("groups", "finetune_layers", "min_input_size")),
    "dataset layout": ("register_dataset_layouts", ("detect", "files", "label_files")),
}


class _State:
    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(HookSpecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.registries: dict[str, Registry] | None = None


_state: _State | None = None


def _disabled_names() -> set[str]:
    raw = os.environ.get("BAYESPRIOR_DISABLE_PLUGINS", "")
    return {n.strip() for n in raw.split(",") if n.strip()}


def _short_error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def _report_broken(info: PluginInfo, exc: BaseException, what: str) -> None:
    info.error = f"{what}: {_short_error(exc)}"
    warnings.warn(f"bayesprior plugin {info.name!r} {what}: {_short_error(exc)}", RuntimeWarning, stacklevel=3)


def _load_entry_points(state: _State) -> None:
    disabled = _disabled_names()
    # built-in plugins first, so that on a duplicate name the built-in keeps it and the newcomer is reported
    found = sorted(importlib.metadata.entry_points(group=PROJECT),
                   key=lambda ep: getattr(getattr(ep, "dist", None), "name", None) != PROJECT)
    for ep in found:
        if ep.name in disabled or ep.name in state.plugins:
            continue
        dist = getattr(ep, "dist", None)
        info = PluginInfo(ep.name, dist.name if dist else None, dist.version if dist else None)
        state.plugins[ep.name] = info
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not stop the others
            _report_broken(info, exc, "failed to import")
            continue
        _register_object(state, module, info)


def _register_object(state: _State, obj: Any, info: PluginInfo) -> None:
    try:
        state.pm.register(obj, name=info.name)
        state.pm.check_pending()
    except Exception as exc:
        if state.pm.is_registered(obj):
            state.pm.unregister(obj)
        _report_broken(info, exc, "has invalid hooks")


def _register_callback(kind: str, extra_keys: tuple[str, ...], info: PluginInfo,
                       staged: list[Entry]) -> Callable[..., None]:
    """The `register` a plugin's hook implementation is called with: it checks each entry and stages it
    in `staged`, attributed to `info`'s plugin. A function of its own, so the callback keeps this kind and
    plugin even if a plugin keeps it and calls it after its hook returned."""

    def register(name: str, obj: Callable[..., Any], description: str = "", **extras: Any) -> None:
        unknown = set(extras) - set(extra_keys)
        if unknown:
            raise TypeError(f"register() got unexpected arguments {sorted(unknown)} for a {kind}")
        if not isinstance(name, str) or not name:
            raise TypeError(f"{kind} name must be a non-empty string, got {name!r}")
        staged.append(Entry(name, obj, description, info.name, info.distribution, dict(extras)))

    return register


def _build_registries(state: _State) -> dict[str, Registry]:
    registries = {kind: Registry(kind) for kind in _REGISTRY_HOOKS}
    for kind, (hook_name, extra_keys) in _REGISTRY_HOOKS.items():
        hook = getattr(state.pm.hook, hook_name)
        # call each implementation on its own so every entry is attributed to the plugin that made it;
        # in registration order (not pluggy's LIFO call order), so the first plugin to claim a name keeps it
        for impl in hook.get_hookimpls():
            info = state.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
            staged: list[Entry] = []
            try:
                impl.function(register=_register_callback(kind, extra_keys, info, staged))
            except Exception as exc:
                _report_broken(info, exc, f"raised in {hook_name}")
                continue
            for entry in staged:
                try:
                    registries[kind].add(entry)
                except PluginError as exc:
                    warnings.warn(str(exc), RuntimeWarning, stacklevel=2)
                    info.error = str(exc)
                    continue
                info.registered.setdefault(kind, []).append(entry.name)
    return registries


def _get_state() -> _State:
    global _state
    if _state is None:
        _state = _State()
        _load_entry_points(_state)
    return _state


def registries() -> dict[str, Registry]:
    """All registries, built on first use by calling every plugin's registration hooks."""
    state = _get_state()
    if state.registries is None:
        state.registries = _build_registries(state)
    return state.registries


def prior_registry() -> Registry:
    return registries()["prior"]


def architecture_registry() -> Registry:
    return registries()["architecture"]


def dataset_layout_registry() -> Registry:
    return registries()["dataset layout"]


def plugin_report() -> list[PluginInfo]:
    """Every plugin seen, with what it registered and any error, sorted by name."""
    registries()
    return sorted(_get_state().plugins.values(), key=lambda p: p.name)


def register_plugin(obj: Any, name: str) -> None:
    """Register an in-process plugin (an object or module with hook implementations) under `name`.

    Useful in tests and notebooks; the registries are rebuilt on next use.
    """
    state = _get_state()
    info = PluginInfo(name)
    state.plugins[name] = info
    _register_object(state, obj, info)
    state.registries = None


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered by `register_plugin` (or an entry point) by name."""
    state = _get_state()
    plugin = state.pm.get_plugin(name)
    if plugin is not None:
        state.pm.unregister(plugin)
    state.plugins.pop(name, None)
    state.registries = None


def reset_plugins() -> None:
    """Forget everything loaded; the next use loads the entry points again."""
    global _state
    _state = None


def add_plugin_commands(cli: Any) -> None:
    """Let every plugin add its sub-commands to the click group `cli` (broken ones are reported)."""
    state = _get_state()
    for impl in state.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            info = state.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
            _report_broken(info, exc, "raised in register_commands")


def parse_spec(spec: str | Mapping[str, Any] | tuple[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Normalise a registry spec: ``"name"``, ``("name", {config})`` or ``{"name": ..., **config}``."""
    if isinstance(spec, str):
        return spec, {}
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str):
        return spec[0], dict(spec[1])
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        config = dict(spec.get("config", {}))
        config.update({k: v for k, v in spec.items() if k not in ("name", "config")})
        return spec["name"], config
    raise TypeError(f"a spec is 'name', ('name', {{config}}) or {{'name': ..., **config}}; got {spec!r}")


def create_prior(spec: str | Mapping[str, Any] | tuple[str, Mapping[str, Any]]):
    """Build a prior from the registry: `create_prior("gaussian")`, `create_prior(("gaussian", {"scale": 0.1}))`."""
    name, config = parse_spec(spec)
    factory = prior_registry().get(name).obj
    check_arguments(factory, config, f"prior {name!r}")
    prior = factory(**config)
    prior.registry_name = name
    return prior


def check_arguments(factory: Callable[..., Any], config: Mapping[str, Any], what: str) -> None:
    # bind first, so a misspelt option is our ConfigError naming it, while a TypeError raised inside a
    # factory still surfaces as the bug it is
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # e.g. a builtin without a signature: let the call itself complain
    try:
        signature.bind(**config)
    except TypeError as exc:
        accepted = ", ".join(n for n in signature.parameters if n != "self") or "none"
        raise ConfigError(f"{what}: {exc} (accepted options: {accepted})") from None


def build_architecture(name: str, **config: Any):
    """Build a registered network: `build_architecture("unet3d", in_channels=1)`."""
    builder = architecture_registry().get(name).obj
    check_arguments(builder, config, f"architecture {name!r}")
    model = builder(**config)
    model.architecture_spec = {"name": name, "config": dict(config)}
    return model


def architecture_groups(name: str, model: Any) -> dict[str, list[str]]:
    """The named layer groups an architecture plugin declares for a model it built ({} if none)."""
    groups_fn = architecture_registry().get(name).extras.get("groups")
    return dict(groups_fn(model)) if groups_fn is not None else {}


def prior_fitter(name: str) -> Callable[..., Any] | None:
    """The ``fit(bank_path, out_path, **options)`` of a prior learned from kernels, or None."""
    return prior_registry().get(name).extras.get("fit")


def check_prior_fit_options(name: str, options: Mapping[str, Any]) -> None:
    """Check the options of the prior `name`'s ``fit`` before any work, if its plugin says how.

    Raises:
        ConfigError: an option the prior's ``check_fit_options`` refuses (the message names it).
    """
    check = prior_registry().get(name).extras.get("check_fit_options")
    if check is not None:
        check(dict(options))


def method_registry() -> Registry:
    """Training methods that plugins register beside the priors (e.g. a penalty such as L2-SP)."""
    return registries()["method"]


def prior_centred_at_source(name: str) -> bool:
    """Whether the prior `name` is centred at the network it wraps (so its method needs a source model)."""
    return bool(prior_registry().get(name).extras.get("centred_at_source"))


def prior_source_file(name: str) -> str | None:
    """The file name, beside a source run's ``model.pt``, that the prior `name` takes as its ``path``
    (e.g. ``swag.pt``, written by ``train --swag-epochs``); None if its file is not the source run's."""
    return prior_registry().get(name).extras.get("source_file")


def prior_source_setting(name: str) -> str | None:
    """The training setting that makes a source run write the prior `name`'s `prior_source_file` (e.g.
    ``swag_epochs``); None if no setting of this library writes it (it then comes with a given source zoo)."""
    return prior_registry().get(name).extras.get("source_setting")


def registered_label(name: str) -> str | None:
    """The name a prior or a training method registered for tables and figures (``label="UNet-DWP"``), if any."""
    for registry in (prior_registry(), method_registry()):
        if name in registry:
            label = registry.get(name).extras.get("label")
            return str(label) if label else None
    return None


def prior_per_group(name: str) -> bool:
    """Whether the prior `name` takes one instance per layer group (its factory then gets ``group``)."""
    return bool(prior_registry().get(name).extras.get("per_group"))


def architecture_min_input_size(name: str) -> tuple[int, ...] | None:
    """The smallest spatial input size, per axis, that the architecture `name` accepts (None if it declares none)."""
    size = architecture_registry().get(name).extras.get("min_input_size")
    if size is None:
        return None
    return tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else (int(size),) * 3


def architecture_finetune_layers(name: str) -> list[str]:
    """Module-name globs an architecture keeps trainable in frozen fine-tuning ([] if it declares none)."""
    return list(architecture_registry().get(name).extras.get("finetune_layers") or [])
