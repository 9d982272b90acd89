"""The validation split: which cases a training run holds out to monitor; and split files.

`bayesprior train` and the experiment's source stage both call `validation_split`, so one fraction and
one seed hold out the same cases in either. A split file (`read_split_file`, ``train --split-file``) names
the train, validation and test cases by id instead.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

import numpy as np

from ..errors import ConfigError, DataError

T = TypeVar("T")


def check_validation_fraction(fraction: float) -> float:
    """`fraction` if it is in [0, 1), else `ConfigError` naming it."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"the validation fraction must be in [0, 1), got {fraction}")
    return fraction


def validation_split(cases: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Split `cases` into (training cases, validation cases).

    ``round(fraction * len(cases))`` cases are held out: the first of a permutation drawn from
    ``numpy.random.default_rng(seed)``; the training cases keep the permuted order of the rest.

    Raises:
        ConfigError: a fraction outside [0, 1), or one that holds out no case, or every case, of these.
    """
    check_validation_fraction(fraction)
    order = np.random.default_rng(seed).permutation(len(cases))
    n_val = int(round(fraction * len(cases)))
    if fraction > 0 and len(cases) == 1:  # no fraction splits one case, so do not suggest one
        raise ConfigError(f"a validation fraction of {fraction:g} cannot split a single case into training and "
                          "validation; give 0 to monitor the training loss")
    if fraction > 0 and n_val == 0:
        raise ConfigError(f"a validation fraction of {fraction:g} holds out no case of {len(cases)} (it rounds to "
                          f"0); give more than {0.5 / max(len(cases), 1):.3g}, or 0 to monitor the training loss")
    if cases and n_val >= len(cases):
        raise ConfigError(f"a validation fraction of {fraction:g} holds out all {len(cases)} case(s), leaving "
                          "none to train on")
    return [cases[i] for i in order[n_val:]], [cases[i] for i in order[:n_val]]


SPLIT_KEYS = ("train", "val", "test")
#: the largest split file read, in bytes: room for millions of case ids (10⁶ ids of 60 characters); a larger
#: file is refused before it is parsed
MAX_SPLIT_FILE_BYTES = 64 * 2**20


def repeated_ids(ids: Iterable[str]) -> list[str]:
    """The ids that occur more than once in `ids`, sorted; linear in their number."""
    return sorted(i for i, count in Counter(ids).items() if count > 1)


@dataclass(frozen=True)
class CaseSplit:
    """Which cases train, which monitor training (validation) and which are held out for testing, by case id."""

    train: tuple[str, ...]
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()

    def all_ids(self) -> list[str]:
        """Every case id the split names."""
        return [*self.train, *self.val, *self.test]


def read_split_file(path: str | Path) -> CaseSplit:
    """Read a split file: a JSON object with case-id lists ``train`` (needed), ``val`` and ``test``.

    Every check is linear in the number of ids, and a file is read only up to `MAX_SPLIT_FILE_BYTES`.

    Raises:
        DataError (naming the file): larger than `MAX_SPLIT_FILE_BYTES`, not JSON, not an object, unknown keys,
            no ``train`` list, a list that is not of strings, a case listed twice, or one case in two lists.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPLIT_FILE_BYTES:
            raise DataError(path, f"split file is {size:,} bytes, more than the {MAX_SPLIT_FILE_BYTES:,} a split file "
                                  "may have (bayesprior.training.splits.MAX_SPLIT_FILE_BYTES)")
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"split file cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"split file is not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(path, f"split file must hold a JSON object with lists {list(SPLIT_KEYS)}, "
                              f"got a JSON {type(raw).__name__}")
    unknown = sorted(set(raw) - set(SPLIT_KEYS))
    if unknown:
        raise DataError(path, f"split file has unknown key(s) {unknown}; it may hold {list(SPLIT_KEYS)}")
    if not raw.get("train"):
        raise DataError(path, "split file lists no 'train' cases")
    lists = {}
    for key in SPLIT_KEYS:
        ids = raw.get(key, [])
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise DataError(path, f"split file: {key!r} must be a list of case ids (strings), got {ids!r}")
        twice = repeated_ids(ids)
        if twice:
            raise DataError(path, f"split file lists case(s) {twice[:5]} twice in {key!r}")
        lists[key] = tuple(ids)
    for i, first in enumerate(SPLIT_KEYS):
        for second in SPLIT_KEYS[i + 1:]:
            shared = sorted(set(lists[first]) & set(lists[second]))
            if shared:
                raise DataError(path, f"split file puts case(s) {shared[:5]} in both {first!r} and {second!r}")
    return CaseSplit(**lists)


def check_known_cases(ids: Sequence[str], known: Sequence[str], where: str | Path) -> None:
    """`DataError` naming `where` (the split file, or an option) if an id of `ids` is not among `known`."""
    unknown = sorted(set(ids) - set(known))
    if unknown:
        raise DataError(where, f"names case(s) the dataset does not have: {', '.join(map(repr, unknown[:5]))}"
                               f"{' ...' if len(unknown) > 5 else ''}")
