"""The target stage (the paper's Algorithm 3): every split x train size x method trained on the target and scored.

Each run's training settings come from the config and the source stage's outputs; its result is keyed by the
settings it depends on (`settings_record`), so that a run made with other settings is refused, redone or only
rescored, and a run trained exactly as one of another experiment folder is copied in and only scored. A new
training setting of the target runs or a new way of starting a target run lands here.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from ..checkpoints import load_model, read_model_file
from ..data.preprocess import PreprocessConfig, recorded_config
from ..data.provenance import input_grid, preprocessing_summary
from ..errors import ConfigError
from ..hashing import cases_sha256, settings_differences, settings_sha256
from ..plugins import check_prior_fit_options
from ..training.config import TrainConfig
from ..training.run_folder import input_files
from ..training.trainer import train
from ..training.transfer_checks import preprocessing_warnings, prior_file_origins, source_model_origins
from .cases import ExperimentCases
from .config import check_method_settings, lists_as_tuples
from .context import ExperimentContext, Stage, naming
from .runs import RunSpec, Split, all_runs, make_splits, shard_runs
from .scoring import score_run
from .settings_record import (
    BAYESIAN_SETTINGS,
    TRAINING_KEYS,
    few_differences,
    folder_settings,
    read_record,
    result_settings,
    scoring_only,
)
from .superseded import set_aside


def check_reuse_folder(other: str | Path, out: Path) -> Path:
    """`other` as a folder to reuse finished runs from: another experiment folder with target runs.

    Raises:
        ConfigError: naming `other`.
    """
    other = Path(other)
    if not (other / "experiment.json").is_file() or not (other / "runs").is_dir():
        # experiment.json marks an experiment's --out; its source/ subfolder also has runs/, of source networks
        raise ConfigError(f"{other}: not an experiment folder with target runs (give the --out folder of an "
                          "experiment, which holds experiment.json and runs/)")
    if other.resolve() == out.resolve():
        raise ConfigError(f"{other}: runs are reused from another experiment folder, not this one")
    return other


class TargetStage(Stage):
    """The target runs of one experiment: their settings, their reuse, their training and their scores."""

    def __init__(self, context: ExperimentContext, data: ExperimentCases):
        super().__init__(context)
        self.data = data
        self._train_seconds: dict[RunSpec, float | None] = {}  # rescored or reused runs: their first training time

    def check_settings(self) -> None:
        """Before any data are made: each method's training settings with the shared ones (as `load_config` checks
        them, for a config made otherwise), per-method settings a deterministic method never reads, and the
        options of each learned prior the config fits.

        Raises:
            ConfigError, PluginError: naming the setting.
        """
        c = self.config
        check_method_settings(c)
        for name, method in self.methods.items():
            own = c.target_method_options.get(name, {})
            unused = [k for k in own if k in (*BAYESIAN_SETTINGS, "prior_init")]
            if not method.bayesian and unused:  # a base [target_training] value is shared; a per-method one is meant
                raise ConfigError(f"[target_training.per_method.{name}] sets {', '.join(unused)}, which "
                                  f"{method.name} (a deterministic method, no prior) never reads")
            if method.learned_prior and c.prior_file is None:
                with naming(f"[prior] ({name} prior)"):
                    check_prior_fit_options(method.name, self.context.prior_fit_options())

    def run(self, shard: tuple[int, int], source: Path | None, priors: dict[str, Path], rerun_changed: bool = False,
            reuse_from: Sequence[Path] = ()) -> None:
        """Train and score the target runs of `shard` that have no result yet, starting from `source` (the
        source network, if the methods need one) and `priors` (each method's prior file).

        Runs made with other settings are refused, or with `rerun_changed` set aside and made again
        (`settle_target_runs`); with `reuse_from` (experiment folders, in order), runs trained in one of them exactly
        as here are copied in first, from the first that has them.
        """
        cases = self.data.cases(self.config.target, "target")
        self.check_transfer_preprocessing(source, priors, cases)
        by_id = {c.case_id: c for c in cases}
        splits = make_splits(list(by_id), self.config)
        runs = shard_runs(all_runs(self.config), shard)
        configs = {run: self.run_train_config(run, splits[run.split], source, priors) for run in runs}
        settings = {run: self.run_settings(run, splits[run.split], by_id, configs[run]) for run in runs}
        self.settle_target_runs(runs, settings, rerun_changed)
        for other in reuse_from:
            self.reuse_finished_runs(self.store.pending(runs), settings, other)
        todo = self.store.pending(runs)
        self.log(f"{len(todo)} target run(s) to do in shard {shard[0]}/{shard[1]}")
        for k, run in enumerate(todo, start=1):
            self.log(f"[{k}/{len(todo)}] {run.run_id}")
            result = self.target_run(run, splits[run.split], by_id, configs[run])
            self.store.write(run, result, settings[run])
            # the run's name again: parallel shards share a log, and their lines interleave
            self.log(f"    {run.run_id}: DSC {result['dsc']:.3f}  IoU {result['iou']:.3f}  "
                     f"ECE {result['ece']:.4f}  ({result['train_seconds']:.0f} s)")

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

    def run_settings(self, run: RunSpec, split: Split, by_id: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
        """What `run`'s result depends on, the key of its result: its training settings, the digests of the
        files it starts from and of its training and scored cases, and how it is scored."""
        c = self.config
        scored = self.data.scored_ids(run, split)
        statistics = self.data.run_ct_statistics(run, split, by_id)  # with the data's digests, they fix what it sees
        settings = {"method": run.method, "train_config": result_settings(config), "inputs": input_files(config),
                    # the cases as the run trains on them: the digest its run folder records (`train`)
                    "train_data": cases_sha256(self.data.run_cases(split.train_cases(run.train_size), by_id,
                                                                   statistics)),
                    "scored": {"on": c.score_on, "cases": list(scored), "grid": c.score_grid, "samples": c.samples,
                               "data": settings_sha256([self.data.case_digest(by_id[i]) for i in scored])},
                    "preprocess": dict(c.preprocess) if statistics is None else
                    {**c.preprocess, "intensity_statistics": statistics}}
        if split.schedule:  # only then, so that results made before schedule_cases existed keep their settings
            settings["schedule_data"] = cases_sha256(self.data.run_cases(split.schedule, by_id, statistics))
        return settings

    def _legacy_settings(self, run: RunSpec) -> dict[str, Any] | None:
        """The settings a run folder recorded (``config.json``), in `run_settings`' terms; None if none."""
        return folder_settings(self.out / "runs" / run.run_id)

    def reuse_finished_runs(self, runs: Sequence[RunSpec], settings: dict[RunSpec, dict[str, Any]],
                            other: Path) -> None:
        """Copy in the finished run folders of experiment folder `other` that were trained exactly as runs of
        `runs` are (training settings, input files' digests, training cases' digest), so that those runs are
        only scored here: the networks of a tuning grid, scored on validation cases there, are scored on the
        test set here without training them again (on CPU, training again would give the same weights)."""
        trained: dict[str, Path] = {}
        for record in sorted((Path(other) / "runs").glob("*/config.json")):
            folder = record.parent
            recorded = folder_settings(folder)
            if recorded is not None and (folder / "model.pt").is_file() and (folder / "checkpoint.pt").is_file():
                trained.setdefault(settings_sha256(recorded), folder)
        unstarted = [run for run in runs if not self.store.done(run) and not (self.out / "runs" / run.run_id).exists()]
        reused = 0
        for run in unstarted:
            target = self.out / "runs" / run.run_id
            found = trained.get(settings_sha256({k: settings[run][k] for k in TRAINING_KEYS}))
            if found is None:
                continue
            reused += 1
            partial = target.parent / f".{run.run_id}.reuse.tmp"
            shutil.rmtree(partial, ignore_errors=True)  # a copy a kill interrupted
            shutil.copytree(found, partial)
            os.replace(partial, target)
            earlier = Path(other) / "results" / f"{found.name}.json"
            if earlier.is_file():  # its training time, which resuming the finished run here does not measure
                self._train_seconds[run] = read_record(earlier, "a run result").get("train_seconds")
            self.log(f"{run.run_id}: trained exactly as {found}; reusing that network (scored here)")
        if unstarted and not reused:  # a folder given by mistake, or settings that differ from its runs'
            self.log(f"{other}: none of its {len(trained)} finished run(s) was trained exactly as one of the "
                     f"{len(unstarted)} run(s) still to start here; nothing reused from it")

    def settle_target_runs(self, runs: Sequence[RunSpec], settings: dict[RunSpec, dict[str, Any]],
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
                              f"({first.run_id}: {few_differences(differences)}); run again with --rerun-changed to "
                              f"{'rescore them' if all(map(scoring_only, changed.values())) else 'redo them'} "
                              "(the old results are kept in superseded/), or use another --out")
        for run, differences in changed.items():
            self._set_aside_run(run, differences)

    def _set_aside_run(self, run: RunSpec, differences: Sequence[str]) -> None:
        """Move `run`'s result, figure slice and predictions (and its run folder, unless only its scoring changed
        and its finished network can be rescored) under ``superseded/``."""
        stored = self.store.path(run)
        old = read_record(stored, "a run result") if stored.is_file() else {}
        digest = old.get("settings_sha256") or settings_sha256(self._legacy_settings(run) or "unrecorded")
        folder = self.out / "runs" / run.run_id
        # rescored only where `train` finds the finished run to resume, and so trains nothing
        rescore = (scoring_only(differences) and (folder / "model.pt").is_file()
                   and (folder / "checkpoint.pt").is_file())
        outputs = {"result.json": stored, "figure.npz": self.store.folder / "figures" / f"{run.run_id}.npz",
                   "predictions": self.out / "predictions" / run.run_id}
        if rescore:  # the trained network stays: only its scores are made again
            self._train_seconds[run] = old.get("train_seconds")
        else:
            outputs["run"] = self.out / "runs" / run.run_id
        moved = set_aside(self.out, run.run_id, digest, outputs)
        self.log(f"{run.run_id}: settings changed ({few_differences(differences)}); "
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
        return self.context.train_config(**overrides)

    def target_run(self, run: RunSpec, split: Split, by_id: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
        """Train target run `run` with `config` and score it; its result (scores, cases, time, settings summary)."""
        c = self.config
        statistics = self.data.run_ct_statistics(run, split, by_id)
        train_cases = self.data.run_cases(split.train_cases(run.train_size), by_id, statistics)
        scored_ids = self.data.scored_ids(run, split)
        # with schedule cases their validation loss steers the learning rate (`train`), else the training loss
        schedule_cases = self.data.run_cases(split.schedule, by_id, statistics) if split.schedule else None
        start = time.perf_counter()
        model_path = train(config, train_cases, schedule_cases, run_dir=self.out / "runs" / run.run_id,
                           preprocess=recorded_config(train_cases), channel=self.config.target.channel)
        # the run's own training time, over every session it was resumed in; else this call's (or, for a run
        # rescored from an older version's model, its first result's)
        seconds = (read_model_file(model_path)["extra"].get("train_seconds") or self._train_seconds.get(run)
                   or time.perf_counter() - start)
        model = load_model(model_path)
        scores = score_run(model, self.data.run_cases(scored_ids, by_id, statistics), run, c, self.out, config.patch)
        schedule = {"schedule_cases": list(split.schedule)} if split.schedule else {}
        return {**scores, "train_cases": list(split.train_cases(run.train_size)), "scored_on": c.score_on,
                "test_cases": list(scored_ids), "score_grid": c.score_grid,
                "train_seconds": round(seconds, 1), "ce_reduction": config.ce_reduction,
                "kl_weight": config.kl_weight, **schedule}
