"""Content digests: of a file's bytes, and of a sequence of cases (what a run trained on).

A digest identifies content wherever it lies, so a file or dataset that moved still matches, and one
that changed in place does not.
"""
from __future__ import annotations

import hashlib
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
