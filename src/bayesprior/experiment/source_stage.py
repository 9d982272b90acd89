"""The source stage (the paper's Algorithm 2): source networks -> harvested kernels -> fitted priors.

It trains the source zoo (or takes one given by ``[source] models``), records the settings it was made with
(``source/settings.json``, refused or set aside when they change), harvests the zoo's kernels once, fits every
learned prior the methods need with its held-out structure report, and finds the priors a source run writes
beside its network (SWAG's ``swag.pt``). A new training setting of the source runs or a new kind of prior from
the source lands here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence, cast

from ..atomic import atomic_write_json, atomic_write_text
from ..checkpoints import read_model_file
from ..data.preprocess import recorded_config
from ..errors import ConfigError
from ..hashing import cases_sha256, file_sha256, settings_differences, settings_sha256
from ..kernel_structure import HELDOUT_FRACTION, structure_rows, structure_table, structure_warnings
from ..kernels import KernelBank, harvest_kernels
from ..plugins import prior_fitter, prior_registry, prior_source_file, prior_source_setting
from ..training.config import TrainConfig
from ..training.splits import validation_split
from ..training.trainer import train
from .cases import ExperimentCases
from .context import ExperimentContext, Stage, naming
from .settings_record import BAYESIAN_SETTINGS, few_differences, read_record, result_settings
from .superseded import set_aside


class SourceStage(Stage):
    """The source networks of one experiment and the priors learned from them or written beside them."""

    def __init__(self, context: ExperimentContext, data: ExperimentCases):
        super().__init__(context)
        self.data = data

    def check_training_settings(self) -> None:
        """Build the source runs' settings (``[source_training]``) before any data are made.

        Raises:
            ConfigError: naming the setting.
        """
        with naming("[source_training]"):
            self.context.train_config(target=False, method="ri", **self.config.source_train_options)

    def check_source_settings(self) -> None:
        """What the source stage needs, before any data are made: a ``[prior] file`` serves one kind of learned
        prior, a method whose prior is a file the source run writes has a source run that writes it, every
        ``[source] models`` file is a model file, and a source is given where a method needs one.

        Raises:
            ConfigError: naming the setting.
        """
        c = self.config
        learned = self.learned_prior_methods()
        if c.prior_file is not None and len({prior_fitter(m) for m in learned}) != 1:
            raise ConfigError(f"[prior] file serves the methods that learn one kind of prior; protocol.methods has "
                              f"{len(learned)} ({', '.join(learned) or 'none'})")
        for prior, file_name in self.source_file_methods().items():
            setting = prior_source_setting(prior)
            if c.source_models:  # the first model is the source of PR and of these priors: its file is read now
                self._source_file(Path(c.source_models[0]), prior, file_name)
            elif not (setting and c.source_train_options.get(setting)):
                raise ConfigError(f"method {prior!r} reads its prior from {file_name}, beside each source run's "
                                  f"model.pt: {self._how_to_write(prior, file_name)}")
        for model in c.source_models:  # an existing zoo is read before any work: a bad file is named now
            with naming("[source] models"):
                read_model_file(model)
        if self.needs_source() and not c.source_models and c.source.path is None and c.source.synthetic_kind is None:
            raise ConfigError("[source] needs path, synthetic or models: a method in protocol.methods starts from "
                              "the source models or learns its prior from them")

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

    def run(self, shard: tuple[int, int], stage: str, rerun_changed: bool) -> tuple[Path, dict[str, Path]] | None:
        """Do what is not done yet of the source stage: the source network PR and PRf start from and each
        method's prior file; None while source networks of other shards are still training.

        With `stage` ``'source'`` only the source networks of `shard` are trained here.

        Raises:
            ConfigError: parallel target shards before the source stage is finished, or source settings changed
                (see `settle_source`).
        """
        if stage == "target" and shard[1] > 1 and not self.source_done():
            raise ConfigError(f"{self.out}: the source stage is not finished; run --stage source (with every "
                              "--shard i/n it was started with) before parallel target shards")
        self.settle_source(shard, rerun_changed)
        finals, zoo = self.source_models(shard if stage == "source" else (0, 1))
        missing = [p for p in finals if not p.is_file()]
        if missing:  # other shards' source networks are still training
            self.log(f"{len(missing)} source model(s) of other shards not finished yet; run --stage source "
                     "again once they are, to harvest the kernels and fit the priors")
            return None
        source = finals[0]  # Algorithm 2: PR and PRf start from one source network
        priors = {**self.fit_priors(zoo), **self.source_file_priors(source)}
        atomic_write_json({"priors": sorted(priors)}, self.out / "source" / "done.json")
        return source, priors

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
        train_cases, val = validation_split(self.data.cases(c.source, "source"), c.source_val_fraction,
                                            c.first_split_seed)
        zoo = self.out / "source" / "zoo"
        finals = []
        for k, seed in enumerate(c.source_seeds):
            run_dir = self.out / "source" / "runs" / f"seed{seed}"
            model = run_dir / "model.pt"
            unfinished = not model.is_file() or (k == 0 and any(not (run_dir / f).is_file()
                                                                for f in self.source_run_files()))
            if unfinished and k % shard[1] == shard[0]:
                self.log(f"source model seed {seed}: {len(train_cases)} training cases, "
                         f"{len(val)} validation, up to {c.source_max_epochs} epochs, {c.source_restarts} restart(s)")
                config = self.source_train_config(seed, zoo)
                train(config, train_cases, val or None, run_dir=run_dir,
                      preprocess=recorded_config(train_cases), channel=c.source.channel)  # with ct statistics
            finals.append(model)
        minima = sorted(zoo.glob("seed*/*.pt"))
        return finals, (minima or finals)

    def source_file_methods(self) -> dict[str, str]:
        """The priors of the listed methods that are read from a file beside a source run's model.pt, each with the
        file's name (e.g. ``{"swag": "swag.pt"}``)."""
        return {m.name: f for m in self.methods.values() if m.bayesian and (f := prior_source_file(m.name))}

    def source_run_files(self) -> list[str]:
        """The files beside a source run's model.pt that a method's prior is read from (e.g. ``swag.pt``)."""
        return sorted(set(self.source_file_methods().values()))

    def source_file_priors(self, source: Path) -> dict[str, Path]:
        """The prior file of each method whose prior is a file the source run wrote beside `source`.

        Raises:
            ConfigError: the file is missing (a zoo given by ``[source] models`` without it).
        """
        return {prior: self._source_file(source, prior, name) for prior, name in self.source_file_methods().items()}

    def _source_file(self, source: Path, prior: str, file_name: str) -> Path:
        """The file `file_name` of `prior` beside the source model `source`; a ConfigError naming it if missing."""
        path = source.parent / file_name
        if path.is_file():
            return path
        if not self.config.source_models:
            raise ConfigError(f"method {prior!r} needs {path}: {self._how_to_write(prior, file_name)}")
        setting = prior_source_setting(prior)
        written_by = f" (`train --{setting.replace('_', '-')}` writes it beside model.pt)" if setting else ""
        raise ConfigError(f"method {prior!r} reads its prior from {path}, beside the first of [source] models "
                          f"({source.name}), and there is none{written_by}")

    @staticmethod
    def _how_to_write(prior: str, file_name: str) -> str:
        """How a source run comes to hold the prior file `file_name` of `prior`: the setting its plugin named."""
        setting = prior_source_setting(prior)
        if setting is None:  # no setting of this library writes it: it comes with a given zoo
            return f"give [source] models whose folders hold it (no source training setting writes {file_name})"
        return (f"set [source_training] {setting} so that the source runs write it (`train "
                f"--{setting.replace('_', '-')}`)")

    def source_train_config(self, seed: int, zoo: Path) -> TrainConfig:
        """The settings of the source run of `seed`, its minima saved under `zoo`. Only the first seed's run
        collects SWAG moments: its model is the source of PR and of the priors read beside it, and the others'
        ``swag.pt`` would never be read (SWAG's epochs come after training and leave model.pt as it is)."""
        c = self.config
        options = dict(c.source_train_options)
        if seed != c.source_seeds[0]:
            for key in ("swag_epochs", "swag_rank", "swag_lr"):
                options.pop(key, None)
        return self.context.train_config(method="ri", seed=seed, max_epochs=c.source_max_epochs,
                                         restarts=c.source_restarts, patience=c.source_patience,
                                         zoo_dir=str(zoo / f"seed{seed}"), target=False, **options)

    def source_settings(self) -> dict[str, Any]:
        """What the source stage's outputs depend on: the zoo (its models' digests, or its training settings
        and data digest) and the prior (its file's digest, or its fit settings)."""
        c = self.config
        if c.source_models:
            zoo: dict[str, Any] = {"models": [file_sha256(m) for m in c.source_models]}
        else:
            train_config = result_settings(self.source_train_config(c.source_seeds[0], self.out),
                                           drop=("seed", *BAYESIAN_SETTINGS))
            zoo = {"train_config": train_config, "seeds": list(c.source_seeds), "val_fraction": c.source_val_fraction,
                   "split_seed": c.first_split_seed, "preprocess": dict(c.preprocess),
                   "data": cases_sha256(self.data.cases(c.source, "source"))}
        prior = ({"file": file_sha256(c.prior_file)} if c.prior_file is not None else
                 {"norm_threshold": c.norm_threshold,
                  **{k: v for k, v in self.context.prior_fit_options().items() if k != "progress"}})
        return {"zoo": zoo, "prior": prior}

    def settle_source(self, shard: tuple[int, int], rerun_changed: bool) -> None:
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
        stored = read_record(path, "the source stage's settings")
        changed = settings_differences(stored, settings)
        if not changed:
            return
        if not rerun_changed:
            raise ConfigError(f"{self.out / 'source'} was made with other source settings "
                              f"({few_differences(changed)}); run again with --rerun-changed to redo the source "
                              "stage (the old one is kept in superseded/), or use another --out")
        if shard[1] > 1:
            raise ConfigError(f"{self.out / 'source'} was made with other source settings "
                              f"({few_differences(changed)}); redo the source stage in one process first "
                              "(--stage source --rerun-changed, no --shard)")
        moved = set_aside(self.out, "source", settings_sha256(stored), self.out / "source")
        self.log(f"source settings changed ({few_differences(changed)}): the old source stage is in {moved}")
        atomic_write_json(settings, path)

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
            fit = cast(Callable[..., Any], prior_fitter(method))  # a learned prior's plugin gives fit (`methods`)
            # named after the first registered prior with this fit (dwp for dwp_anchored), so that configs with
            # either method share one file and its digest
            out = fitted.get(fit) or self.out / "source" / f"prior_{_first_prior_fitted_by(fit, method)}.pt"
            if not out.is_file():
                self.log(f"fitting the {method} prior on {bank_path.name}")
                scores = fit(str(bank_path), str(out), **self.context.prior_fit_options())
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


def _first_prior_fitted_by(fit: Callable[..., Any], method: str) -> str:
    """The first registered prior whose ``fit`` is `fit` (`method` itself when no other one is)."""
    return next((name for name in prior_registry().names() if prior_fitter(name) is fit), method)
