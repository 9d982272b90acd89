"""The runs of an experiment: splits x train sizes x methods, sharding, and resumable results.

Each run writes its result as one JSON file, atomically, with the settings that made it (training
settings, input files' and data digests) and their digest; a run whose result exists with the same
settings is skipped, so a killed experiment restarts where it stopped and every run appears exactly once.
A result made with other settings is never taken for the run asked for (see `ResultStore.changes`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import atomic_write_json
from ..errors import ConfigError, DataError
from ..hashing import settings_differences, settings_sha256
from .config import ExperimentConfig


@dataclass(frozen=True)
class RunSpec:
    split: int
    train_size: int
    method: str

    @property
    def run_id(self) -> str:
        return f"split{self.split}_n{self.train_size}_{self.method}"


@dataclass(frozen=True)
class Split:
    """One train/test split of the target cases: a fixed test set and an ordered pool to draw training cases from.

    Training subsets are prefixes of `train_pool`, so the 5 cases of a split are among its 10, 15 and 20.
    `schedule` (``protocol.schedule_cases``) are cases set aside from the end of the pool: every run of the split
    steers its learning-rate schedule by their loss, never trains on them and is never scored on them.
    """

    index: int
    seed: int
    test: tuple[str, ...]
    train_pool: tuple[str, ...]
    schedule: tuple[str, ...] = ()

    def train_cases(self, n: int) -> tuple[str, ...]:
        return self.train_pool[:n]

    def unused_pool(self, n: int) -> tuple[str, ...]:
        """The pool cases a run on `n` training cases does not train on: its validation set."""
        return self.train_pool[n:]


def make_splits(case_ids: Sequence[str], config: ExperimentConfig) -> list[Split]:
    """Seeded splits (seed first_split_seed + i): a random test set of test_size, the rest shuffled as the pool.

    With ``protocol.test_cases`` every split tests on those cases and shuffles the others (or
    ``protocol.train_cases``) as its pool. Raises ConfigError naming the key (or the split file) of a case the
    data lack, then of a list too short for the train sizes.
    """
    if config.test_cases or config.train_cases:
        return _listed_splits(case_ids, config)
    ids = sorted(case_ids)
    need = config.test_size + max(config.train_sizes) + config.schedule_cases + _validated(config)
    if len(ids) < need:
        raise ConfigError(f"the target dataset has {len(ids)} cases; protocol.test_size {config.test_size} + the "
                          f"largest of protocol.train_sizes {max(config.train_sizes)}{_extra_cases(config)} needs {need}")
    splits = []
    for i in range(config.splits):
        seed = config.first_split_seed + i
        order = np.random.default_rng(seed).permutation(len(ids))
        test = tuple(sorted(ids[j] for j in order[: config.test_size]))
        splits.append(_split(i, seed, test, tuple(ids[j] for j in order[config.test_size:]), config))
    return splits


def _validated(config: ExperimentConfig) -> int:
    """Pool cases a split needs beyond its training and schedule cases: one to score on with score_on
    'validation' (the pool cases the largest run does not train on)."""
    return int(config.score_on == "validation")


def _extra_cases(config: ExperimentConfig) -> str:
    """The pool cases beyond training that a protocol asks for, as a message names them."""
    schedule = f" + protocol.schedule_cases {config.schedule_cases}" if config.schedule_cases else ""
    return schedule + (" + 1 to score on (protocol.score_on = 'validation')" if _validated(config) else "")


def _split(index: int, seed: int, test: tuple[str, ...], pool: tuple[str, ...], config: ExperimentConfig) -> Split:
    # the schedule cases come off the end of the pool, so training prefixes are the same with or without them
    cut = len(pool) - config.schedule_cases
    return Split(index, seed, test, pool[:cut], pool[cut:])


def _list_name(config: ExperimentConfig, key: str) -> str:
    """Where a case list came from, as the user wrote it: ``protocol.test_cases``, or the split file's list."""
    if config.split_file is not None:
        return f"protocol.split_file {config.split_file} ({'test' if key == 'test_cases' else 'train'} list)"
    return f"protocol.{key}"


def _listed_splits(case_ids: Sequence[str], config: ExperimentConfig) -> list[Split]:
    known = set(case_ids)
    for key in ("test_cases", "train_cases"):
        missing = [i for i in getattr(config, key) if i not in known]
        if missing:
            raise ConfigError(f"{_list_name(config, key)}: {len(missing)} case(s) not in the target dataset: "
                              f"{missing[:5]} (it has {sorted(known)[:3]}...)")
    if config.test_cases:
        test = tuple(sorted(config.test_cases))
    else:  # a random test set of test_size from the cases not listed for training
        rest = sorted(known - set(config.train_cases))
        if len(rest) < config.test_size:
            raise ConfigError(f"protocol.train_cases leaves {len(rest)} cases to test on; test_size is "
                              f"{config.test_size}")
        order = np.random.default_rng(config.first_split_seed).permutation(len(rest))
        test = tuple(sorted(rest[j] for j in order[: config.test_size]))
    pool = sorted(config.train_cases or known - set(test))
    if len(pool) < max(config.train_sizes) + config.schedule_cases + _validated(config):
        what = f"{_list_name(config, 'train_cases')} lists" if config.train_cases else \
            f"{_list_name(config, 'test_cases')} leaves"
        raise ConfigError(f"{what} {len(pool)} case(s) to train on; the largest of protocol.train_sizes "
                          f"{list(config.train_sizes)} is {max(config.train_sizes)}{_extra_cases(config)}")
    splits = []
    for i in range(config.splits):
        seed = config.first_split_seed + i
        order = np.random.default_rng(seed).permutation(len(pool))
        splits.append(_split(i, seed, test, tuple(pool[j] for j in order), config))
    return splits


def all_runs(config: ExperimentConfig) -> list[RunSpec]:
    """Every run in a fixed order (split, train size, method)."""
    return [RunSpec(s, n, m) for s in range(config.splits) for n in config.train_sizes for m in config.methods]


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n; None -> (0, 1)."""
    if text is None:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def shard_runs(runs: Sequence[RunSpec], shard: tuple[int, int]) -> list[RunSpec]:
    """The runs of shard i of n (round robin, so every shard gets every method)."""
    i, n = shard
    return [r for k, r in enumerate(runs) if k % n == i]


class ResultStore:
    """Results as `results/<run_id>.json`, one file per finished run, each with the settings that made it."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, run: RunSpec) -> Path:
        return self.folder / f"{run.run_id}.json"

    def done(self, run: RunSpec) -> bool:
        return self.path(run).is_file()

    def write(self, run: RunSpec, result: dict[str, Any], settings: dict[str, Any] | None = None) -> None:
        """Write `run`'s result; `settings` (what made it) are stored with their digest, `settings_sha256`."""
        keyed = {} if settings is None else {"settings": settings, "settings_sha256": settings_sha256(settings)}
        atomic_write_json({"split": run.split, "train_size": run.train_size, "method": run.method, **result,
                           **keyed}, self.path(run))

    def changes(self, run: RunSpec, settings: dict[str, Any],
                legacy: dict[str, Any] | None = None) -> list[str]:
        """What differs between the settings of `run`'s stored result and `settings` ([] if the same or no result).

        A result written before results were keyed records no settings: then `legacy` (the settings its run
        folder recorded, None if none) is compared with the same keys of `settings`.
        """
        if not self.done(run):
            return []
        stored = self._read(self.path(run))
        if "settings_sha256" in stored:
            if stored["settings_sha256"] == settings_sha256(settings):
                return []
            return settings_differences(stored.get("settings", {}), settings) or ["settings digest"]
        if legacy is None:
            return ["settings (not recorded)"]
        return settings_differences(legacy, {k: settings.get(k) for k in legacy})

    def read_all(self) -> list[dict[str, Any]]:
        """Every finished run's result. Raises `DataError` naming a file that is not a result."""
        if not self.folder.is_dir():
            return []
        return [self._read(p) for p in sorted(self.folder.glob("*.json"))]

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            result = json.loads(path.read_text())
        except (UnicodeDecodeError, ValueError) as exc:
            raise DataError(path, f"is not a run result ({exc}); remove it to redo that run") from None
        if not isinstance(result, dict) or not {"split", "train_size", "method"} <= set(result):
            raise DataError(path, "is not a run result (no split, train_size, method); remove it to redo that run")
        return result

    def pending(self, runs: Iterable[RunSpec]) -> list[RunSpec]:
        return [r for r in runs if not self.done(r)]
