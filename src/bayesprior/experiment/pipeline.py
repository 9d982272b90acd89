"""The paper's protocol end to end (Algorithms 2-3): data -> source zoo -> harvest -> prior -> target runs -> report.

Every stage writes its outputs atomically and is skipped when they exist, so a killed experiment
resumes where it stopped. Target runs are independent and can be split across machines with
`shard=(i, n)`; run the source stage once first (``--stage source``) when shards run in parallel.

Output folder::

    data/{source,target}/        synthetic datasets (when the config asks for them)
    cache/                       preprocessed cases
    source/runs/seed<k>/         source training runs (model.pt: the seed's final network, PR's source)
    source/zoo/seed<k>/seed<k>_min<j>.pt   every minimum of seed k (harvested)
    source/bank.npz              harvested kernels;  source/prior_<method>.pt  fitted priors
    source/settings.json         the source stage's settings (zoo, data digest, prior fit)
    runs/<run id>/               target training runs
    results/<run id>.json        one result per finished run, with its settings and their digest;
                                 results/figures/<run id>.npz
    predictions/<run id>/        the scored cases' masks as NIfTI (``write_predictions``)
    superseded/<what>.<digest>/  results and runs made with settings changed since (``rerun_changed``)
    table.md, table.csv, dsc_vs_train_size.png, predictions.png, experiment.json

Results belong to their settings: a run whose stored result (or the source stage, whose settings.json)
was made with other settings is refused with a line naming what changed, or, with ``rerun_changed``,
done again, the old outputs moved under ``superseded/`` rather than deleted. A run whose scoring alone changed
(``score_on``, ``samples``, ``score_grid``) keeps its trained network and is only scored again.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..atomic import atomic_path, atomic_write_json, atomic_write_text, remove_stale_temp_files
from ..checkpoints import load_model, read_model_file
from ..data.cases import apply_label_policy
from ..data.nifti import read_label_values, write_like
from ..data.preprocess import (PreprocessConfig, affine_from_record, ct_normalised, ct_statistics,
                               header_from_record, invert, prepare_dataset, recorded_config)
from ..data.datasets import dataset_case_ids
from ..data.provenance import input_grid, preprocessing_summary
from ..data.synth import synthesize_dataset, synthetic_case_ids
from ..errors import CheckpointError, ConfigError, DataError, FolderInUseError, PluginError
from ..hashing import cases_sha256, file_sha256, settings_differences, settings_sha256
from ..evaluation.calibration import body_mask
from ..evaluation.scoring import BODY_REGION, CaseScores
from ..inference.prediction import PredictionSettings, mask_and_probability, predict_case
from ..kernel_structure import HELDOUT_FRACTION, structure_rows, structure_table, structure_warnings
from ..kernels import KernelBank, harvest_kernels
from ..locks import folder_lock
from ..plugins import build_architecture, check_prior_fit_options, prior_fitter, prior_source_file
from ..safe_load import NpzLimits, load_npz
from ..training.config import TrainConfig
from ..training.methods import TrainingMethod, training_method
from ..training.run_folder import input_files
from ..training.splits import validation_split
from ..training.trainer import train
from ..training.transfer_checks import preprocessing_warnings, prior_file_origins, source_model_origins
from .config import DatasetSpec, ExperimentConfig, lists_as_tuples
from .report import plot_dsc_vs_train_size, plot_predictions, write_tables
from .runs import ResultStore, RunSpec, Split, all_runs, make_splits, shard_runs

STAGES = ("all", "source", "target", "report")
#: how often a shard looks again at a synthetic dataset that another shard is making
DATA_WAIT_SECONDS = 2.0
#: what a figure slice file may declare: a few 2D slices and a score
FIGURE_SLICE_LIMITS = NpzLimits(max_arrays=16, max_bytes=256 * 2**20)
#: run settings that do not change a run's result: left out of the settings a result is keyed by (the
#: files behind ``source`` and ``prior_path`` are keyed by their content instead)
NOT_RESULT_SETTINGS = ("progress", "device", "zoo_dir", "source", "prior_path")
#: settings only Bayesian runs read: left out of the (deterministic) source runs' settings
BAYESIAN_SETTINGS = ("kl_weight", "forward_mode", "kl_warmup", "prior_options", "log_variance_init",
                     "init_from_prior", "posterior_std_ratio")
#: settings added after results were first keyed by their settings, with the default that reproduces the
#: runs made before they existed: left out of a result's key while at that default, so that results made
#: by an older bayesprior stay valid
LATER_SETTINGS = {"posterior_std_ratio": None, "penalty_weight": None, "swag_epochs": 0, "swag_rank": 5,
                  "swag_lr": None}


class Experiment:
    """One experiment folder. `run()` does every stage that is not done yet."""

    def __init__(self, config: ExperimentConfig, out_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log
        self.store = ResultStore(self.out / "results")
        self._cases: dict[str, list[Any]] = {}
        self._case_digests: dict[str, str] = {}
        self._train_seconds: dict[RunSpec, float | None] = {}  # rescored or reused runs: their first training time
        self._ct_statistics: dict[tuple[str, ...], dict[str, float]] = {}  # the last training set's only
        self._normalised: dict[tuple, list[Any]] = {}  # the last cases `run_cases` normalised
        self.check_settings()

    def check_settings(self) -> None:
        """What the config file's own checks cannot see, before any data are made: the architecture and its
        options, every run's training settings, and each learned prior's options.

        Raises:
            ConfigError, PluginError: naming the setting.
        """
        c = self.config
        with _naming("protocol.methods"):  # the method table's row of every method
            self.methods: dict[str, TrainingMethod] = {m: training_method(c.base_method(m)) for m in c.methods}
        with _naming("[architecture]"):
            build_architecture(c.architecture, **(dict(c.architecture_config) or {"in_channels": 1, "n_classes": 2}))
        with _naming("[source_training]"):
            self.train_config(target=False, method="ri", **c.source_train_options)
        for name, method in self.methods.items():
            own = c.target_method_options.get(name, {})
            unused = [k for k in own if k in (*BAYESIAN_SETTINGS, "prior_init")]
            if not method.bayesian and unused:  # a base [target_training] value is shared; a per-method one is meant
                raise ConfigError(f"[target_training.per_method.{name}] sets {', '.join(unused)}, which "
                                  f"{method.name} (a deterministic method, no prior) never reads")
            with _naming(f"[target_training] (method {name})"):
                self.train_config(method=name)
            if method.learned_prior and c.prior_file is None:
                with _naming(f"[prior] ({name} prior)"):
                    check_prior_fit_options(method.name, self.prior_fit_options())
        learned = self.learned_prior_methods()
        if c.prior_file is not None and len({prior_fitter(m) for m in learned}) != 1:
            raise ConfigError(f"[prior] file serves the methods that learn one kind of prior; protocol.methods has "
                              f"{len(learned)} ({', '.join(learned) or 'none'})")
        swag_file_methods = [m for m in self.methods.values() if m.bayesian and prior_source_file(m.name)]
        if swag_file_methods and not c.source_models and not c.source_train_options.get("swag_epochs"):
            names = ", ".join(sorted({m.name for m in swag_file_methods}))
            raise ConfigError(f"method(s) {names} read their prior from a file the source run writes "
                              f"({', '.join(sorted({prior_source_file(m.name) for m in swag_file_methods}))}): set "
                              "[source_training] swag_epochs (e.g. 10) so that the source stage collects it")
        for model in c.source_models:  # an existing zoo is read before any work: a bad file is named now
            with _naming("[source] models"):
                read_model_file(model)
        if self.needs_source() and not c.source_models and c.source.path is None and c.source.synthetic_kind is None:
            raise ConfigError("[source] needs path, synthetic or models: a method in protocol.methods starts from "
                              "the source models or learns its prior from them")

    def prior_fit_options(self) -> dict[str, Any]:
        """What a learned prior's ``fit`` gets: the generic settings and the prior's own options."""
        return {"max_epochs": self.config.prior_max_epochs, "seed": self.config.first_split_seed,
                "progress": self.progress, **self.config.prior_options}

    # ------------------------------------------------------------------------------ data
    def dataset_folder(self, spec: DatasetSpec, name: str) -> Path:
        if spec.path is not None:
            return Path(spec.path)
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

    # ------------------------------------------------------------------------------ source
    def needs_source(self) -> bool:
        """Whether a method starts from the source model, learns its prior from it (unless ``[prior] file``
        gives the prior), or is told to start there."""
        c = self.config
        return any(m.needs_source or (m.learned_prior and c.prior_file is None) or (
            m.bayesian and c.target_method_options.get(name, {}).get("prior_init", c.prior_init) == "source")
            for name, m in self.methods.items())

    def learned_prior_methods(self) -> list[str]:
        """The methods whose prior is fitted to the source models' kernels first (e.g. DWP)."""
        return list(dict.fromkeys(m.name for m in self.methods.values() if m.learned_prior))

    def train_config(self, target: bool = True, **overrides: Any) -> TrainConfig:
        """The settings of a target run (or, with ``target=False``, the shared base of a source run)."""
        c = self.config
        base = dict(architecture=c.architecture, architecture_config=dict(c.architecture_config) or
                    {"in_channels": 1, "n_classes": 2}, max_epochs=c.max_epochs, batch_size=c.batch_size,
                    ce_reduction=c.ce_reduction, kl_weight=c.kl_weight, lr=c.lr, forward_mode=c.forward_mode,
                    patience=c.patience,
                    progress=self.progress)
        if target:
            base.update(c.target_train_options)
        base.update(overrides)
        return TrainConfig(**base)

    def source_models(self, shard: tuple[int, int] = (0, 1)) -> tuple[list[Path], list[Path]]:
        """Train the source zoo (resumable); return each seed's final model and every model to harvest.

        With ``shard=(i, n)`` only the seeds at positions i, i + n, ... are trained here, so the source
        networks of an experiment can train in n processes at once.
        """
        c = self.config
        if c.source_models:  # an existing zoo: the first model is the source of PR and PRf
            models = [Path(m) for m in c.source_models]
            return models[:1], models
        # the same cases `bayesprior train --val-fraction F --seeds S` holds out for F and S = first_split_seed
        train_cases, val = validation_split(self.cases(c.source, "source"), c.source_val_fraction, c.first_split_seed)
        zoo = self.out / "source" / "zoo"
        finals = []
        for k, seed in enumerate(c.source_seeds):
            run_dir = self.out / "source" / "runs" / f"seed{seed}"
            model = run_dir / "model.pt"
            unfinished = not model.is_file() or any(not (run_dir / f).is_file() for f in self.source_run_files())
            if unfinished and k % shard[1] == shard[0]:
                self.log(f"source model seed {seed}: {len(train_cases)} training cases, "
                         f"{len(val)} validation, up to {c.source_max_epochs} epochs, {c.source_restarts} restart(s)")
                config = self.source_train_config(seed, zoo)
                train(config, train_cases, val or None, run_dir=run_dir,
                      preprocess=recorded_config(train_cases), channel=c.source.channel)  # with ct statistics
            finals.append(model)
        minima = sorted(zoo.glob("seed*/*.pt"))
        return finals, (minima or finals)

    def source_run_files(self) -> list[str]:
        """The files beside a source run's model.pt that a method's prior is read from (e.g. ``swag.pt``)."""
        return sorted({f for m in self.methods.values() if m.bayesian and (f := prior_source_file(m.name))})

    def source_file_priors(self, source: Path) -> dict[str, Path]:
        """The prior file of each method whose prior is a file the source run wrote beside `source`.

        Raises:
            ConfigError: the file is missing (a zoo given by ``[source] models`` without it).
        """
        priors = {}
        for name, method in self.methods.items():
            file_name = prior_source_file(method.name) if method.bayesian else None
            if file_name is None:
                continue
            path = source.parent / file_name
            if not path.is_file():
                raise ConfigError(f"method {name!r} needs {path}, which the source run writes with "
                                  "[source_training] swag_epochs (`train --swag-epochs`)")
            priors[method.name] = path
        return priors

    def source_train_config(self, seed: int, zoo: Path) -> TrainConfig:
        """The settings of the source run of `seed`, its minima saved under `zoo`."""
        c = self.config
        return self.train_config(method="ri", seed=seed, max_epochs=c.source_max_epochs, restarts=c.source_restarts,
                                 patience=c.source_patience, zoo_dir=str(zoo / f"seed{seed}"), target=False,
                                 **c.source_train_options)

    def source_settings(self) -> dict[str, Any]:
        """What the source stage's outputs depend on: the zoo (its models' digests, or its training settings
        and data digest) and the prior (its file's digest, or its fit settings)."""
        c = self.config
        if c.source_models:
            zoo: dict[str, Any] = {"models": [file_sha256(m) for m in c.source_models]}
        else:
            train_config = _result_settings(self.source_train_config(0, self.out), drop=("seed", *BAYESIAN_SETTINGS))
            zoo = {"train_config": train_config, "seeds": list(c.source_seeds), "val_fraction": c.source_val_fraction,
                   "split_seed": c.first_split_seed, "preprocess": dict(c.preprocess),
                   "data": cases_sha256(self.cases(c.source, "source"))}
        prior = ({"file": file_sha256(c.prior_file)} if c.prior_file is not None else
                 {"norm_threshold": c.norm_threshold,
                  **{k: v for k, v in self.prior_fit_options().items() if k != "progress"}})
        return {"zoo": zoo, "prior": prior}

    def _settle_source(self, shard: tuple[int, int], rerun_changed: bool) -> None:
        """Record the source stage's settings, or refuse (or with `rerun_changed` set aside) a source stage
        made with other settings, so that models of two settings never mix in one zoo."""
        path = self.out / "source" / "settings.json"
        settings = self.source_settings()
        if not path.is_file():
            if (self.out / "source").is_dir() and any((self.out / "source").iterdir()):
                self.log(f"{self.out / 'source'} records no settings (made by an older bayesprior); taking it as "
                         "made with this configuration's")
            atomic_write_json(settings, path)
            return
        stored = _read_json(path, "the source stage's settings")
        changed = settings_differences(stored, settings)
        if not changed:
            return
        if not rerun_changed:
            raise ConfigError(f"{self.out / 'source'} was made with other source settings ({_few(changed)}); run "
                              "again with --rerun-changed to redo the source stage (the old one is kept in "
                              "superseded/), or use another --out")
        if shard[1] > 1:
            raise ConfigError(f"{self.out / 'source'} was made with other source settings ({_few(changed)}); redo "
                              "the source stage in one process first (--stage source --rerun-changed, no --shard)")
        moved = self._set_aside("source", settings_sha256(stored), self.out / "source")
        self.log(f"source settings changed ({_few(changed)}): the old source stage is in {moved}")
        atomic_write_json(settings, path)

    def _set_aside(self, name: str, digest: str, paths: dict[str, Path] | Path) -> Path:
        """Move `paths` (new name -> path, those that exist), or one folder, to ``superseded/<name>.<digest
        head>/``; return that folder."""
        folder = self.out / "superseded" / f"{name}.{digest[:12]}"
        k = 1
        while folder.exists():
            k += 1
            folder = self.out / "superseded" / f"{name}.{digest[:12]}.{k}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(paths, Path):
            os.replace(paths, folder)
            return folder
        folder.mkdir()
        for new_name, old in paths.items():
            if old.exists():
                os.replace(old, folder / new_name)
        return folder

    def source_done(self) -> bool:
        """Whether the source stage has finished: every source network trained and every prior fitted."""
        return (self.out / "source" / "done.json").is_file()

    def fit_priors(self, zoo: Sequence[Path]) -> dict[str, Path]:
        """Harvest the zoo's kernels once and fit every learned prior the methods need.

        Each prior's ``fit`` gets the generic settings (``max_epochs``, ``seed``, ``progress``) and the
        prior's own options (``[prior] options``), as the ``register_priors`` hook specifies.
        """
        methods = self.learned_prior_methods()
        if not methods:
            return {}
        if self.config.prior_file is not None:  # an existing prior (one kind of learned prior, checked up front)
            return {method: Path(self.config.prior_file) for method in methods}
        bank_path = self.out / "source" / "bank.npz"
        if not bank_path.is_file():
            self.log(f"harvesting kernels from {len(zoo)} source model(s)")
            bank = harvest_kernels([str(p) for p in zoo], norm_threshold=self.config.norm_threshold)
            bank.save(bank_path)
        else:
            bank = KernelBank.load(bank_path)
        priors: dict[str, Path] = {}
        fitted: dict[Callable[..., Any], Path] = {}  # methods that learn one kind of prior share its file
        for method in methods:
            fit = prior_fitter(method)
            out = fitted.get(fit) or self.out / "source" / f"prior_{method}.pt"
            if not out.is_file():
                self.log(f"fitting the {method} prior on {bank_path.name}")
                scores = fit(str(bank_path), str(out), **self.prior_fit_options())
                if scores:  # held-out scores per group, by the register_priors contract
                    self.structure_report(bank, method, {g: float(v) for g, v in dict(scores).items()})
            priors[method] = fitted.setdefault(fit, out)
        return priors

    def structure_report(self, bank: KernelBank, method: str, scores: dict[str, float]) -> None:
        """Held-out scores of the prior `method` beside the Gaussian baselines: source/structure_<method>.md/.json."""
        rows = structure_rows(bank.kernels, HELDOUT_FRACTION, self.config.first_split_seed, learned=scores)
        table = structure_table(rows, learned_name=f"{method} held-out")
        self.log(f"kernel structure and the {method} prior, nats per held-out kernel:\n{table}")
        for line in structure_warnings(rows, learned_name=f"{method} prior"):
            self.log(f"warning: {line}")
        atomic_write_text(table + "\n", self.out / "source" / f"structure_{method}.md")
        atomic_write_json([{"group": r.group, "kernels": r.n_kernels, "iid": r.iid, "full": r.full,
                            "learned": r.learned} for r in rows], self.out / "source" / f"structure_{method}.json")

    def check_transfer_preprocessing(self, source: Path | None, priors: dict[str, Path], cases: Sequence[Any]) -> None:
        """Warn, one log line each, where the source model or the source models of a prior were trained on inputs
        preprocessed otherwise than the target's (`bayesprior.training.transfer_checks`)."""
        c = self.config
        target = preprocessing_summary({"preprocess": PreprocessConfig(**lists_as_tuples(c.preprocess)).to_dict(),
                                        "input_grid": input_grid(cases), "channel": c.target.channel})
        origins = source_model_origins([source]) if source is not None else []
        for prior in dict.fromkeys(priors.values()):
            origins += prior_file_origins(prior)
        for line in preprocessing_warnings(origins, target, "the target"):
            self.log(f"warning: {line}")

    # ------------------------------------------------------------------------------ target
    def scored_ids(self, run: RunSpec, split: Split) -> tuple[str, ...]:
        """The cases `run` is scored on: its split's test set, or (``score_on = 'validation'``) its unused pool."""
        scored = split.test if self.config.score_on == "test" else split.unused_pool(run.train_size)
        if not scored:
            raise ConfigError(f"score_on = 'validation' needs target cases beyond test_size + {run.train_size} "
                              "training cases to validate on")
        return scored

    def run_settings(self, run: RunSpec, split: Split, by_id: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
        """What `run`'s result depends on, the key of its result: its training settings, the digests of the
        files it starts from and of its training and scored cases, and how it is scored."""
        c = self.config
        scored = self.scored_ids(run, split)
        statistics = self.run_ct_statistics(run, split, by_id)  # with the data's digests, they fix what the run sees
        return {"method": run.method, "train_config": _result_settings(config), "inputs": input_files(config),
                # the cases as the run trains on them: the digest its run folder records (`train`)
                "train_data": cases_sha256(self.run_cases(split.train_cases(run.train_size), by_id, statistics)),
                "scored": {"on": c.score_on, "cases": list(scored), "grid": c.score_grid, "samples": c.samples,
                           "data": settings_sha256([self._case_digest(by_id[i]) for i in scored])},
                "preprocess": dict(c.preprocess) if statistics is None else
                {**c.preprocess, "intensity_statistics": statistics}}

    def _case_digest(self, case: Any) -> str:
        if case.case_id not in self._case_digests:
            self._case_digests[case.case_id] = cases_sha256([case])
        return self._case_digests[case.case_id]

    def _legacy_settings(self, run: RunSpec) -> dict[str, Any] | None:
        """The settings a run folder recorded (``config.json``), in `run_settings`' terms; None if none."""
        return _folder_settings(self.out / "runs" / run.run_id)

    def reuse_finished_runs(self, runs: Sequence[RunSpec], settings: dict[RunSpec, dict[str, Any]],
                            other: Path) -> None:
        """Copy in the finished run folders of experiment folder `other` that were trained exactly as runs of
        `runs` are (training settings, input files' digests, training cases' digest), so that those runs are
        only scored here: the networks of a tuning grid, scored on validation cases there, are scored on the
        test set here without training them again (on CPU, training again would give the same weights)."""
        trained: dict[str, Path] = {}
        for record in sorted((Path(other) / "runs").glob("*/config.json")):
            folder = record.parent
            recorded = _folder_settings(folder)
            if recorded is not None and (folder / "model.pt").is_file() and (folder / "checkpoint.pt").is_file():
                trained.setdefault(settings_sha256(recorded), folder)
        for run in runs:
            target = self.out / "runs" / run.run_id
            found = trained.get(settings_sha256({k: settings[run][k] for k in _TRAINING_KEYS}))
            if found is None or self.store.done(run) or target.exists():
                continue
            partial = target.parent / f".{run.run_id}.reuse.tmp"
            shutil.rmtree(partial, ignore_errors=True)  # a copy a kill interrupted
            shutil.copytree(found, partial)
            os.replace(partial, target)
            earlier = Path(other) / "results" / f"{found.name}.json"
            if earlier.is_file():  # its training time, which resuming the finished run here does not measure
                self._train_seconds[run] = _read_json(earlier, "a run result").get("train_seconds")
            self.log(f"{run.run_id}: trained exactly as {found}; reusing that network (scored here)")

    def _settle_target_runs(self, runs: Sequence[RunSpec], settings: dict[RunSpec, dict[str, Any]],
                            rerun_changed: bool) -> None:
        """Refuse (or with `rerun_changed` set aside) the runs whose result, or unfinished run folder, was
        made with settings other than `settings`."""
        changed = {}
        for run in runs:
            legacy = self._legacy_settings(run)
            differences = self.store.changes(run, settings[run], legacy)
            if not differences and not self.store.done(run) and legacy is not None:
                # an unfinished run started with other settings: it is not resumed as this run
                differences = settings_differences(legacy, {k: settings[run].get(k) for k in legacy})
            if differences:
                changed[run] = differences
        if not changed:
            return
        first, differences = next(iter(changed.items()))
        if not rerun_changed:
            raise ConfigError(f"{self.out}: {len(changed)} target run(s) were made (or started) with other settings "
                              f"({first.run_id}: {_few(differences)}); run again with --rerun-changed to "
                              f"{'rescore them' if all(map(_scoring_only, changed.values())) else 'redo them'} "
                              "(the old results are kept in superseded/), or use another --out")
        for run, differences in changed.items():
            stored = self.store.path(run)
            old = _read_json(stored, "a run result") if stored.is_file() else {}
            digest = old.get("settings_sha256") or settings_sha256(self._legacy_settings(run) or "unrecorded")
            folder = self.out / "runs" / run.run_id
            # rescored only where `train` finds the finished run to resume, and so trains nothing
            rescore = (_scoring_only(differences) and (folder / "model.pt").is_file()
                       and (folder / "checkpoint.pt").is_file())
            outputs = {"result.json": stored, "figure.npz": self.store.folder / "figures" / f"{run.run_id}.npz",
                       "predictions": self.out / "predictions" / run.run_id}
            if rescore:  # the trained network stays: only its scores are made again
                self._train_seconds[run] = old.get("train_seconds")
            else:
                outputs["run"] = self.out / "runs" / run.run_id
            moved = self._set_aside(run.run_id, digest, outputs)
            self.log(f"{run.run_id}: settings changed ({_few(differences)}); "
                     f"{'rescoring its trained network' if rescore else 'redoing it'}, the old one is in {moved}")

    def run_train_config(self, run: RunSpec, split: Split, source: Path | None,
                         priors: dict[str, Path]) -> TrainConfig:
        """The training settings of target run `run`."""
        c = self.config
        method = self.methods[run.method]
        own = dict(c.target_method_options.get(run.method, {}))
        prior_init = own.pop("prior_init", c.prior_init)
        own.pop("method", None)
        overrides: dict[str, Any] = {**own, "method": method.name, "seed": split.seed}
        if method.needs_source:
            overrides["source"] = str(source)
        elif method.bayesian:  # where its posterior means start
            if prior_init == "source" and source is not None:
                overrides["source"] = str(source)
            elif prior_init == "prior" and method.name in priors:
                overrides["init_from_prior"] = True  # e.g. DWP: samples of the fitted kernel VAE
        if method.name in priors:
            overrides["prior_path"] = str(priors[method.name])
        return self.train_config(**overrides)

    def target_run(self, run: RunSpec, split: Split, by_id: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
        """Train target run `run` with `config` and score it; its result (scores, cases, time, settings summary)."""
        c = self.config
        statistics = self.run_ct_statistics(run, split, by_id)
        train_cases = self.run_cases(split.train_cases(run.train_size), by_id, statistics)
        scored_ids = self.scored_ids(run, split)
        start = time.perf_counter()
        model_path = train(config, train_cases, None, run_dir=self.out / "runs" / run.run_id,
                           preprocess=recorded_config(train_cases), channel=self.config.target.channel)
        # the run's own training time, over every session it was resumed in; else this call's (or, for a run
        # rescored from an older version's model, its first result's)
        seconds = (read_model_file(model_path)["extra"].get("train_seconds") or self._train_seconds.get(run)
                   or time.perf_counter() - start)
        model = load_model(model_path)
        scores = self.score(model, self.run_cases(scored_ids, by_id, statistics), run, config.patch)
        return {**scores, "train_cases": list(split.train_cases(run.train_size)), "scored_on": c.score_on,
                "test_cases": list(scored_ids), "score_grid": c.score_grid,
                "train_seconds": round(seconds, 1), "ce_reduction": config.ce_reduction,
                "kl_weight": config.kl_weight}

    def score(self, model: Any, cases: Sequence[Any], run: RunSpec,
              patch: Sequence[int] | None = None) -> dict[str, Any]:
        """Per-case DSC/IoU and calibration (ECE, Brier, NLL, UEO) of `cases`, averaged; the figure slice of the
        first case.

        Scored on the preprocessed grid, or (``score_grid = 'original'``) on each image's own grid against
        the label file, with the mask and probability `predict` writes (the probabilities mapped back by the
        exact inverse of the preprocessing, then thresholded). With ``write_predictions`` each mask is written
        on the original grid with its image's affine and header. The calibration is that of the foreground
        probability the method predicts with: the Monte-Carlo mean over ``samples`` weight samples (the
        posterior mean for 0) of a Bayesian network, the softmax of a deterministic one; ``ece``, ``brier`` and
        ``nll`` over the case's body mask (its image's non-zero voxels), ``*_band`` over its label, prediction and
        the band around them, ``*_all`` over every voxel (`bayesprior.evaluation.calibration`).
        """
        c = self.config
        scores = CaseScores()
        for k, case in enumerate(cases):
            # whole-volume prediction, as the paper; windows of the training patch for patch-trained runs
            settings = PredictionSettings(roi=_prediction_window(case.image.shape, patch), samples=c.samples)
            probabilities = predict_case(model, case.image, settings)
            prediction = probabilities.argmax(0).astype(np.uint8)
            original = original_probability = None
            if c.score_grid == "original" or c.write_predictions:  # what `predict` writes for this case
                original, original_probability = mask_and_probability(probabilities, case.record)
            body = body_mask(case.image)  # the image's non-zero voxels stay zero under every intensity scheme but ct
            if c.score_grid == "original":
                row = scores.add(case.case_id, original, _original_label(case), probability=original_probability,
                                 body=invert(body.astype(np.uint8), case.record, order=0) > 0,
                                 spacing=case.record["zooms"])
            else:
                row = scores.add(case.case_id, prediction, case.label, probability=probabilities[1], body=body,
                                 spacing=case.record["output_zooms"])
            if c.write_predictions:
                write_like(original, affine_from_record(case.record), header_from_record(case.record),
                           self.out / "predictions" / run.run_id / f"{case.case_id}.nii.gz", dtype=np.uint8)
            if k == 0:
                self._save_figure_slice(run, case, prediction, row["dsc"])
        return {**scores.mean(), "calibration_region": BODY_REGION, "per_case": scores.per_case(*scores.metrics())}

    def _save_figure_slice(self, run: RunSpec, case: Any, prediction: np.ndarray, dsc: float) -> None:
        z = int(np.argmax(case.label.reshape(-1, case.label.shape[-1]).sum(0)))  # slice with most foreground
        path = self.out / "results" / "figures" / f"{run.run_id}.npz"
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, image=case.image[..., z], label=case.label[..., z], pred=prediction[..., z],
                                    dsc=np.float32(dsc))

    # ------------------------------------------------------------------------------ report
    def report(self) -> str | None:
        c = self.config
        planned = set(all_runs(c))
        found = self.store.read_all()
        # a folder may also hold results of runs this config does not make (another config's, a method or size
        # taken out): they are left out of its tables and counted
        results = [r for r in found if RunSpec(r["split"], r["train_size"], r["method"]) in planned]
        if not results:
            return None
        bayesian = {name for name, method in self.methods.items() if method.bayesian}
        outside = f", {len(found) - len(results)} result(s) of runs outside this config left out" if len(found) > len(
            results) else ""
        note = (f"{_settings_note(results, bayesian)}; {_grid_note(results)}; "
                f"{len(planned) - len(results)} run(s) not finished yet{outside}.")
        text = write_tables(results, c.methods, c.train_sizes, self.out, note=note)
        plot_dsc_vs_train_size(results, c.methods, c.train_sizes, self.out / "dsc_vs_train_size.png")
        slices = {}
        for r in results:
            if r["split"] != 0:
                continue
            f = self.out / "results" / "figures" / f"split0_n{r['train_size']}_{r['method']}.npz"
            if f.is_file():
                slices[(r["train_size"], r["method"])] = _figure_slice(f)
        plot_predictions(slices, c.methods, c.train_sizes, self.out / "predictions.png")
        return text

    # ------------------------------------------------------------------------------ driver
    def run(self, shard: tuple[int, int] = (0, 1), stage: str = "all", rerun_changed: bool = False,
            reuse_from: str | Path | None = None) -> str | None:
        """Do every stage of `stage` that is not done yet, for the target runs of `shard`; the report's text.

        Outputs made with settings other than the configuration's are refused (`ConfigError` naming what
        changed), or with `rerun_changed` set aside under ``superseded/`` and made again. With `reuse_from`
        (another experiment folder), runs trained there exactly as here are copied in and only scored
        (`reuse_finished_runs`).

        The experiment folder is locked while it runs: exclusively, except for the shards of a sharded run
        (``n > 1``), which share it with each other; each training run also locks its own folder, so two
        processes never train in one. Temporary files a killed run left are removed first.

        Raises:
            FolderInUseError: another process holds the folder (or a run folder this one needs).
        """
        if stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
        if reuse_from is not None:
            reuse_from = Path(reuse_from)
            if not (reuse_from / "runs").is_dir():
                raise ConfigError(f"{reuse_from}: not an experiment folder with target runs (no runs/ folder)")
            if reuse_from.resolve() == self.out.resolve():
                raise ConfigError(f"{reuse_from}: runs are reused from another experiment folder, not this one")
        shared = shard[1] > 1
        with folder_lock(self.out, "experiment folder", shared=shared):
            if shared:  # other shards write beside us: only our own runs' leftovers are ours to remove
                own = {f"{r.run_id}.{ending}" for r in shard_runs(all_runs(self.config), shard)
                       for ending in ("json", "npz")}
                for folder in (self.store.folder, self.store.folder / "figures"):
                    remove_stale_temp_files(folder, targets=own.__contains__)
            else:
                remove_stale_temp_files(self.out, recursive=True)
            return self._run_stages(shard, stage, rerun_changed, reuse_from)

    def check_case_lists(self) -> None:
        """The listed test and training cases (``protocol.test_cases``, ``train_cases``, ``split_file``) against
        the target's case ids, before any work: a dataset folder's ids are listed without reading its images,
        a synthetic target's are known before it is made. Raises ConfigError naming unknown ids first, then a
        list too short for the train sizes (`make_splits`)."""
        c, spec = self.config, self.config.target
        if not (c.test_cases or c.train_cases):
            return
        if spec.path is None:
            ids = synthetic_case_ids(spec.synthetic_kind, spec.synthetic_cases)
        elif Path(spec.path).is_dir():
            ids = dataset_case_ids(spec.path, spec.layout, channel=spec.channel,
                                   allow_outside_paths=spec.allow_outside_paths)
        else:
            return  # a missing folder is named when the data are read
        make_splits(ids, c)

    def _run_stages(self, shard: tuple[int, int], stage: str, rerun_changed: bool = False,
                    reuse_from: Path | None = None) -> str | None:
        if stage != "report":
            self.check_case_lists()
        atomic_write_json(self.config.to_dict(), self.out / "experiment.json")
        source = None
        priors: dict[str, Path] = {}
        if stage in ("all", "source", "target") and self.needs_source():
            if stage == "target" and shard[1] > 1 and not self.source_done():
                raise ConfigError(f"{self.out}: the source stage is not finished; run --stage source (with every "
                                  "--shard i/n it was started with) before parallel target shards")
            self._settle_source(shard, rerun_changed)
            finals, zoo = self.source_models(shard if stage == "source" else (0, 1))
            missing = [p for p in finals if not p.is_file()]
            if missing:  # other shards' source networks are still training
                self.log(f"{len(missing)} source model(s) of other shards not finished yet; run --stage source "
                         "again once they are, to harvest the kernels and fit the priors")
                return None
            source = finals[0]  # Algorithm 2: PR and PRf start from one source network
            priors = {**self.fit_priors(zoo), **self.source_file_priors(source)}
            atomic_write_json({"priors": sorted(priors)}, self.out / "source" / "done.json")
        elif stage in ("all", "target"):
            priors = self.fit_priors([])  # an existing prior file, if the config gives one
        if stage == "source":  # make (and cache) the target data too, so parallel shards never race on it
            self.cases(self.config.target, "target")
        if stage in ("all", "target"):
            cases = self.cases(self.config.target, "target")
            self.check_transfer_preprocessing(source, priors, cases)
            by_id = {c.case_id: c for c in cases}
            splits = make_splits(list(by_id), self.config)
            runs = shard_runs(all_runs(self.config), shard)
            configs = {run: self.run_train_config(run, splits[run.split], source, priors) for run in runs}
            settings = {run: self.run_settings(run, splits[run.split], by_id, configs[run]) for run in runs}
            self._settle_target_runs(runs, settings, rerun_changed)
            if reuse_from is not None:
                self.reuse_finished_runs(self.store.pending(runs), settings, reuse_from)
            todo = self.store.pending(runs)
            self.log(f"{len(todo)} target run(s) to do in shard {shard[0]}/{shard[1]}")
            for k, run in enumerate(todo, start=1):
                self.log(f"[{k}/{len(todo)}] {run.run_id}")
                result = self.target_run(run, splits[run.split], by_id, configs[run])
                self.store.write(run, result, settings[run])
                # the run's name again: parallel shards share a log, and their lines interleave
                self.log(f"    {run.run_id}: DSC {result['dsc']:.3f}  IoU {result['iou']:.3f}  "
                         f"ECE {result['ece']:.4f}  ({result['train_seconds']:.0f} s)")
        if stage in ("all", "report", "target"):
            return self.report()
        return None


#: what a run folder's training depends on (the run settings less how it is scored)
_TRAINING_KEYS = ("train_config", "inputs", "train_data")


def _folder_settings(folder: Path) -> dict[str, Any] | None:
    """The `_TRAINING_KEYS` settings a run folder recorded (``config.json``); None if none or unreadable."""
    try:
        record = json.loads((folder / "config.json").read_text())
        train_config = {**TrainConfig().to_dict(), **record["train_config"]}
        return {"train_config": _result_settings(train_config), "inputs": record.get("inputs", {}),
                "train_data": record["data"]["train_sha256"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _result_settings(config: TrainConfig | dict[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """A run's training settings less those that do not change its result (`NOT_RESULT_SETTINGS`) and `drop`."""
    settings = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in settings.items() if k not in NOT_RESULT_SETTINGS and k not in drop
            and not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])}


def _few(differences: Sequence[str], n: int = 4) -> str:
    """The first `n` differences, and how many more."""
    more = f"; {len(differences) - n} more" if len(differences) > n else ""
    return "; ".join(differences[:n]) + more


def _scoring_only(differences: Sequence[str]) -> bool:
    """True if only how a run is scored changed (its trained network stands)."""
    return bool(differences) and all(d.startswith("scored.") for d in differences)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"is not {what} ({exc}); remove it to redo what it belongs to") from None
    if not isinstance(value, dict):
        raise DataError(path, f"is not {what}; remove it to redo what it belongs to")
    return value


def _prediction_window(shape: Sequence[int], patch: Sequence[int] | None) -> tuple[int, ...]:
    """The whole volume, or windows of the training patch where it is smaller (both divisible by 8)."""
    if patch is None or any(int(p) % 8 for p in patch):
        return tuple(shape)
    return tuple(min(int(p), int(n)) for p, n in zip(patch, shape))


def _original_label(case: Any) -> np.ndarray:
    """The label of a prepared case on its file's grid (the experiment's whole-foreground policy)."""
    label_path = case.record.get("label_path")
    if label_path is None:
        raise DataError(case.case_id, "has no label file to score on the original grid")
    values, _, _ = read_label_values(label_path)
    return apply_label_policy(values, "whole")


def _settings_note(results: Sequence[dict[str, Any]], bayesian: set[str]) -> str:
    """The loss settings the results were made with, as the results record them (not as the config says); the
    KL weight of the `bayesian` methods only (a deterministic run records one it never used)."""
    parts = []
    for key, name in (("ce_reduction", "CE reduction"), ("kl_weight", "KL weight")):
        methods = [m for m in dict.fromkeys(r["method"] for r in results) if key != "kl_weight" or m in bayesian]
        if not methods:
            continue
        values = {m: sorted({str(r.get(key)) for r in results if r["method"] == m}) for m in methods}
        if len({v for vs in values.values() for v in vs}) == 1:
            parts.append(f"{name} {next(iter(values.values()))[0]}")
        else:
            parts.append(f"{name} " + ", ".join(f"{m} {'/'.join(v)}" for m, v in values.items()))
    return ", ".join(parts)


def _grid_note(results: Sequence[dict[str, Any]]) -> str:
    grids = {r.get("score_grid", "preprocessed") for r in results}
    where = {"preprocessed": "the preprocessed grid (the network's input)",
             "original": "each image's original grid (predictions mapped back)"}
    return "DSC and IoU computed on " + " and ".join(where.get(g, str(g)) for g in sorted(grids))


def _figure_slice(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a figure slice file (plain arrays only, within `FIGURE_SLICE_LIMITS`: a pickle is refused,
    never run)."""
    try:
        return load_npz(path, FIGURE_SLICE_LIMITS, DataError)
    except DataError as exc:
        raise DataError(path, f"is not a figure slice of this experiment ({exc.problem}); remove it and its result "
                              "to redo that run") from None


@contextmanager
def _naming(where: str) -> Iterator[None]:
    """Say in which part of the experiment's configuration a setting (or a file it names) was refused."""
    try:
        yield
    except (ConfigError, PluginError, CheckpointError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
