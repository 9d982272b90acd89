"""A training run's folder: its checkpoint and its log, read and written so that resuming is safe.

``checkpoint.pt`` (format ``bayesprior.train-checkpoint/1``, plain types only) holds the model payload,
optimiser, scheduler, gradient scaler and RNG states, epoch, minimum, whether the run finished, the
settings (`TrainConfig`, paths made portable), the ``data`` it trains on (case ids and a SHA-256 of the
cases' contents) and the SHA-256 of the files it starts from (``inputs``: source model, prior file); the
versions and command line that wrote it are recorded too, for `bayesprior info`, and never compared, as is
the history of every command that trained the folder (``commands``: the first and every resumption, with the
epoch it started from, its epoch limit and when it started; `command_history`).

A run is resumed only when all of these match the run asked for; a path may differ (a moved or copied
experiment folder), the content behind it may not. ``log.jsonl`` has one line per epoch; a line torn by
a kill is dropped on resume, as are lines of epochs after the checkpoint's.
"""
from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from ..hashing import cases_sha256, file_sha256
from ..safe_load import load_plain
from ..version import __version__, command_line
from .config import TrainConfig

CHECKPOINT_FORMAT = "bayesprior.train-checkpoint/1"
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "rng", "epoch", "minimum", "train_config")
#: settings that may change between a run and its resumption without changing its result
RESUMABLE_KEYS = ("max_epochs", "progress", "device", "zoo_dir", "skip_nonfinite_loss",
                  # SWAG moments are collected after training, from its end: a finished run may add them
                  "swag_epochs", "swag_rank", "swag_lr")
#: settings that name files: compared by the SHA-256 of their content, not by their path
FILE_KEYS = ("source", "prior_path")
PATH_KEYS = FILE_KEYS + ("zoo_dir",)


# ------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's random states, as plain types (numpy's key array as a tensor)."""
    numpy_state = np.random.get_state()
    if not isinstance(numpy_state, tuple):  # a dict: the global generator is not MT19937 (set_bit_generator)
        raise ConfigError(f"NumPy's global random generator is a {numpy_state.get('bit_generator')}; a run's "
                          "random state can be saved only with NumPy's default MT19937")
    name, keys, position, has_gauss, cached = numpy_state
    state = {"python": random.getstate(),
             "numpy": [str(name), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss),
                       float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the states `rng_state` returned."""
    random.setstate(state["python"])
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------- what a run is
def data_record(train_cases: Sequence[Any], val_cases: Sequence[Any] | None) -> dict[str, Any]:
    """The case ids a run trains and validates on, and a SHA-256 of their contents."""
    return {"train_cases": [str(c.case_id) for c in train_cases],
            "val_cases": [str(c.case_id) for c in val_cases or []],
            "train_sha256": cases_sha256(train_cases), "val_sha256": cases_sha256(val_cases or [])}


def input_files(config: TrainConfig) -> dict[str, str]:
    """SHA-256 of the files a run starts from (source model, prior file), by setting name."""
    return {key: file_sha256(getattr(config, key)) for key in FILE_KEYS
            if getattr(config, key) is not None and Path(getattr(config, key)).is_file()}


def portable_settings(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """`config` as a dict whose paths are relative to `run_dir` where they lie inside it, else absolute,
    so that a record read after the folder has moved still says where things are."""
    settings = config.to_dict()
    root = run_dir.resolve()
    for key in PATH_KEYS:
        if settings.get(key) is not None:
            path = Path(settings[key]).resolve()
            settings[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    return settings


def command_history(state: Mapping[str, Any] | None, from_epoch: int, max_epochs: int) -> list[dict[str, Any]]:
    """The commands that trained a run folder, oldest first: those the checkpoint `state` records (None: a new
    run), then this session's (the running command, the epoch it starts from, its epoch limit, when it
    started, the bayesprior version). A checkpoint of an older version recorded only its last command."""
    earlier: list[dict[str, Any]] = []
    if state is not None:
        recorded = state.get("commands")
        if isinstance(recorded, list):
            earlier = [dict(entry) for entry in recorded if isinstance(entry, dict)]
        else:
            earlier = [{"command": state.get("command") or "not recorded", "to_epoch": state.get("epoch")}]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return [*earlier, {"command": command_line(), "from_epoch": int(from_epoch), "max_epochs": int(max_epochs),
                       "started": now, "bayesprior_version": __version__}]


# -------------------------------------------------------------------------------- checkpoint
def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, checked for its format and keys. Raises `CheckpointError` naming it."""
    try:
        state = load_plain(path, "a training checkpoint")
    except CheckpointError as exc:
        if "plain types" in exc.problem:  # a pickle payload: refused as it is
            raise
        raise CheckpointError(path, f"{exc.problem}; was it cut short (a full disk, a copy)? Remove it to start "
                                    "the run afresh") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(path, f"not a training checkpoint (expected {CHECKPOINT_FORMAT!r}); "
                                    "remove it to start the run afresh")
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(path, f"training checkpoint lacks {missing}; remove it to start the run afresh")
    return state


def check_resumable(state: Mapping[str, Any], path: Path, config: TrainConfig, data: Mapping[str, Any],
                    inputs: Mapping[str, str]) -> None:
    """Raise `ConfigError` unless the checkpoint `state` was written by the run that `config`, `data`
    and `inputs` describe (settings other than `RESUMABLE_KEYS` and paths, data, input file contents)."""
    hint = "use another run folder, or the same settings and data"
    by_content = "inputs" in state  # older checkpoints recorded paths only
    ignored = RESUMABLE_KEYS + (PATH_KEYS if by_content else ())
    differences = _config_differences(state["train_config"], config.to_dict(), ignored)
    if differences == ["penalty_weight"] and state["train_config"].get("penalty_weight") is None:
        # recorded before runs wrote their weight out: it trained at its method's default of that version
        raise ConfigError(f"{path} was trained at the default penalty weight of an earlier bayesprior (l2sp's was "
                          f"0.01), which it did not record; it cannot be resumed at {config.penalty_weight}: use "
                          "another run folder")
    if differences:
        raise ConfigError(f"{path} was written with different settings ({', '.join(differences)}); {hint}")
    if by_content:
        changed = sorted(k for k in set(state["inputs"]) | set(inputs) if state["inputs"].get(k) != inputs.get(k))
        if changed:
            raise ConfigError(f"{path} was written from other files ({', '.join(changed)}: the content "
                              f"differs); {hint}")
    saved = state.get("data")
    if saved is not None and any(saved.get(k) != data[k] for k in ("train_sha256", "val_sha256")):
        raise ConfigError(f"{path} was written for other data ({_data_difference(saved, data)}); {hint}")


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], ignored: Sequence[str]) -> list[str]:
    # a setting an older checkpoint does not record had its default value then
    defaults = TrainConfig().to_dict()
    keys = (set(saved) | set(current)) - set(ignored)
    return sorted(k for k in keys if saved.get(k, defaults.get(k)) != current.get(k, defaults.get(k)))


def _data_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    for key, what in (("train_cases", "training"), ("val_cases", "validation")):
        before, now = list(saved.get(key, [])), list(current[key])
        if before != now:
            gone, new = sorted(set(before) - set(now)), sorted(set(now) - set(before))
            if not gone and not new:
                return f"the {what} cases are in another order"
            return f"{what} cases: {len(gone)} gone {gone[:3]}, {len(new)} new {new[:3]}"
    return "the same case ids, but their images or labels changed"


# ------------------------------------------------------------------------------------------ log
def read_log(path: Path, up_to_epoch: int) -> list[dict[str, Any]]:
    """The log's records up to `up_to_epoch`. A last line torn by a kill is dropped.

    Raises:
        CheckpointError: a damaged line before the last one.
    """
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (ValueError, TypeError, KeyError):
            if number == len(lines):
                break  # torn by a kill while it was written
            raise CheckpointError(path, f"line {number} is not a log record; remove the file to resume "
                                        "without the earlier epochs' log") from None
        if epoch <= up_to_epoch:
            records.append(record)
    return records


def log_text(records: Sequence[Mapping[str, Any]]) -> str:
    """The log file's text for `records`."""
    return "".join(json.dumps(r) + "\n" for r in records)
