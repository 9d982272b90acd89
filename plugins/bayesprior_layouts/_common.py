"""Small helpers shared by the layout readers."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from bayesprior.errors import DataError


def read_dataset_json(folder: Path, required: Iterable[str]) -> dict[str, Any]:
    """Parse `folder/dataset.json` and check that it has the `required` keys."""
    path = folder / "dataset.json"
    if not path.is_file():
        raise DataError(path, "dataset.json is missing")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(path, f"not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DataError(path, "must hold a JSON object")
    missing = [key for key in required if key not in meta]
    if missing:
        raise DataError(path, f"missing keys {missing}")
    return meta


def try_dataset_json(folder: Path) -> dict[str, Any] | None:
    """dataset.json as a dict, or None if absent or unreadable (for layout detection)."""
    try:
        meta = json.loads((folder / "dataset.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def declared_label_values(labels: Any, path: Path) -> set[int]:
    """Every integer label value a dataset.json `labels` entry declares (name->value, value->name, or regions)."""
    if not isinstance(labels, dict) or not labels:
        raise DataError(path, "'labels' must be a non-empty mapping")
    values: set[int] = set()
    for key, value in labels.items():
        candidates = value if isinstance(value, list) else [value]
        for candidate in candidates:
            if isinstance(candidate, int) and not isinstance(candidate, bool):
                values.add(candidate)
            elif isinstance(candidate, str) and str(key).lstrip("-").isdigit():
                values.add(int(key))  # MSD style: {"0": "background"}
            else:
                raise DataError(path, f"'labels' entry {key!r}: {value!r} is not a label value")
    return values
