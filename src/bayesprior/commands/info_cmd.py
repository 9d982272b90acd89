"""`bayesprior info FILE`: what a model file, training checkpoint, prior file or kernel bank is, before it is used.

Every file is read through the loaders that never run code a file carries (`bayesprior.safe_load`,
`KernelBank.load`); a file that is none of these kinds, or holds anything but plain types, is refused in one
line. What is shown is what the file records: older files record less (no command line, no case ids).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import click
import torch

from ..checkpoints import MODEL_FORMAT, read_model_file
from ..data.provenance import COMPARED_KEYS, describe_grid, describe_preprocessing
from ..errors import CheckpointError
from ..kernels import KernelBank
from ..safe_load import load_plain, looks_like_torch_file
from ..training.run_folder import CHECKPOINT_FORMAT, read_checkpoint
from ..training.swag import SWAG_FORMAT, read_swag_file

#: case ids shown per list; the rest are counted
MAX_CASE_IDS = 20
Rows = list[tuple[str, str]]


def describe_file(path: str | Path) -> Rows:
    """(label, text) rows that say what the file at `path` is and what it records.

    Raises:
        CheckpointError: naming the file, if it is missing, unreadable, holds more than plain types, or is no
            bayesprior model, checkpoint, prior file or kernel bank.
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path) and not looks_like_torch_file(path):  # by content, not name
        return _kernel_bank(KernelBank.load(path))
    payload = load_plain(path, "a bayesprior model, checkpoint or prior file", trust=False)
    found = payload.get("format") if isinstance(payload, dict) else None
    if found == MODEL_FORMAT:
        return _model(read_model_file(path, trust=False), path)
    if found == CHECKPOINT_FORMAT:
        return _checkpoint(read_checkpoint(path), read_model_file(path, trust=False), path)
    if isinstance(found, str) and found.startswith("bayesprior.") and "-prior/" in found:
        return _prior_file(payload)
    if found == SWAG_FORMAT:
        return _swag_file(read_swag_file(path))
    what = f"format {found!r}" if found is not None else f"a {type(payload).__name__} without a 'format'"
    raise CheckpointError(path, f"is not a bayesprior model, training checkpoint, prior file or kernel bank ({what})")


# ------------------------------------------------------------------------------------------- kinds
def _model(payload: Mapping[str, Any], path: Path) -> Rows:
    extra = payload.get("extra") or {}
    rows = [("format", f"{payload['format']}, a {payload['kind']} model"),
            *_written_by(payload.get("bayesprior_version") or extra.get("bayesprior_version"),
                         extra.get("torch_version"), extra.get("command")),
            *_command_history(extra.get("commands")),
            ("architecture", _architecture(payload.get("architecture"))),
            ("parameters", _parameter_count(payload["state_dict"]))]
    if payload["kind"] == "bayesian":
        rows += _priors(payload)
    rows += _training(extra)
    return rows


def _checkpoint(state: Mapping[str, Any], model: Mapping[str, Any], path: Path) -> Rows:
    rows = [("format", f"{state['format']}, a training checkpoint after epoch {state.get('epoch')}"
                       f"{' (finished)' if state.get('finished') else ''}")]
    versions = state.get("versions")
    if not isinstance(versions, dict):
        versions = {}
    model = dict(model, extra={**(model.get("extra") or {}), "command": state.get("command"),
                               "commands": state.get("commands"), "torch_version": versions.get("torch"),
                               "bayesprior_version": versions.get("bayesprior")})
    rows += [(label, text) for label, text in _model(model, path) if label != "format"]
    record = {"train_config": state.get("train_config"), "data": state.get("data"), "inputs": state.get("inputs")}
    have = {label for label, _ in rows}
    rows += [row for row in _training(record) if row[0] not in have]
    rows.insert(1, ("model", f"{model['format']}, {model['kind']}"))
    return rows


def _prior_file(payload: Mapping[str, Any]) -> Rows:
    groups = payload.get("groups") or {}
    provenance = payload.get("provenance") or {}
    settings = {k: payload[k] for k in ("kernel_size", "latent_dim", "ridge") if k in payload}
    if isinstance(payload.get("vae"), dict):
        settings["vae"] = payload["vae"]
    rows = [("format", f"{payload['format']}, a prior file"),
            *_written_by(payload.get("bayesprior_version"), None, payload.get("command")),
            ("settings", _mapping(settings))]
    if isinstance(provenance.get("command"), str) and provenance["command"]:
        rows.append(("bank command", provenance["command"]))
    for group, info in groups.items():
        info = info if isinstance(info, dict) else {}
        parts = [f"{info['n_kernels']:,} kernels" if isinstance(info.get("n_kernels"), int) else None,
                 f"{len(info['layers'])} layer(s)" if isinstance(info.get("layers"), list) else None,
                 f"best held-out ELBO {max(info['heldout_elbo']):.3f}" if info.get("heldout_elbo") else None]
        rows.append(("group", f"{group}: {', '.join(p for p in parts if p) or 'fitted'}"))
    rows += _bank_provenance(provenance, "fitted to kernels of")
    return rows


def _swag_file(payload: Mapping[str, Any]) -> Rows:
    params = payload["params"]
    return [("format", f"{payload['format']}, SWAG moments of a source network (the swag prior's file)"),
            *_written_by(payload.get("bayesprior_version"), payload.get("torch_version"), payload.get("command")),
            ("settings", _mapping({k: payload.get(k) for k in ("rank", "snapshots", "lr")})),
            ("source model", f"SHA-256 {payload.get('source_model_sha256', 'not recorded')}"),
            ("architecture", _architecture(payload.get("architecture"))),
            ("preprocessing", _mapping(payload["preprocess"]) if payload.get("preprocess") else "not recorded"),
            ("weights", f"{len(params)} tensors, {sum(e['mean'].numel() for e in params.values()):,} values")]


def _kernel_bank(bank: KernelBank) -> Rows:
    header = bank.header
    rows = [("format", f"{header['format']}, a kernel bank"),
            *_written_by(header.get("bayesprior_version"), None, header.get("command")),
            ("settings", _mapping({k: header.get(k) for k in ("kernel_size", "norm_threshold", "group_by",
                                                                "example_shape")}))]
    for group, counts in bank.counts().items():
        layers = header["groups"][group].get("layers", [])
        rows.append(("group", f"{group}: {counts['kept']:,} kernels kept, {counts['dropped']:,} dropped, "
                              f"from {len(layers)} layer(s)"))
    rows += _bank_provenance(header, "harvested from")
    return rows


# ------------------------------------------------------------------------------------------- parts
def _written_by(version: Any, torch_version: Any, command: Any) -> Rows:
    made = ", ".join(f"{name} {v}" for name, v in (("bayesprior", version), ("torch", torch_version)) if v)
    rows = [("written by", made or "not recorded")]
    rows.append(("command", command if isinstance(command, str) and command else "not recorded"))
    return rows


def _command_history(commands: Any) -> Rows:
    """One row per command that trained the run (``commands`` of a run record), oldest first."""
    if not isinstance(commands, list) or not commands:
        return []
    rows = []
    for number, entry in enumerate(commands, start=1):
        entry = entry if isinstance(entry, dict) else {}
        when = [f"from epoch {entry['from_epoch']}" if entry.get("from_epoch") is not None else None,
                f"to epoch {entry['to_epoch']}" if entry.get("to_epoch") is not None else None,
                f"--epochs {entry['max_epochs']}" if entry.get("max_epochs") is not None else None,
                entry.get("started")]
        rows.append(("history", f"{number}. {', '.join(str(w) for w in when if w) or 'not recorded'}: "
                                f"{entry.get('command') or 'not recorded'}"))
    return rows


def _architecture(spec: Any) -> str:
    if not isinstance(spec, dict) or "name" not in spec:
        return "not recorded (a network built by hand)"
    return f"{spec['name']} ({_mapping(spec.get('config') or {})})"


def _parameter_count(state: Mapping[str, Any]) -> str:
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    return f"{sum(t.numel() for t in tensors):,} values in {len(tensors)} tensors"


def _priors(payload: Mapping[str, Any]) -> Rows:
    layers: dict[str, list[str]] = {}
    for layer, key in payload["assignment"].items():
        layers.setdefault(key, []).append(layer)
    rows = [("prior", f"{key}: {spec.get('name')} ({_mapping(spec.get('config') or {})}) on "
                      f"{len(layers.get(key, []))} layer(s)") for key, spec in payload["priors"].items()]
    groups = payload.get("groups") or {}
    if isinstance(groups, dict):
        rows += [("group", f"{g}: {', '.join(map(str, members)) if isinstance(members, list) else members}")
                 for g, members in groups.items()]
    modes = payload.get("modes") or {}
    if modes:
        counts: dict[str, int] = {}
        for mode in modes.values():
            counts[str(mode)] = counts.get(str(mode), 0) + 1
        rows.append(("forward modes", ", ".join(f"{m} x{n}" for m, n in counts.items())))
    return rows


def _training(record: Mapping[str, Any]) -> Rows:
    rows: Rows = []
    if "preprocess" in record:
        rows.append(("preprocessing", _mapping(record["preprocess"]) if record["preprocess"] else "not recorded"))
        rows.append(("trained at", describe_grid(record.get("input_grid"))))
    config = record.get("train_config")
    if isinstance(config, dict):
        shown = {k: config.get(k) for k in ("method", "max_epochs", "batch_size", "lr", "kl_weight", "forward_mode",
                                            "patch", "seed", "source", "prior_path") if config.get(k) is not None}
        rows.append(("training", _mapping(shown)))
    if "epochs" in record:
        rows.append(("epochs", f"{record['epochs']} (stopped: {record.get('stopped_because', 'not recorded')})"))
    if isinstance(record.get("train_seconds"), (int, float)):
        rows.append(("training time", f"{record['train_seconds']:.1f} s (every epoch of every session it ran in)"))
    data = record.get("data")
    if isinstance(data, dict):
        for key, what in (("train", "training data"), ("val", "validation data")):
            ids = data.get(f"{key}_cases") or []
            rows.append((what, f"{len(ids)} case(s), SHA-256 {data.get(f'{key}_sha256', 'not recorded')}"))
            if ids:
                rows.append(("case ids", _case_ids(ids)))
    inputs = record.get("inputs")
    if isinstance(inputs, dict) and inputs:
        rows += [("input file", f"{key}: SHA-256 {digest}") for key, digest in inputs.items()]
    return rows


def _bank_provenance(header: Mapping[str, Any], verb: str) -> Rows:
    rows = []
    if header.get("architecture"):
        rows.append(("architecture", _architecture(header["architecture"])))
    checkpoints = [c for c in header.get("checkpoints") or [] if isinstance(c, dict)]
    for checkpoint in checkpoints:
        rows.append((verb, f"{checkpoint.get('path')} (SHA-256 {checkpoint.get('sha256')})"))
    described = [describe_preprocessing(c.get("preprocessing"), (*COMPARED_KEYS, "channel")) for c in checkpoints]
    for text in dict.fromkeys(described):  # one row per distinct record, in the order met
        share = f" ({described.count(text)} of {len(checkpoints)} models)" if len(checkpoints) > 1 else ""
        rows.append(("source preprocessing", text + share))
    return rows


def _case_ids(ids: Sequence[Any]) -> str:
    shown = ", ".join(map(str, ids[:MAX_CASE_IDS]))
    return shown + (f" ... and {len(ids) - MAX_CASE_IDS} more" if len(ids) > MAX_CASE_IDS else "")


def _mapping(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, (list, dict, str)) else v}" for k, v in values.items())


def format_info(path: str | Path, rows: Rows) -> str:
    """The rows of `describe_file` as aligned text under the file's name."""
    width = max(len(label) for label, _ in rows)
    return "\n".join([str(path)] + [f"  {label.ljust(width)}  {text}" for label, text in rows])


@click.command("info")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def info_command(file: Path) -> None:
    """Say what FILE is before you use it: a model file (model.pt), a training checkpoint (checkpoint.pt),
    a prior file (fit-prior, corrnormal), SWAG moments (swag.pt) or a kernel bank (.npz); the kind is read from the
    content, not the name.

    Prints the format and version; the architecture, priors and layer groups; the preprocessing; the training
    data (SHA-256 and case ids); the versions and the command that made it, and every command that trained the
    run (its first and each resumption), as far as the file records them.
    The file is read without running any code it carries; anything else is refused.

    Example: bayesprior info runs/target/model.pt
    """
    click.echo(format_info(file, describe_file(file)))


def register(cli: click.Group) -> None:
    cli.add_command(info_command)
