"""The validation split: which cases a training run holds out to monitor.

`bayesprior train` and the experiment's source stage both call `validation_split`, so one fraction and
one seed hold out the same cases in either.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

from ..errors import ConfigError

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
    if fraction > 0 and n_val == 0:
        raise ConfigError(f"a validation fraction of {fraction:g} holds out no case of {len(cases)} (it rounds to "
                          f"0); give more than {0.5 / max(len(cases), 1):.3g}, or 0 to monitor the training loss")
    if cases and n_val >= len(cases):
        raise ConfigError(f"a validation fraction of {fraction:g} holds out all {len(cases)} case(s), leaving "
                          "none to train on")
    return [cases[i] for i in order[n_val:]], [cases[i] for i in order[:n_val]]
