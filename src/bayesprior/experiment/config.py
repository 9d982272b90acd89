"""The experiment configuration (a TOML file), validated up front with errors that name the key.

Every value is type-checked when the file is read (``target_training.max_epochs must be an integer, got
'ten'``), before any data are made, and so are the target runs' penalty_weight and prior_options, against the methods'
plugins; the other checks that need the plugins (methods, architecture, a learned prior's fit options) follow
when the `Experiment` is built, still before any work. See `configs/paper.toml` for the
paper's settings and `benchmarks/transfer_cpu.toml` for a CPU scale.
"""
from __future__ import annotations

import inspect
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError, PluginError
from ..validation import Check, check_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

@dataclass(frozen=True)
class DatasetSpec:
    """A dataset folder in any registered layout, or a synthetic one made on first use."""

    path: str | None = None
    layout: str | None = None
    channel: str | None = None
    synthetic_kind: str | None = None  # "ms" | "tumour"
    synthetic_cases: int = 0
    synthetic_shape: tuple[int, int, int] | None = None
    synthetic_seed: int = 0
    allow_outside_paths: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    source: DatasetSpec
    target: DatasetSpec
    preprocess: dict[str, Any] = field(default_factory=dict)
    architecture: str = "unet3d"
    architecture_config: dict[str, Any] = field(default_factory=dict)
    # source model zoo
    source_seeds: tuple[int, ...] = (0,)
    source_restarts: int = 0
    source_max_epochs: int = 500
    source_val_fraction: float = 0.1
    source_patience: int = 10
    # any other `TrainConfig` setting of the source runs, e.g. init_scale, patch, augment, steps_per_epoch
    source_train_options: dict[str, Any] = field(default_factory=dict)
    # kernel prior: generic settings here, the prior's own (e.g. a VAE's latent_dim) in prior_options
    norm_threshold: float = 1e-2
    prior_max_epochs: int = 500
    prior_options: dict[str, Any] = field(default_factory=dict)
    # target training
    max_epochs: int = 500
    batch_size: int = 2
    ce_reduction: str = "sum"
    kl_weight: float = 1.0
    lr: float = 1e-3
    forward_mode: str = "lrt"
    patience: int = 10
    # where the posterior means of Bayesian methods start: "prior" (samples of a learned prior, the
    # original DWP's choice; He init for priors that are not learned), "source" (the source model,
    # as PR), or "random" (He init)
    prior_init: str = "prior"
    # any other `TrainConfig` setting of the target runs, e.g. steps_per_epoch, kl_warmup, amp
    target_train_options: dict[str, Any] = field(default_factory=dict)
    # settings of one method's target runs only ([target_training.per_method.dwp] kl_weight = ...); an
    # entry with ``method = "dwp"`` defines a variant, e.g. "dwp_beta1", listed in protocol.methods
    target_method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # protocol
    train_sizes: tuple[int, ...] = (5, 10, 15, 20)
    test_size: int = 50
    splits: int = 3
    methods: tuple[str, ...] = ("dwp", "pr", "prf", "ri")
    first_split_seed: int = 42
    samples: int = 0  # Monte-Carlo samples at test time for Bayesian methods (0: posterior mean)
    # "test": score on each split's test set; "validation": on the split's pool cases that the run did
    # not train on (for choosing settings without ever looking at the test set)
    score_on: str = "test"
    # pool cases set aside in every split (the last of its shuffled pool) whose loss steers every run's learning-rate
    # schedule, as the paper's validation set did; never trained on, never scored. 0: the training loss steers it
    schedule_cases: int = 0
    # explicit case lists: a fixed test set for every split (test_size is then its length), and the cases
    # the training subsets are drawn from (default: every other case); each split shuffles the pool. A split
    # file (`bayesprior train --split-file`'s JSON) gives both: its 'train' and 'test' lists
    test_cases: tuple[str, ...] = ()
    train_cases: tuple[str, ...] = ()
    split_file: str | None = None
    # where DSC/IoU are computed: "preprocessed" (the network's grid) or "original" (each image's own grid,
    # the prediction mapped back by the exact inverse of the preprocessing)
    score_grid: str = "preprocessed"
    # write every scored case's prediction as NIfTI with its image's affine (predictions/<run id>/)
    write_predictions: bool = False
    # an existing source model zoo ([source] models) and an existing prior file ([prior] file), absolute
    source_models: tuple[str, ...] = ()
    prior_file: str | None = None

    def base_method(self, name: str) -> str:
        """The training method behind a method name of the protocol (itself, or the variant's ``method``)."""
        return self.target_method_options.get(name, {}).get("method", name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _table(raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{key}] must be a table, got {type(value).__name__}")
    return value


_DATASET_KEYS = {"path": Check("str"), "layout": Check("str"), "channel": Check("str"), "synthetic": Check("table"),
                 "allow_outside_paths": Check("bool")}
_SYNTHETIC_KEYS = {"kind": Check("str", choices=("ms", "tumour")), "cases": Check("int", minimum=1),
                   "shape": Check("ints", length=3, minimum=8), "seed": Check("int")}


def _dataset(raw: dict, key: str, path: Path, optional: bool = False) -> DatasetSpec:
    """A dataset table; with `optional` (the source, when its models or prior are given) it may be empty."""
    t = dict(_table(raw, key))
    if isinstance(t.get("channel"), int) and not isinstance(t.get("channel"), bool):
        t["channel"] = str(t["channel"])  # a channel index
    _checked(t, _DATASET_KEYS, f"[{key}]", path)
    synth = t.get("synthetic")
    if optional and t.get("path") is None and synth is None:
        return DatasetSpec(channel=t.get("channel"))
    if (t.get("path") is None) == (synth is None):
        raise ConfigError(f"{path}: [{key}] needs exactly one of 'path' or 'synthetic'")
    if synth is not None:
        _checked(synth, _SYNTHETIC_KEYS, f"{key}.synthetic", path)
        if "kind" not in synth:
            raise ConfigError(f"{path}: [{key}].synthetic needs kind = 'ms' or 'tumour'")
        shape = synth.get("shape")
        return DatasetSpec(channel=t.get("channel"), synthetic_kind=synth["kind"],
                           synthetic_cases=int(synth.get("cases", 20)),
                           synthetic_shape=tuple(shape) if shape else None,
                           synthetic_seed=int(synth.get("seed", 0)))
    data_path = Path(t["path"])
    if not data_path.is_absolute():
        data_path = (path.parent / data_path).resolve()
    return DatasetSpec(path=str(data_path), layout=t.get("layout"), channel=t.get("channel"),
                       allow_outside_paths=bool(t.get("allow_outside_paths", False)))


def _source_models(raw: dict, path: Path) -> tuple[dict, tuple[str, ...]]:
    """``[source] models = [...]``: an existing zoo instead of source data; the rest of the table, and the
    models as absolute paths. Raises ConfigError naming the key or the missing file."""
    t = dict(_table(raw, "source"))
    if "models" not in t:
        return t, ()
    models = t.pop("models")
    _checked({"models": models}, {"models": Check("strs")}, "[source]", path)
    if not models:
        raise ConfigError(f"{path}: [source] models must list at least one model file")
    if t.get("path") is not None or t.get("synthetic") is not None:
        raise ConfigError(f"{path}: [source] gives models (an existing zoo) and data to train one; give one of them")
    return t, tuple(str(_existing_file(m, "[source] models", path)) for m in models)


def _split_file_cases(kwargs: dict[str, Any], path: Path) -> dict[str, Any]:
    """``[protocol] split_file``: its 'train' list as train_cases and 'test' as test_cases. Raises ConfigError
    naming the key: a bad file, lists given twice, or 'val' cases (an experiment validates on the pool)."""
    from ..training.splits import read_split_file  # on first use, as the preprocessing below

    file = _existing_file(kwargs["split_file"], "protocol.split_file", path)
    if kwargs.get("test_cases") or kwargs.get("train_cases"):
        raise ConfigError(f"{path}: protocol.split_file and protocol.test_cases/train_cases both list cases; "
                          "give one of them")
    try:
        split = read_split_file(file)
    except DataError as exc:
        raise ConfigError(f"{path}: protocol.split_file: {exc}") from None
    if split.val:
        raise ConfigError(f"{path}: protocol.split_file: {file} lists 'val' cases; an experiment validates on "
                          "the pool cases a run does not train on (protocol.score_on = 'validation')")
    return {"split_file": str(file), "train_cases": split.train, "test_cases": split.test}


def _names_prior_file(raw: dict) -> bool:
    prior = raw.get("prior")
    return isinstance(prior, dict) and prior.get("file") is not None


def _existing_file(name: str, key: str, path: Path) -> Path:
    """`name` relative to the config file's folder, which must be a file. Raises ConfigError naming `key`."""
    file = Path(name).expanduser()
    if not file.is_absolute():
        file = (path.parent / file).resolve()
    if not file.is_file():
        raise ConfigError(f"{path}: {key}: {file} is not a file")
    return file


def _checked(settings: dict, checks: dict[str, Check], where: str, path: Path) -> None:
    try:
        check_settings(settings, checks, where)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# section -> key -> (ExperimentConfig attribute, check)
_SECTIONS: dict[str, dict[str, tuple[str, Check]]] = {
    "source_training": {"seeds": ("source_seeds", Check("ints", minimum=0)),
                        "restarts": ("source_restarts", Check("int", minimum=0)),
                        "max_epochs": ("source_max_epochs", Check("int", minimum=1)),
                        "val_fraction": ("source_val_fraction", Check("number", minimum=0, below=1)),
                        "patience": ("source_patience", Check("int", minimum=0))},
    "prior": {"file": ("prior_file", Check("str")),
              "norm_threshold": ("norm_threshold", Check("number", minimum=0)),
              "max_epochs": ("prior_max_epochs", Check("int", minimum=1)),
              "options": ("prior_options", Check("table"))},
    "target_training": {"max_epochs": ("max_epochs", Check("int", minimum=1)),
                        "batch_size": ("batch_size", Check("int", minimum=1)),
                        "ce_reduction": ("ce_reduction", Check("str", choices=("sum", "mean"))),
                        "kl_weight": ("kl_weight", Check("number", minimum=0)),
                        "lr": ("lr", Check("number", above=0)),
                        "samples": ("samples", Check("int", minimum=0)),
                        "forward_mode": ("forward_mode", Check("str", choices=("lrt", "sample"))),
                        "patience": ("patience", Check("int", minimum=0)),
                        "prior_init": ("prior_init", Check("str", choices=("prior", "source", "random")))},
    "protocol": {"train_sizes": ("train_sizes", Check("ints", minimum=1)),
                 "test_size": ("test_size", Check("int", minimum=1)),
                 "splits": ("splits", Check("int", minimum=1)),
                 "methods": ("methods", Check("strs")),
                 "first_split_seed": ("first_split_seed", Check("int")),
                 "score_on": ("score_on", Check("str", choices=("test", "validation"))),
                 "schedule_cases": ("schedule_cases", Check("int", minimum=0)),
                 "test_cases": ("test_cases", Check("strs")),
                 "train_cases": ("train_cases", Check("strs")),
                 "split_file": ("split_file", Check("str")),
                 "score_grid": ("score_grid", Check("str", choices=("preprocessed", "original"))),
                 "write_predictions": ("write_predictions", Check("bool"))},
    "architecture": {"name": ("architecture", Check("str")), "config": ("architecture_config", Check("table"))},
}
_PREPROCESS_KEYS = {"crop_nonzero": Check("bool"), "shape": Check("ints", length=3, minimum=1, optional=True),
                    "resample_shape": Check("ints", length=3, minimum=1, optional=True),
                    "spacing": Check("numbers", length=3, above=0, optional=True),
                    "intensity": Check("str"), "divisible_by": Check("int", minimum=1),
                    "label_resampling": Check("str")}


def parse_config(raw: dict[str, Any], path: Path = Path("<config>")) -> ExperimentConfig:
    """Validate a parsed TOML document into an `ExperimentConfig`.

    Raises:
        ConfigError: an unknown section or key, or a value of the wrong type or range; the message names
            the file and the key (``target_training.max_epochs must be an integer, got 'ten'``).
    """
    known = {"source", "target", "preprocess", *_SECTIONS}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {sorted(unknown)} (known: {sorted(known)})")
    source_table, source_models = _source_models(raw, path)
    kwargs: dict[str, Any] = {"source": _dataset({**raw, "source": source_table}, "source", path,
                                                 optional=bool(source_models) or _names_prior_file(raw)),
                              "target": _dataset(raw, "target", path), "preprocess": _preprocess(raw, path),
                              "source_models": source_models}
    for section, keys in _SECTIONS.items():
        t = _table(raw, section)
        if section == "target_training" and "per_method" in t:
            kwargs["target_method_options"] = _per_method_options(t["per_method"], path)
            t = {k: v for k, v in t.items() if k != "per_method"}
        if section in _TRAINING_SECTIONS:  # other TrainConfig settings pass through to the runs
            options = {k: v for k, v in t.items() if k not in keys}
            if section == "source_training":
                options = {**SOURCE_DEFAULTS, **options}
            kwargs[_TRAINING_SECTIONS[section]] = _train_options(options, section, path)
            t = {k: v for k, v in t.items() if k in keys}
        _checked(t, {k: check for k, (_, check) in keys.items()}, section, path)
        for key, (attr, _) in keys.items():
            if key in t:
                value = t[key]
                kwargs[attr] = tuple(value) if isinstance(value, list) else value
    if kwargs.get("prior_file") is not None:
        kwargs["prior_file"] = str(_existing_file(kwargs["prior_file"], "[prior] file", path))
    if kwargs.get("split_file") is not None:
        kwargs.update(_split_file_cases(kwargs, path))
    config = ExperimentConfig(**kwargs)
    _check(config, path)
    return config


def _preprocess(raw: dict, path: Path) -> dict[str, Any]:
    # imported on first use: every command imports this module (through the CLI's --shard type), and the
    # data and training packages bring nibabel, scipy and the trainer
    from ..data.preprocess import PreprocessConfig

    settings = dict(_table(raw, "preprocess"))
    spacing = settings.get("spacing")
    if isinstance(spacing, (int, float)) and not isinstance(spacing, bool):
        settings["spacing"] = [spacing] * 3  # one number for every axis, as `train --spacing 4.2`
    _checked(settings, _PREPROCESS_KEYS, "preprocess", path)
    try:
        PreprocessConfig(**lists_as_tuples(settings))
    except ConfigError as exc:
        raise ConfigError(f"{path}: [preprocess]: {exc}") from None
    return settings


def lists_as_tuples(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with its list values as tuples (TOML has no tuples; the settings' dataclasses want them)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# Source networks start small: every 3x3x3 conv of the U-Net sits behind a non-affine instance norm, so a
# 0.03 x He start changes only how far Adam moves the kernels relative to their size. From He init they stay
# where they started and the kernel prior learns an i.i.d. Gaussian (benchmarks/RESULTS.md, "Source recipe").
SOURCE_DEFAULTS: dict[str, Any] = {"init_scale": 0.03}
_TRAINING_SECTIONS = {"source_training": "source_train_options", "target_training": "target_train_options"}
# settings the experiment itself decides for every run
_RESERVED_TRAIN_KEYS = {"architecture", "architecture_config", "method", "source", "prior_path", "seed", "zoo_dir",
                        "init_from_prior", "progress", "restarts"}


def _train_options(options: dict[str, Any], section: str, path: Path, together: bool = True) -> dict[str, Any]:
    """Check extra `TrainConfig` settings of a training section: their types, then (with `together`) a
    `TrainConfig` with them. A per-method table is judged together with the shared one it completes, later
    (`check_method_settings`)."""
    from ..training.config import setting_checks  # on first use, as the preprocessing above

    checks = {k: v for k, v in setting_checks().items() if k not in _RESERVED_TRAIN_KEYS}
    bad = sorted(set(options) - set(checks))
    if bad:
        raise ConfigError(f"{path}: unknown key(s) {bad} in [{section}] (known: the experiment's own keys and "
                          f"the training settings {sorted(checks)})")
    _checked(options, checks, section, path)
    settings = lists_as_tuples(options)
    if together:
        _refuse_train_settings(settings, {}, dict.fromkeys(settings, section), f"[{section}]", path)
    return settings


def _refuse_train_settings(settings: dict[str, Any], fixed: dict[str, Any], table_of: dict[str, str],
                           tables: str, path: Path | str) -> None:
    """A ConfigError if `TrainConfig(**fixed, **settings)` refuses them, naming the setting (``TABLE.KEY``, the
    table where it was given from `table_of`) whose value alone is refused for the same reason, else `tables`.

    Naming only such a key matters: swag_epochs = 2 alone is refused against the default swag_rank 5, which would
    hide a given swag_rank = 1."""
    from ..training.config import TrainConfig

    problem = _refused(TrainConfig, {**fixed, **settings})
    if problem is None:
        return
    for key, value in settings.items():
        if _refused(TrainConfig, {**fixed, key: value}) == problem:
            raise ConfigError(f"{path}: {table_of[key]}.{key}: {problem}")
    raise ConfigError(f"{path}: {tables}: {problem}")


def _refused(make: Any, settings: dict[str, Any]) -> str | None:
    """Why `make(**settings)` refuses them, or None."""
    try:
        make(**settings)
    except ConfigError as exc:
        return str(exc)
    return None


def _per_method_options(per_method: Any, path: Path) -> dict[str, dict[str, Any]]:
    """``[target_training.per_method.<method>]`` tables: training settings for one method's runs."""
    if not isinstance(per_method, dict) or not all(isinstance(v, dict) for v in per_method.values()):
        raise ConfigError(f"{path}: [target_training.per_method] must hold one table per method")
    allowed = {"prior_init", "method"}  # the experiment's own; the rest are training settings
    out = {}
    for method, options in per_method.items():
        experiment_keys = {k: v for k, v in options.items() if k in allowed}
        rest = _train_options({k: v for k, v in options.items() if k not in allowed},
                              f"target_training.per_method.{method}", path, together=False)
        out[method] = {**experiment_keys, **rest}
    return out


def _check(c: ExperimentConfig, path: Path) -> None:
    """What the per-key checks cannot see: empty lists, repeats."""
    if not c.train_sizes:
        raise ConfigError(f"{path}: protocol.train_sizes must list at least one size")
    if not c.methods or len(set(c.methods)) != len(c.methods):
        raise ConfigError(f"{path}: protocol.methods must be a non-empty list without repeats, got {list(c.methods)}")
    if not c.source_seeds:
        raise ConfigError(f"{path}: source_training.seeds must list at least one seed")
    from ..training.splits import repeated_ids  # on first use, as the split file's reader

    for key in ("test_cases", "train_cases"):
        repeated = repeated_ids(getattr(c, key))
        if repeated:
            raise ConfigError(f"{path}: protocol.{key} lists {repeated[:5]}{' ...' if len(repeated) > 5 else ''} "
                              "more than once")
    both = sorted(set(c.test_cases) & set(c.train_cases))
    if both:
        raise ConfigError(f"{path}: protocol.test_cases and protocol.train_cases share {both[:5]}")
    unknown_methods = sorted(set(c.target_method_options) - set(c.methods))
    if unknown_methods:
        raise ConfigError(f"{path}: [target_training.per_method] names {unknown_methods}, which are not in "
                          f"protocol.methods {list(c.methods)}")
    for method, options in c.target_method_options.items():
        base = options.get("method", method)
        if not isinstance(base, str) or base in c.target_method_options and base != method:
            raise ConfigError(f"{path}: target_training.per_method.{method}.method must name a training method "
                              f"(ri, pr, prf or a prior), not another variant, got {base!r}")
        if options.get("prior_init", "prior") not in ("prior", "source", "random"):
            raise ConfigError(f"{path}: target_training.per_method.{method}.prior_init must be 'prior', 'source' "
                              f"or 'random', got {options['prior_init']!r}")
    _check_swag_epochs_given(c, path)
    check_method_settings(c, path)
    _check_method_options(c, path)
    _check_prior_layers(c, path)


def check_method_settings(c: ExperimentConfig, path: Path | str = "<config>") -> None:
    """Each listed method's training settings together, [target_training]'s with its own table's: what a
    `TrainConfig` refuses only for that method (weight_decay for a Bayesian one) would stop its runs after the
    source stage. Each table's types were checked when it was read (`_train_options`)."""
    for name in c.methods:
        own = {k: v for k, v in c.target_method_options.get(name, {}).items() if k not in ("method", "prior_init")}
        table = f"target_training.per_method.{name}"
        merged = lists_as_tuples({**c.target_train_options, **own})
        _refuse_train_settings(merged, {"method": c.base_method(name)},
                               {key: table if key in own else "target_training" for key in merged},
                               f"[target_training] with [{table}]", path)


def _check_swag_epochs_given(c: ExperimentConfig, path: Path) -> None:
    """swag_rank or swag_lr without swag_epochs: refused as `train` refuses them (a TrainConfig cannot tell a
    default swag_rank from a given one)."""
    runs: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [("source_training", "", {}, c.source_train_options)]
    for name in c.methods:
        runs.append((f"target_training.per_method.{name}", f" (method {name!r} runs none)",
                     c.target_method_options.get(name, {}), c.target_train_options))
    for table, which, own, shared in runs:
        settings = {**shared, **own}
        for key in ("swag_rank", "swag_lr"):
            if key in settings and not settings.get("swag_epochs"):
                where = table if key in own else table.split(".per_method.")[0]
                raise ConfigError(f"{path}: {where}.{key} has no effect without swag_epochs{which}; leave it out "
                                  "or set swag_epochs")


def _check_prior_layers(c: ExperimentConfig, path: Path) -> None:
    """prior_layers = "all" for a method whose prior is fitted per layer group (dwp), refused as its runs would
    refuse it (`check_prior_layers`), but before the source stage."""
    from ..plugins import prior_registry
    from ..training.methods import check_prior_layers

    for name in c.methods:
        own = c.target_method_options.get(name, {})
        base = c.base_method(name)
        if base not in prior_registry():
            continue  # a deterministic method: no prior, nothing to cover
        try:
            check_prior_layers(base, str({**c.target_train_options, **own}.get("prior_layers", "groups")))
        except ConfigError as exc:
            where = f"target_training.per_method.{name}" if "prior_layers" in own else "target_training"
            raise ConfigError(f"{path}: {where}.prior_layers (method {name!r}): {exc}") from None


def _check_method_options(c: ExperimentConfig, path: Path) -> None:
    """A target run's penalty_weight and prior_options, which its method would refuse only when the run starts,
    after the source stage: checked against each listed method's row of the method table (the plugins)."""
    given = [c.target_train_options, *c.target_method_options.values()]
    if not any("penalty_weight" in t or "prior_options" in t or t.get("swag_epochs") for t in given):
        return  # the plugins are loaded only when needed
    from ..plugins import method_registry, prior_source_file
    from ..training.methods import training_method

    rows = {}
    for name in c.methods:
        try:
            rows[name] = training_method(c.base_method(name))
        except (ConfigError, PluginError) as exc:
            raise ConfigError(f"{path}: protocol.methods: {exc}") from None
    with_penalty = [name for name, row in rows.items() if row.penalty]
    shared = "; [target_training] is shared by every method in protocol.methods: give it in [target_training.per_method."
    shared_hint = shared + "NAME] of the method(s) it is meant for"
    # where to move it: only if some listed method takes a penalty (else it would be refused there too)
    penalty_hint = "" if not with_penalty else shared + f"{with_penalty[0]}]" if len(with_penalty) == 1 else shared_hint
    for name, row in rows.items():
        own = c.target_method_options.get(name, {})
        table = f"target_training.per_method.{name}"
        if not row.penalty:
            where = table if "penalty_weight" in own else "target_training"
            if "penalty_weight" in own or "penalty_weight" in c.target_train_options:
                raise ConfigError(
                    f"{path}: {where}.penalty_weight has no effect on method {name!r}, which adds no penalty "
                    f"(methods with one: {', '.join(method_registry().names()) or 'none installed'}; listed here: "
                    f"{', '.join(with_penalty) or 'none'}){penalty_hint if where == 'target_training' else ''}")
        if row.bayesian and {**c.target_train_options, **own}.get("swag_epochs"):  # else refused after training
            where = table if "swag_epochs" in own else "target_training"
            raise ConfigError(f"{path}: {where}.swag_epochs: SWAG collects the moments of a plain network; method "
                              f"{name!r} is Bayesian and has a posterior of its own")
        if row.bayesian:  # a deterministic method never reads prior_options (refused per method when built)
            options = own.get("prior_options", c.target_train_options.get("prior_options"))
            if options:
                where = table if "prior_options" in own else "target_training"
                if "path" in options and (row.learned_prior or prior_source_file(row.name)):
                    its_file = ("the fitted prior ([prior] file = ... to give one of your own)" if row.learned_prior
                                else f"the source run's {prior_source_file(row.name)}")
                    raise ConfigError(f"{path}: {where}.prior_options.path: the experiment gives prior {row.name!r} its "
                                      f"file, {its_file}; leave path out")
                try:
                    _check_prior_options(row.name, options)
                except ConfigError as exc:
                    raise ConfigError(f"{path}: {where}.prior_options: {exc}"
                                      f"{shared_hint if where == 'target_training' else ''}") from None


def _check_prior_options(prior: str, options: dict[str, Any]) -> None:
    """The options a run gives the prior `prior`: their names as `create_prior` binds them (a misspelt one is
    refused naming the accepted ones), and their values: a prior that reads no file by making it, one that reads a
    file by its registered ``check_options`` (if it has one).

    Raises:
        ConfigError: naming the prior and the option.
    """
    from ..plugins import check_arguments, create_prior, prior_registry

    entry = prior_registry().get(prior)
    try:
        parameters = inspect.signature(entry.obj).parameters
    except (TypeError, ValueError):
        return  # no signature to check against: the prior itself will judge its options
    # the run gives a prior more than its options (its file, its layer group: `prior_rules`): stand-ins for what
    # the factory requires, so that only an option it does not take is refused here
    required = {n: None for n, p in parameters.items() if n not in options and p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    check_arguments(entry.obj, {**required, **options}, f"prior {prior!r}")
    reads_files = bool(required or {"path", "group"} & set(parameters)
                       or {"fit", "source_file", "per_group"} & {k for k, v in entry.extras.items() if v})
    if not reads_files:
        create_prior((prior, options))  # a cheap prior judges its own values now (scale = "x")
    elif (check := entry.extras.get("check_options")) is not None:
        check(options)  # the values of a prior that reads a file, without that file (chunk_size = "x")


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file. Raises ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such experiment configuration file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return parse_config(raw, path)


# the methods' properties live in one table now (`bayesprior.training.methods`); this alias goes in 0.3
