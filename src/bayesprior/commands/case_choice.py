"""Which cases a command works on: ``--cases ID,...`` and ``--split-file F`` (with ``--subset`` for `predict`
and `evaluate`), read the same way by `train`, `predict` and `evaluate`.

A split file is the JSON `bayesprior.training.splits.read_split_file` reads (lists ``train``, ``val``,
``test``). `train` trains on its ``train`` list and monitors on ``val``; `predict` and `evaluate` take one list,
``--subset`` (``test`` by default), so that a headline score never mixes in the cases a model was trained or
validated on. ``--cases`` alone names the cases; with ``--split-file`` it picks some of the chosen list.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import click

from ..training.splits import SPLIT_KEYS, read_split_file, repeated_ids

DEFAULT_SUBSET = "test"


def parse_case_list(text: str, option: str = "--cases") -> tuple[str, ...]:
    """``"a,b, c"`` -> ``("a", "b", "c")``. Raises `click.UsageError` naming `option` for no id or an id twice."""
    ids = [c.strip() for c in text.split(",") if c.strip()]
    if not ids:
        raise click.UsageError(f"{option} {text!r} names no case id")
    twice = repeated_ids(ids)
    if twice:
        raise click.UsageError(f"{option} lists {', '.join(twice[:5])}{' ...' if len(twice) > 5 else ''} twice")
    return tuple(ids)


@dataclass(frozen=True)
class CaseChoice:
    """The cases `--cases`/`--split-file` chose, by id, and what chose them.

    Attributes:
        ids: the case ids, in the order given.
        split_file: the split file that chose them (None: `--cases` alone).
        subset: the list of the split file they come from (``test``, ``val``, ``train``).
        by_id: `--cases` named them (among the subset, with a split file).
    """

    ids: tuple[str, ...]
    split_file: Path | None = None
    subset: str | None = None
    by_id: bool = True

    def describe(self) -> str:
        """``"the 'test' cases of split.json"``, ``"--cases among the 'test' cases of split.json"`` or ``"--cases"``."""
        if self.split_file is None:
            return "--cases"
        listed = f"the {self.subset!r} cases of {self.split_file}"
        return f"--cases among {listed}" if self.by_id else listed

    def record(self) -> dict[str, Any]:
        """What a summary records: the split file (absolute), its list, and the case ids."""
        return {"split_file": None if self.split_file is None else str(self.split_file.resolve()),
                "subset": self.subset, "chosen_by": self.describe(), "cases": list(self.ids)}


def chosen_cases(case_list: str | None, split_file: Path | None, subset: str | None) -> CaseChoice | None:
    """The cases ``--cases``, ``--split-file`` and ``--subset`` choose; None for every case.

    Raises:
        click.UsageError: ``--subset`` without ``--split-file``, a subset the file leaves empty, a bad
            ``--cases`` list, or ``--cases`` naming a case outside the subset.
        DataError: a split file that cannot be read (`read_split_file`).
    """
    if split_file is None:
        if subset is not None:
            raise click.UsageError("--subset has no effect without --split-file; leave it out")
        return None if case_list is None else CaseChoice(parse_case_list(case_list))
    subset = subset or DEFAULT_SUBSET
    listed = getattr(read_split_file(split_file), subset)
    if not listed:
        raise click.UsageError(f"--split-file {split_file} lists no {subset!r} cases (--subset {subset})")
    if case_list is None:
        return CaseChoice(tuple(listed), split_file, subset, by_id=False)
    ids = parse_case_list(case_list)
    allowed = set(listed)
    outside = [i for i in ids if i not in allowed]
    if outside:
        raise click.UsageError(f"--cases {','.join(outside[:5])}: not in the {subset!r} list of {split_file}")
    return CaseChoice(ids, split_file, subset)


def case_choice_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--split-file``, ``--subset`` and ``--cases`` to a command; it gets ``cases``: a `CaseChoice` or None."""

    @functools.wraps(command)
    def wrapper(*args: Any, split_file: Path | None, subset: str | None, case_list: str | None,
                **kwargs: Any) -> Any:
        return command(*args, cases=chosen_cases(case_list, split_file, subset), **kwargs)

    options = [
        click.option("--split-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="JSON with case-id lists 'train', 'val', 'test' (as train --split-file): only the cases "
                          "of one list (--subset)."),
        click.option("--subset", type=click.Choice(SPLIT_KEYS), default=None,
                     help=f"The list of --split-file to use [default: {DEFAULT_SUBSET}]."),
        click.option("--cases", "case_list", default=None,
                     help="Only these cases: comma-separated case ids (with --split-file, some of its list)."),
    ]
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
