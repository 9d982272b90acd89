"""Content digests: of a file's bytes, of a sequence of cases (what a run trained on), and of settings.

A digest identifies content wherever it lies, so a file or dataset that moved still matches, and one
that changed in place does not.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cases_sha256(cases: Iterable[Any]) -> str:
    """Hex SHA-256 of cases in order: each one's id, and its image's and label's shape, type and values.

    Cases are objects with ``.case_id``, ``.image`` and ``.label`` (None allowed).
    """
    digest = hashlib.sha256()
    for case in cases:
        digest.update(f"case {case.case_id}\n".encode())
        for array in (case.image, case.label):
            if array is None:
                digest.update(b"none\n")
                continue
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str} {array.shape}\n".encode())
            digest.update(array.data)
    return digest.hexdigest()


def settings_sha256(settings: Any) -> str:
    """Hex SHA-256 of JSON-like settings (dicts, lists, numbers, strings), independent of key order."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()


def settings_differences(before: Any, now: Any, prefix: str = "") -> list[str]:
    """What changed between two JSON-like settings, one ``key old -> new`` per changed leaf (dotted keys)."""
    before, now = json.loads(json.dumps(before, default=_plain)), json.loads(json.dumps(now, default=_plain))
    if isinstance(before, dict) and isinstance(now, dict):
        out = []
        for key in sorted(set(before) | set(now)):
            out += settings_differences(before.get(key), now.get(key), f"{prefix}{key}.")
        return out
    if before == now:
        return []
    return [f"{prefix.rstrip('.') or 'value'} {_short(before)} -> {_short(now)}"]


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a setting")


def _short(value: Any) -> str:
    text = json.dumps(value)
    if isinstance(value, str) and len(value) == 64:  # a digest: its head is enough to tell two apart
        return value[:12]
    return text if len(text) <= 40 else text[:37] + "..."
