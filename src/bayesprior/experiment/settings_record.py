"""What an experiment's outputs are keyed by, and how a change of it is told.

A run's result is keyed by the settings it depends on: its training settings less those that never change a
result, less those only Bayesian runs read (for the deterministic source runs), less those added after results
were first keyed while they stay at their default (so that older results stay valid); what a run folder
recorded stands in for the settings of a result written before results recorded theirs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from ..errors import DataError
from ..training.config import TrainConfig

#: run settings that do not change a run's result: left out of the settings a result is keyed by (the
#: files behind ``source`` and ``prior_path`` are keyed by their content instead)
NOT_RESULT_SETTINGS = ("progress", "device", "zoo_dir", "source", "prior_path")
#: settings only Bayesian runs read: left out of the (deterministic) source runs' settings
BAYESIAN_SETTINGS = ("kl_weight", "forward_mode", "kl_warmup", "prior_options", "log_variance_init",
                     "init_from_prior", "posterior_std_ratio", "prior_layers")
#: settings added after results were first keyed by their settings, with the default that reproduces the
#: runs made before they existed: left out of a result's key while at that default, so that results made
#: by an older bayesprior stay valid
LATER_SETTINGS = {"posterior_std_ratio": None, "penalty_weight": None, "swag_epochs": 0, "swag_rank": 5,
                  "swag_lr": None, "prior_layers": "groups", "lr_monitor": "loss"}
#: what a run folder's training depends on (the run settings less how it is scored)
TRAINING_KEYS = ("train_config", "inputs", "train_data")


def result_settings(config: TrainConfig | dict[str, Any], drop: Sequence[str] = ()) -> dict[str, Any]:
    """A run's training settings less those that do not change its result (`NOT_RESULT_SETTINGS`) and `drop`."""
    settings = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in settings.items() if k not in NOT_RESULT_SETTINGS and k not in drop
            and not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])}


def folder_settings(folder: Path) -> dict[str, Any] | None:
    """The `TRAINING_KEYS` settings a run folder recorded (``config.json``); None if none or unreadable."""
    try:
        record = json.loads((folder / "config.json").read_text())
        train_config = {**TrainConfig().to_dict(), **record["train_config"]}
        return {"train_config": result_settings(train_config), "inputs": record.get("inputs", {}),
                "train_data": record["data"]["train_sha256"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def few_differences(differences: Sequence[str], n: int = 4) -> str:
    """The first `n` differences, and how many more."""
    more = f"; {len(differences) - n} more" if len(differences) > n else ""
    return "; ".join(differences[:n]) + more


def scoring_only(differences: Sequence[str]) -> bool:
    """True if only how a run is scored changed (its trained network stands)."""
    return bool(differences) and all(d.startswith("scored.") for d in differences)


def read_record(path: Path, what: str) -> dict[str, Any]:
    """The JSON object stored at `path` (`what` it is, for the message).

    Raises:
        DataError: naming `path`, when it is no JSON object.
    """
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(path, f"is not {what} ({exc}); remove it to redo what it belongs to") from None
    if not isinstance(value, dict):
        raise DataError(path, f"is not {what}; remove it to redo what it belongs to")
    return value
