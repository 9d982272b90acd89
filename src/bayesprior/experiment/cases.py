"""The experiment's cases and what each run sees of them.

The datasets (synthesised into the experiment folder when the config asks for it), their preprocessed cases,
the cases a run is scored on, and, with the `ct` intensity scheme, the cases normalised with statistics of the
run's own training cases: what a run may see is decided here, so that no test case reaches its training.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write_json
from ..data.datasets import dataset_case_ids
from ..data.preprocess import PreprocessConfig, ct_normalised, ct_statistics, prepare_dataset
from ..data.synth import synthesize_dataset, synthetic_case_ids
from ..errors import ConfigError, FolderInUseError
from ..hashing import cases_sha256, settings_sha256
from .config import DatasetSpec, lists_as_tuples
from .context import ExperimentContext, Stage
from .runs import RunSpec, Split, make_splits

#: how often a shard looks again at a synthetic dataset that another shard is making
DATA_WAIT_SECONDS = 2.0


class ExperimentCases(Stage):
    """The datasets of one experiment, read once per experiment object (cached on disk), and the cases each
    run trains and is scored on."""

    def __init__(self, context: ExperimentContext):
        super().__init__(context)
        self._cases: dict[str, list[Any]] = {}
        self._case_digests: dict[str, str] = {}
        self._ct_statistics: dict[tuple[str, ...], dict[str, float]] = {}  # the last training set's only
        self._normalised: dict[tuple, list[Any]] = {}  # the last cases `run_cases` normalised

    def check_case_lists(self) -> None:
        """The target's case ids against the protocol, before any work (the source stage takes hours): the listed
        test and training cases (``protocol.test_cases``, ``train_cases``, ``split_file``), and enough cases for
        test_size, the largest train size and schedule_cases. A dataset folder's ids are listed without reading
        its images, a synthetic target's are known before it is made. Raises ConfigError naming unknown ids
        first, then a list or a target too short (`make_splits`)."""
        c, spec = self.config, self.config.target
        if spec.synthetic_kind is not None:  # (the target has a path or is synthetic: `config._dataset`)
            ids = synthetic_case_ids(spec.synthetic_kind, spec.synthetic_cases)
        elif spec.path is not None and Path(spec.path).is_dir():
            ids = dataset_case_ids(spec.path, spec.layout, channel=spec.channel,
                                   allow_outside_paths=spec.allow_outside_paths)
        else:
            return  # a missing folder is named when the data are read
        make_splits(ids, c)

    def dataset_folder(self, spec: DatasetSpec, name: str) -> Path:
        """The folder of dataset `spec`: its path, or the experiment's ``data/<name>``, synthesised once (a shard
        waits for another that is making it)."""
        if spec.path is not None:
            return Path(spec.path)
        if spec.synthetic_kind is None:
            raise ConfigError(f"[{name}] names no dataset: give its path or synthetic")
        folder = self.out / "data" / name
        marker = folder / "synthesis.json"
        waited = False
        if not marker.is_file():
            self.log(f"synthesising {spec.synthetic_cases} {spec.synthetic_kind} cases -> {folder}")
        while not marker.is_file():
            try:
                start = time.perf_counter()
                synthesize_dataset(spec.synthetic_kind, spec.synthetic_cases, folder, shape=spec.synthetic_shape,
                                   seed=spec.synthetic_seed)
                atomic_write_json({"kind": spec.synthetic_kind, "cases": spec.synthetic_cases,
                                   "seconds": round(time.perf_counter() - start, 1)}, marker)
            except FolderInUseError:  # another shard of this experiment is making it: wait for that one
                if not waited:
                    self.log(f"{folder} is being made by another process; waiting for it")
                    waited = True
                time.sleep(DATA_WAIT_SECONDS)
        return folder

    def cases(self, spec: DatasetSpec, name: str) -> list[Any]:
        """The preprocessed cases of `spec` (read once per experiment object, cached on disk)."""
        if name not in self._cases:
            folder = self.dataset_folder(spec, name)
            preprocess = PreprocessConfig(**lists_as_tuples(self.config.preprocess))
            if self.ct_per_run() and name == "target":  # normalised per run, by `run_cases`
                preprocess = dataclasses.replace(preprocess, intensity="none")
            kwargs = {k: v for k, v in (("layout", spec.layout), ("channel", spec.channel)) if v is not None}
            self._cases[name] = prepare_dataset(folder, preprocess, cache_dir=self.out / "cache" / name,
                                                allow_outside_paths=spec.allow_outside_paths, **kwargs)
        return self._cases[name]

    def ct_per_run(self) -> bool:
        """Whether target cases get the `ct` scheme with statistics from each run's own training cases: never
        from every case of the target, whose test cases (and their labels, which mark the foreground the
        statistics are taken from) a run must not see."""
        return self.config.preprocess.get("intensity") == "ct"

    def run_ct_statistics(self, run: RunSpec, split: Split, by_id: dict[str, Any]) -> dict[str, float] | None:
        """The `ct` statistics of `run`'s training cases (on the preprocessed grid); None for other schemes."""
        if not self.ct_per_run():
            return None
        train_ids = split.train_cases(run.train_size)
        if train_ids not in self._ct_statistics:
            self._ct_statistics = {train_ids: ct_statistics([by_id[i] for i in train_ids],
                                                            f"the training cases of {run.run_id}")}
        return self._ct_statistics[train_ids]

    def run_cases(self, ids: Sequence[str], by_id: dict[str, Any],
                  statistics: dict[str, float] | None) -> list[Any]:
        """The cases `ids` as a run trains on or is scored on them (normalised with its `ct` statistics)."""
        if statistics is None:
            return [by_id[i] for i in ids]
        key = (tuple(ids), settings_sha256(statistics))
        if key not in self._normalised:  # the runs of one split and size share their training cases
            self._normalised = {key: [ct_normalised(by_id[i], statistics) for i in ids]}
        return self._normalised[key]

    def scored_ids(self, run: RunSpec, split: Split) -> tuple[str, ...]:
        """The cases `run` is scored on: its split's test set, or (``score_on = 'validation'``) its unused pool."""
        scored = split.test if self.config.score_on == "test" else split.unused_pool(run.train_size)
        if not scored:
            schedule = f" + {len(split.schedule)} schedule cases" if split.schedule else ""
            raise ConfigError(f"score_on = 'validation' needs target cases beyond test_size + {run.train_size} "
                              f"training cases{schedule} to validate on")
        return scored

    def case_digest(self, case: Any) -> str:
        """The digest of one case (`cases_sha256`), computed once per experiment object."""
        if case.case_id not in self._case_digests:
            self._case_digests[case.case_id] = cases_sha256([case])
        return self._case_digests[case.case_id]
