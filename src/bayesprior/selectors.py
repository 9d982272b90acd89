"""Selectors: which modules of a network a `bayesianize` rule picks.

A selector is called as ``selector(name, module, groups) -> bool``. Pick modules by qualified-name glob
(`by_name`), type (`by_type`), kernel size (`by_kernel_size`), named layer group (`by_group`) or an
explicit list of names (`by_layer_names`); `as_selector` turns the shorthands a rule may use (a glob
string, ``"group:NAME"``, a module type) into one.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from torch import nn

from .errors import ConfigError


@dataclass(frozen=True)
class Selector:
    """Picks modules of a network. Call with (name, module, groups) -> bool."""

    description: str
    predicate: Callable[[str, nn.Module, Mapping[str, Sequence[str]]], bool]

    def __call__(self, name: str, module: nn.Module, groups: Mapping[str, Sequence[str]]) -> bool:
        return self.predicate(name, module, groups)

    def __str__(self) -> str:
        return self.description


def by_name(pattern: str) -> Selector:
    """Modules whose qualified name matches the glob `pattern` (``"down*.conv*"``)."""
    return Selector(f"name {pattern!r}", lambda name, m, g: fnmatch.fnmatchcase(name, pattern))


def by_type(*types: type[nn.Module]) -> Selector:
    """Modules that are instances of any of `types`."""
    label = "|".join(t.__name__ for t in types)
    return Selector(f"type {label}", lambda name, m, g: isinstance(m, types))


def by_kernel_size(*size: int) -> Selector:
    """Convolutions whose kernel size is `size` (``by_kernel_size(3)`` matches 3, 3x3 and 3x3x3)."""
    wanted = tuple(size)

    def predicate(name: str, m: nn.Module, g: Mapping) -> bool:
        k = getattr(m, "kernel_size", None)
        if k is None:
            return False
        k = tuple(k) if isinstance(k, (tuple, list)) else (k,)
        return k == wanted or (len(wanted) == 1 and all(v == wanted[0] for v in k))

    return Selector(f"kernel {'x'.join(map(str, wanted))}", predicate)


def by_group(group: str) -> Selector:
    """Modules listed in the named group `group` (from `groups=` given to `bayesianize`)."""

    def predicate(name: str, m: nn.Module, groups: Mapping[str, Sequence[str]]) -> bool:
        if group not in groups:
            raise ConfigError(f"unknown layer group {group!r} (known: {', '.join(sorted(groups)) or 'none'})")
        return name in groups[group]

    return Selector(f"group {group!r}", predicate)


def as_selector(key: Any) -> Selector:
    """Accept a `Selector`, a name glob string, a module type or a tuple of types."""
    if isinstance(key, Selector):
        return key
    if isinstance(key, str):
        if key.startswith("group:"):
            return by_group(key[len("group:"):])
        return by_name(key)
    if isinstance(key, type) and issubclass(key, nn.Module):
        return by_type(key)
    if isinstance(key, tuple) and key and all(isinstance(t, type) for t in key):
        return by_type(*key)
    raise ConfigError(f"cannot use {key!r} as a layer selector (use a name glob, a module type, "
                      "by_kernel_size(...) or by_group(...))")


def by_layer_names(names: Iterable[str], description: str = "listed layers") -> Selector:
    """Modules whose qualified name is one of `names` (e.g. the layers a saved model assigned to one prior)."""
    wanted = frozenset(names)
    return Selector(description, lambda name, m, g: name in wanted)
