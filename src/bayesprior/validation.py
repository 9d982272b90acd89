"""Type checks of settings read from files (an experiment's TOML, a prior's options), with messages that
name the key: ``target_training.max_epochs must be an integer, got 'ten'``.

A check is a small object that says what it accepts; `check_settings` applies a table of them to a
mapping and refuses unknown keys, so a typo is an error, not a silently ignored setting.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ConfigError


@dataclass(frozen=True)
class Check:
    """What a setting may be: ``kind`` is ``"int"``, ``"number"``, ``"bool"``, ``"str"``, ``"table"``, or
    ``"ints"``/``"numbers"``/``"strs"`` (lists); numbers may have bounds, strings a set of choices.

    Attributes:
        kind: the type (see above).
        minimum, maximum: inclusive bounds of numbers (and of list items).
        above: an exclusive lower bound.
        below: an exclusive upper bound.
        choices: the allowed strings.
        length: the length a list must have.
        optional: None is allowed.
    """

    kind: str
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    choices: Sequence[str] | None = None
    length: int | None = None
    optional: bool = False

    def __call__(self, value: Any, name: str) -> None:
        """Raise `ConfigError` naming `name` unless `value` is acceptable."""
        if value is None and self.optional:
            return
        if self.kind in ("ints", "numbers", "strs"):
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{name} must be a list of {_WORDS[self.kind[:-1]]}s, got {value!r}")
            if self.length is not None and len(value) != self.length:
                raise ConfigError(f"{name} must list {self.length} values, got {value!r}")
            item = Check(self.kind[:-1], self.minimum, self.maximum, self.above, self.below, self.choices)
            for index, element in enumerate(value):
                item(element, f"{name}[{index}]")
            return
        if not _is(value, self.kind):
            raise ConfigError(f"{name} must be {_article(self.kind)}, got {value!r}")
        if self.kind in ("int", "number"):
            self._check_bounds(value, name)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name} must be one of {list(self.choices)}, got {value!r}")

    def _check_bounds(self, value: float, name: str) -> None:
        if not math.isfinite(value):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        for bound, ok, word in ((self.minimum, lambda b: value >= b, ">="), (self.maximum, lambda b: value <= b, "<="),
                                (self.above, lambda b: value > b, ">"), (self.below, lambda b: value < b, "<")):
            if bound is not None and not ok(bound):
                raise ConfigError(f"{name} must be {word} {bound:g}, got {value!r}")


_WORDS = {"int": "integer", "number": "number", "bool": "boolean (true or false)", "str": "string",
          "table": "table"}


def _article(kind: str) -> str:
    word = _WORDS[kind]
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _is(value: Any, kind: str) -> bool:
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "table":
        return isinstance(value, Mapping)
    raise ValueError(f"unknown kind {kind!r}")  # a bug in a table of checks, not bad input


def check_settings(settings: Mapping[str, Any], checks: Mapping[str, Check], where: str,
                   allow_unknown: bool = False) -> None:
    """Apply `checks` to `settings`; names in messages are ``where.key``.

    Raises:
        ConfigError: an unknown key (unless `allow_unknown`), or a value its check refuses.
    """
    if not allow_unknown:
        unknown = sorted(set(settings) - set(checks))
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in {where} (known: {sorted(checks)})")
    for key, value in settings.items():
        if key in checks:
            checks[key](value, f"{where}.{key}")


def positive_finite(value: Any, what: str) -> float:
    """`value` as a float if it is a finite number > 0 (not a bool); else a ConfigError naming `what` (a prior's
    option, e.g. ``"swag prior: scale"``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)
