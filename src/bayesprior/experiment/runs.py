"""The runs of an experiment: splits x train sizes x methods, sharding, and resumable results.

Each run writes its result as one JSON file, atomically; a run whose result exists is skipped, so a
killed experiment restarts where it stopped and every run appears exactly once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import atomic_write_json
from ..errors import ConfigError, DataError
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
    """

    index: int
    seed: int
    test: tuple[str, ...]
    train_pool: tuple[str, ...]

    def train_cases(self, n: int) -> tuple[str, ...]:
        return self.train_pool[:n]

    def unused_pool(self, n: int) -> tuple[str, ...]:
        """The pool cases a run on `n` training cases does not train on: its validation set."""
        return self.train_pool[n:]


def make_splits(case_ids: Sequence[str], config: ExperimentConfig) -> list[Split]:
    """Seeded splits (seed first_split_seed + i): a random test set of test_size, the rest shuffled as the pool."""
    ids = sorted(case_ids)
    need = config.test_size + max(config.train_sizes)
    if len(ids) < need:
        raise ConfigError(f"the target dataset has {len(ids)} cases; test_size {config.test_size} + largest "
                          f"train size {max(config.train_sizes)} needs {need}")
    splits = []
    for i in range(config.splits):
        seed = config.first_split_seed + i
        order = np.random.default_rng(seed).permutation(len(ids))
        test = tuple(sorted(ids[j] for j in order[: config.test_size]))
        pool = tuple(ids[j] for j in order[config.test_size:])
        splits.append(Split(i, seed, test, pool))
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
    """Results as `results/<run_id>.json`, one file per finished run."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, run: RunSpec) -> Path:
        return self.folder / f"{run.run_id}.json"

    def done(self, run: RunSpec) -> bool:
        return self.path(run).is_file()

    def write(self, run: RunSpec, result: dict[str, Any]) -> None:
        atomic_write_json({"split": run.split, "train_size": run.train_size, "method": run.method, **result},
                          self.path(run))

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
