"""The paper's protocol end to end (Algorithms 2-3): data -> source zoo -> harvest -> prior -> target runs -> report.

Every stage writes its outputs atomically and is skipped when they exist, so a killed experiment
resumes where it stopped. Target runs are independent and can be split across machines with
`shard=(i, n)`; run the source stage once first (``--stage source``) when shards run in parallel.

Output folder::

    data/{source,target}/        synthetic datasets (when the config asks for them)
    cache/                       preprocessed cases
    source/runs/seed<k>/         source training runs;  source/zoo/*.pt  every minimum (harvested)
    source/bank.npz              harvested kernels;  source/prior_<method>.pt  fitted priors
    runs/<run id>/               target training runs
    results/<run id>.json        one result per finished run;  results/figures/<run id>.npz
    table.md, table.csv, dsc_vs_train_size.png, predictions.png, experiment.json
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..atomic import atomic_path, atomic_write_json, atomic_write_text, remove_stale_temp_files
from ..checkpoints import load_model
from ..data.preprocess import PreprocessConfig, prepare_dataset, recorded_config
from ..data.synth import synthesize_dataset
from ..errors import ConfigError, DataError, PluginError
from ..evaluation.scoring import CaseScores
from ..inference.prediction import PredictionSettings, predict_case
from ..kernel_structure import HELDOUT_FRACTION, structure_rows, structure_table, structure_warnings
from ..kernels import KernelBank, harvest_kernels
from ..locks import folder_lock
from ..plugins import build_architecture, check_prior_fit_options, prior_fitter
from ..training.config import TrainConfig
from ..training.methods import TrainingMethod, training_method
from ..training.splits import validation_split
from ..training.trainer import train
from .config import DatasetSpec, ExperimentConfig, lists_as_tuples
from .report import plot_dsc_vs_train_size, plot_predictions, write_tables
from .runs import ResultStore, RunSpec, Split, all_runs, make_splits, shard_runs

STAGES = ("all", "source", "target", "report")


class Experiment:
    """One experiment folder. `run()` does every stage that is not done yet."""

    def __init__(self, config: ExperimentConfig, out_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log
        self.store = ResultStore(self.out / "results")
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
            with _naming(f"[target_training] (method {name})"):
                self.train_config(method=name)
            if method.learned_prior:
                with _naming(f"[prior] ({name} prior)"):
                    check_prior_fit_options(method.name, self.prior_fit_options())

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
        if not marker.is_file():
            self.log(f"synthesising {spec.synthetic_cases} {spec.synthetic_kind} cases -> {folder}")
            start = time.perf_counter()
            synthesize_dataset(spec.synthetic_kind, spec.synthetic_cases, folder, shape=spec.synthetic_shape,
                               seed=spec.synthetic_seed)
            atomic_write_json({"kind": spec.synthetic_kind, "cases": spec.synthetic_cases,
                               "seconds": round(time.perf_counter() - start, 1)}, marker)
        return folder

    def cases(self, spec: DatasetSpec, name: str) -> list[Any]:
        folder = self.dataset_folder(spec, name)
        preprocess = PreprocessConfig(**lists_as_tuples(self.config.preprocess))
        kwargs = {k: v for k, v in (("layout", spec.layout), ("channel", spec.channel)) if v is not None}
        return prepare_dataset(folder, preprocess, cache_dir=self.out / "cache" / name,
                               allow_outside_paths=spec.allow_outside_paths, **kwargs)

    # ------------------------------------------------------------------------------ source
    def needs_source(self) -> bool:
        """Whether a method starts from the source model, learns its prior from it, or is told to start there."""
        c = self.config
        return any(m.needs_source or m.learned_prior or (m.bayesian and c.target_method_options.get(
            name, {}).get("prior_init", c.prior_init) == "source") for name, m in self.methods.items())

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
        # the same cases `bayesprior train --val-fraction F --seeds S` holds out for F and S = first_split_seed
        train_cases, val = validation_split(self.cases(c.source, "source"), c.source_val_fraction, c.first_split_seed)
        zoo = self.out / "source" / "zoo"
        finals = []
        for k, seed in enumerate(c.source_seeds):
            run_dir = self.out / "source" / "runs" / f"seed{seed}"
            model = run_dir / "model.pt"
            if not model.is_file() and k % shard[1] == shard[0]:
                self.log(f"source model seed {seed}: {len(train_cases)} training cases, "
                         f"{len(val)} validation, up to {c.source_max_epochs} epochs, {c.source_restarts} restart(s)")
                config = self.train_config(method="ri", seed=seed, max_epochs=c.source_max_epochs,
                                           restarts=c.source_restarts, patience=c.source_patience,
                                           zoo_dir=str(zoo / f"seed{seed}"), target=False,
                                           **c.source_train_options)
                train(config, train_cases, val or None, run_dir=run_dir,
                      preprocess=recorded_config(train_cases))  # with ct statistics, if any
            finals.append(model)
        minima = sorted(zoo.glob("seed*/*.pt"))
        return finals, (minima or finals)

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
        bank_path = self.out / "source" / "bank.npz"
        if not bank_path.is_file():
            self.log(f"harvesting kernels from {len(zoo)} source model(s)")
            bank = harvest_kernels([str(p) for p in zoo], norm_threshold=self.config.norm_threshold)
            bank.save(bank_path)
        else:
            bank = KernelBank.load(bank_path)
        priors = {}
        for method in methods:
            out = self.out / "source" / f"prior_{method}.pt"
            if not out.is_file():
                fit = prior_fitter(method)
                self.log(f"fitting the {method} prior on {bank_path.name}")
                scores = fit(str(bank_path), str(out), **self.prior_fit_options())
                if scores:  # held-out scores per group, by the register_priors contract
                    self.structure_report(bank, method, {g: float(v) for g, v in dict(scores).items()})
            priors[method] = out
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

    # ------------------------------------------------------------------------------ target
    def target_run(self, run: RunSpec, split: Split, by_id: dict[str, Any], source: Path | None,
                   priors: dict[str, Path]) -> dict[str, Any]:
        c = self.config
        method = self.methods[run.method]
        train_cases = [by_id[i] for i in split.train_cases(run.train_size)]
        scored_ids = split.test if c.score_on == "test" else split.unused_pool(run.train_size)
        if not scored_ids:
            raise ConfigError(f"score_on = 'validation' needs target cases beyond test_size + {run.train_size} "
                              "training cases to validate on")
        test_cases = [by_id[i] for i in scored_ids]
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
        start = time.perf_counter()
        model_path = train(self.train_config(**overrides), train_cases, None, run_dir=self.out / "runs" / run.run_id,
                           preprocess=recorded_config(train_cases))
        seconds = time.perf_counter() - start
        model = load_model(model_path)
        scores = self.score(model, test_cases, run)
        return {**scores, "train_cases": list(split.train_cases(run.train_size)), "scored_on": c.score_on,
                "test_cases": list(scored_ids),
                "train_seconds": round(seconds, 1), "ce_reduction": c.ce_reduction,
                "kl_weight": overrides.get("kl_weight", c.kl_weight)}

    def score(self, model: Any, cases: Sequence[Any], run: RunSpec) -> dict[str, Any]:
        """Per-case DSC/IoU and calibration (ECE, Brier, NLL, UEO) on the preprocessed test cases, averaged;
        the figure slice of the first case.

        The calibration is that of the foreground probability the method predicts with: the Monte-Carlo
        mean over ``samples`` weight samples (the posterior mean for 0) of a Bayesian network, the softmax
        of a deterministic one.
        """
        scores = CaseScores()
        for k, case in enumerate(cases):
            # whole-volume prediction, as the paper
            settings = PredictionSettings(roi=tuple(case.image.shape), samples=self.config.samples)
            probabilities = predict_case(model, case.image, settings)
            prediction = probabilities.argmax(0).astype(np.uint8)
            row = scores.add(case.case_id, prediction, case.label, probability=probabilities[1])
            if k == 0:
                self._save_figure_slice(run, case, prediction, row["dsc"])
        return {**scores.mean(), "per_case": scores.per_case(*scores.metrics())}

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
        results = self.store.read_all()
        if not results:
            return None
        note = (f"CE reduction '{c.ce_reduction}', KL weight {c.kl_weight}; "
                f"{len(all_runs(c)) - len(results)} run(s) not finished yet.")
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
    def run(self, shard: tuple[int, int] = (0, 1), stage: str = "all") -> str | None:
        """Do every stage of `stage` that is not done yet, for the target runs of `shard`; the report's text.

        The experiment folder is locked while it runs: exclusively, except for the shards of a sharded run
        (``n > 1``), which share it with each other; each training run also locks its own folder, so two
        processes never train in one. Temporary files a killed run left are removed first.

        Raises:
            FolderInUseError: another process holds the folder (or a run folder this one needs).
        """
        if stage not in STAGES:
            raise ConfigError(f"stage must be one of {STAGES}, got {stage!r}")
        shared = shard[1] > 1
        with folder_lock(self.out, "experiment folder", shared=shared):
            if shared:  # other shards write beside us: only our own runs' leftovers are ours to remove
                own = {f"{r.run_id}.{ending}" for r in shard_runs(all_runs(self.config), shard)
                       for ending in ("json", "npz")}
                for folder in (self.store.folder, self.store.folder / "figures"):
                    remove_stale_temp_files(folder, targets=own.__contains__)
            else:
                remove_stale_temp_files(self.out, recursive=True)
            return self._run_stages(shard, stage)

    def _run_stages(self, shard: tuple[int, int], stage: str) -> str | None:
        atomic_write_json(self.config.to_dict(), self.out / "experiment.json")
        source = None
        priors: dict[str, Path] = {}
        if stage in ("all", "source", "target") and self.needs_source():
            if stage == "target" and shard[1] > 1 and not self.source_done():
                raise ConfigError(f"{self.out}: the source stage is not finished; run --stage source (with every "
                                  "--shard i/n it was started with) before parallel target shards")
            finals, zoo = self.source_models(shard if stage == "source" else (0, 1))
            missing = [p for p in finals if not p.is_file()]
            if missing:  # other shards' source networks are still training
                self.log(f"{len(missing)} source model(s) of other shards not finished yet; run --stage source "
                         "again once they are, to harvest the kernels and fit the priors")
                return None
            source = finals[0]  # Algorithm 2: PR and PRf start from one source network
            priors = self.fit_priors(zoo)
            atomic_write_json({"priors": sorted(priors)}, self.out / "source" / "done.json")
        if stage == "source":  # make (and cache) the target data too, so parallel shards never race on it
            self.cases(self.config.target, "target")
        if stage in ("all", "target"):
            cases = self.cases(self.config.target, "target")
            by_id = {c.case_id: c for c in cases}
            splits = make_splits(list(by_id), self.config)
            todo = self.store.pending(shard_runs(all_runs(self.config), shard))
            self.log(f"{len(todo)} target run(s) to do in shard {shard[0]}/{shard[1]}")
            for k, run in enumerate(todo, start=1):
                self.log(f"[{k}/{len(todo)}] {run.run_id}")
                result = self.target_run(run, splits[run.split], by_id, source, priors)
                self.store.write(run, result)
                self.log(f"    DSC {result['dsc']:.3f}  IoU {result['iou']:.3f}  ECE {result['ece']:.4f}  "
                         f"({result['train_seconds']:.0f} s)")
        if stage in ("all", "report", "target"):
            return self.report()
        return None


def _figure_slice(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a figure slice file (plain arrays only: a pickle is refused, never run)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception as exc:
        raise DataError(path, f"is not a figure slice of this experiment ({type(exc).__name__}); remove it and "
                              "its result to redo that run") from None


@contextmanager
def _naming(where: str) -> Iterator[None]:
    """Say in which part of the experiment's configuration a setting was refused."""
    try:
        yield
    except (ConfigError, PluginError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
