"""What the stages of one experiment share: its configuration, folder, log, training methods and results.

`ExperimentContext` is built once per experiment (`Experiment`); each stage is a `Stage` over it, so that a
stage reads ``self.config``, ``self.out`` and ``self.log`` as the experiment's own and never imports the
`Experiment` that orders the stages.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import CheckpointError, ConfigError, PluginError
from ..plugins import build_architecture
from ..training.config import TrainConfig
from ..training.methods import TrainingMethod, training_method, with_penalty_weight
from .config import ExperimentConfig
from .runs import ResultStore


class ExperimentContext:
    """One experiment folder's configuration, output folder, log, methods and result store.

    Building it checks what every stage relies on: each method's row of the method table, and the architecture
    with its options.

    Raises:
        ConfigError: naming the setting.
    """

    def __init__(self, config: ExperimentConfig, out_dir: str | Path, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.config = config
        self.out = Path(out_dir)
        self.progress = progress
        self.log = log
        self.store = ResultStore(self.out / "results")
        c = config
        with naming("protocol.methods"):  # the method table's row of every method
            self.methods: dict[str, TrainingMethod] = {m: training_method(c.base_method(m)) for m in c.methods}
        with naming("[architecture]"):
            build_architecture(c.architecture, **(dict(c.architecture_config) or {"in_channels": 1, "n_classes": 2}))

    def train_config(self, target: bool = True, **overrides: Any) -> TrainConfig:
        """The settings of a target run (or, with ``target=False``, the shared base of a source run); a
        ``method`` override may name a variant of protocol.methods (its base method trains)."""
        c = self.config
        if "method" in overrides:
            overrides["method"] = c.base_method(overrides["method"])
        base: dict[str, Any] = dict(architecture=c.architecture, architecture_config=dict(c.architecture_config) or
                    {"in_channels": 1, "n_classes": 2}, max_epochs=c.max_epochs, batch_size=c.batch_size,
                    ce_reduction=c.ce_reduction, kl_weight=c.kl_weight, lr=c.lr, forward_mode=c.forward_mode,
                    patience=c.patience,
                    progress=self.progress)
        if target:
            base.update(c.target_train_options)
        base.update(overrides)
        return with_penalty_weight(TrainConfig(**base))  # a result's settings say the weight it trained with

    def prior_fit_options(self) -> dict[str, Any]:
        """What a learned prior's ``fit`` gets: the generic settings and the prior's own options."""
        return {"max_epochs": self.config.prior_max_epochs, "seed": self.config.first_split_seed,
                "progress": self.progress, **self.config.prior_options}


class Stage:
    """A part of the experiment, with the shared context's configuration, folder, log, methods and results at
    hand (``self.config``, ``self.out``, ``self.log``, ``self.methods``, ``self.store``)."""

    def __init__(self, context: ExperimentContext):
        self.context = context
        self.config = context.config
        self.out = context.out
        self.log = context.log
        self.methods = context.methods
        self.store = context.store


@contextmanager
def naming(where: str) -> Iterator[None]:
    """Say in which part of the experiment's configuration a setting (or a file it names) was refused."""
    try:
        yield
    except (ConfigError, PluginError, CheckpointError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
