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

Each stage is its own module: `source_stage` (source networks, harvest, priors), `target_stage` (target runs,
their settings and reuse), `scoring` (a trained network on its cases), `report_stage` (tables and figures);
`cases` decides what each run sees, `settings_record` what outputs are keyed by, `superseded` where changed
ones go. `Experiment` builds them over one `context.ExperimentContext` and orders them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from ..atomic import atomic_write_json, remove_stale_temp_files
from ..errors import ConfigError
from ..locks import folder_lock
from .cases import ExperimentCases
from .config import ExperimentConfig
from .context import ExperimentContext
from .report_stage import write_report
from .runs import all_runs, shard_runs
from .source_stage import SourceStage
from .target_stage import TargetStage, check_reuse_folder

STAGES = ("all", "source", "target", "report")


class Experiment:
    """One experiment folder. `run()` does every stage that is not done yet.

    The stages share one `ExperimentContext` (configuration, folder, log, methods, results) and the target and
    source stages one `ExperimentCases`; this class builds them, has each check its settings before any data are
    made, and orders them: source stage, target stage, report.

    Raises:
        ConfigError, PluginError: a setting the config file's own checks cannot see (the architecture and its
            options, the source runs' training settings, each learned prior's options), naming it.
    """

    def __init__(self, config: ExperimentConfig, out_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.context = ExperimentContext(config, out_dir, progress, log)  # the methods and the architecture
        self.config, self.out, self.store = config, self.context.out, self.context.store
        self.data = ExperimentCases(self.context)
        self.source = SourceStage(self.context, self.data)
        self.target = TargetStage(self.context, self.data)
        # in this order, so that of two faults in a config the same one is named as before the stages were split
        self.source.check_training_settings()
        self.target.check_settings()
        self.source.check_source_settings()

    def report(self) -> str | None:
        """Write the report of the finished runs this config plans; its text (None while none has finished)."""
        return write_report(self.context)

    def run(self, shard: tuple[int, int] = (0, 1), stage: str = "all", rerun_changed: bool = False,
            reuse_from: str | Path | Sequence[str | Path] | None = None) -> str | None:
        """Do every stage of `stage` that is not done yet, for the target runs of `shard`; the report's text.

        Outputs made with settings other than the configuration's are refused (`ConfigError` naming what
        changed), or with `rerun_changed` set aside under ``superseded/`` and made again. With `reuse_from`
        (another experiment folder, or several: the first that has a run gives it), runs trained there exactly as
        here are copied in and only scored (`TargetStage.reuse_finished_runs`).

        The experiment folder is locked while it runs: exclusively, except for the shards of a sharded run
        (``n > 1``), which share it with each other; each training run also locks its own folder, so two
        processes never train in one. Temporary files a killed run left are removed first.

        Raises:
            FolderInUseError: another process holds the folder (or a run folder this one needs).
        """
        if stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
        others = [reuse_from] if isinstance(reuse_from, (str, Path)) else list(reuse_from or ())
        reuse_folders = tuple(check_reuse_folder(other, self.out) for other in others)
        shared = shard[1] > 1
        with folder_lock(self.out, "experiment folder", shared=shared):
            if shared:  # other shards write beside us: only our own runs' leftovers are ours to remove
                own = {f"{r.run_id}.{ending}" for r in shard_runs(all_runs(self.config), shard)
                       for ending in ("json", "npz")}
                for folder in (self.store.folder, self.store.folder / "figures"):
                    remove_stale_temp_files(folder, targets=own.__contains__)
            else:
                remove_stale_temp_files(self.out, recursive=True)
            return self._run_stages(shard, stage, rerun_changed, reuse_folders)

    def _run_stages(self, shard: tuple[int, int], stage: str, rerun_changed: bool = False,
                    reuse_from: Sequence[Path] = ()) -> str | None:
        """The stages of `stage` in their order, the folder locked: source, target (which takes the source network
        and the prior files the source stage made), report."""
        if stage != "report":
            self.data.check_case_lists()
        atomic_write_json(self.config.to_dict(), self.out / "experiment.json")
        source = None
        priors: dict[str, Path] = {}
        if stage in ("all", "source", "target") and self.source.needs_source():
            made = self.source.run(shard, stage, rerun_changed)
            if made is None:  # other shards' source networks are still training
                return None
            source, priors = made
        elif stage in ("all", "target"):
            priors = self.source.fit_priors([])  # an existing prior file, if the config gives one
        if stage == "source":  # make (and cache) the target data too, so parallel shards never race on it
            self.data.cases(self.config.target, "target")
        if stage in ("all", "target"):
            self.target.run(shard, source, priors, rerun_changed, reuse_from)
        if stage in ("all", "report", "target"):
            return self.report()
        return None
