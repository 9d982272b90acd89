"""Does what a run starts from suit its target? The preprocessing of the source model and of the models a prior
file was fitted to, against the target's, said in one warning line each where it differs.

A network that starts from a source model (``pr``, ``prf``, a prior's posterior means) or is trained under a
prior fitted to source kernels (``dwp``, ``corrnormal``) learns from inputs like the source's: kernels tuned to
min-max intensities at 4.2 mm see other inputs in a z-scored target at 1 mm. Such a difference may be meant
(the paper's source is FLAIR, its target T2), so it is warned about, not refused; what cannot work (a source
network of another shape) is refused where the weights are loaded (`bayesprior.training.methods`).

`bayesprior train` and the experiment both ask `transfer_origins` what a run starts from and
`preprocessing_warnings` how it compares; `train` also asks `source_mismatch_warnings` whether a prior file
collected around one source network (it records that network's SHA-256, as a SWAG file does) meets another
``--source``: the posterior would then start away from the prior's centre.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..checkpoints import read_model_file
from ..data.provenance import describe_preprocessing, preprocessing_differences, preprocessing_summary
from ..errors import CheckpointError
from ..hashing import file_sha256
from ..safe_load import load_plain
from .config import TrainConfig
from .methods import SOURCE_UNUSED, training_method

#: (who: "the source model runs/src/model.pt", its preprocessing summary or None)
Origin = tuple[str, "dict[str, Any] | None"]


def transfer_origins(config: TrainConfig) -> list[Origin]:
    """The models a run of `config` starts from or learns its prior from, with their preprocessing: the source
    model (when the method starts from it) and the source models the prior file records."""
    origins: list[Origin] = []
    if config.source is not None and training_method(config.method).source != SOURCE_UNUSED:
        origins += source_model_origins([config.source])
    if config.prior_path is not None:
        origins += prior_file_origins(config.prior_path)
    return origins


def source_model_origins(paths: Sequence[str | Path]) -> list[Origin]:
    """The source models at `paths` with their preprocessing; models that record the same are said together."""
    records = [(str(path), preprocessing_summary(read_model_file(path).get("extra"))) for path in paths]
    return [(f"the source model {names[0]}" if len(names) == 1 else f"the {len(names)} source models", summary)
            for names, summary in _alike(records)]


def prior_file_origins(path: str | Path) -> list[Origin]:
    """The source models a prior file was fitted to (its kernel bank's ``checkpoints``), with their preprocessing;
    for a file that records its source run's preprocessing itself (a SWAG file), that run.

    A file that is not a readable bayesprior prior file, or records no source models, gives one origin that
    records nothing.
    """
    try:
        payload = load_plain(path, "a prior file", trust=False)
    except CheckpointError:
        payload = None  # a plugin's prior file of its own kind: its factory checked it; it records nothing here
    if isinstance(payload, dict) and isinstance(payload.get("preprocess"), Mapping):
        return [(f"the source run of the prior file {path}", preprocessing_summary(payload))]
    provenance = payload.get("provenance") if isinstance(payload, dict) else None
    checkpoints = provenance.get("checkpoints") if isinstance(provenance, dict) else None
    if not isinstance(checkpoints, list) or not checkpoints:
        return [(f"the prior file {path}", None)]
    records = [(str(c.get("path")), c.get("preprocessing")) for c in checkpoints if isinstance(c, dict)]
    return [(f"{f'the source model {names[0]}' if len(names) == 1 else f'the {len(names)} source models'} of the "
             f"prior file {path}", summary) for names, summary in _alike(records)]


def _alike(records: Sequence[tuple[str, Any]]) -> list[tuple[list[str], Any]]:
    """(names, summary) for each distinct summary among (name, summary) pairs, in the order first met."""
    groups: dict[str, tuple[list[str], Any]] = {}
    for name, summary in records:
        groups.setdefault(json.dumps(summary, sort_keys=True), ([], summary))[0].append(name)
    return list(groups.values())


def preprocessing_warnings(origins: Sequence[Origin], target: Mapping[str, Any] | None,
                           target_name: str = "this run") -> list[str]:
    """One line for each origin whose preprocessing differs from `target`'s (a `preprocessing_summary`),
    naming both and the keys that differ, and for each that records none."""
    lines = []
    for who, summary in origins:
        if summary is None:
            lines.append(f"{who} records no preprocessing (written by an older bayesprior), so it cannot be compared "
                         f"with {target_name}'s ({describe_preprocessing(target)})")
            continue
        if target is None:
            continue
        differ = preprocessing_differences(summary, target)
        if differ:
            lines.append(f"preprocessing differs in {', '.join(differ)}: {who} was trained on "
                         f"{describe_preprocessing(summary, differ)}; {target_name} on "
                         f"{describe_preprocessing(target, differ)}")
    return lines


def source_mismatch_warnings(config: TrainConfig) -> list[str]:
    """One line if the prior file records the source network it was collected around (``source_model_sha256``)
    and the run starts from another one (``config.source``, for a method that starts from it)."""
    if config.source is None or config.prior_path is None or training_method(config.method).source == SOURCE_UNUSED:
        return []
    try:
        payload = load_plain(config.prior_path, "a prior file", trust=False)
    except CheckpointError:
        return []  # a plugin's prior file of its own kind: it records no source network here
    recorded = payload.get("source_model_sha256") if isinstance(payload, dict) else None
    if not isinstance(recorded, str) or recorded == file_sha256(config.source):
        return []
    return [f"the prior file {config.prior_path} was collected around another source network (SHA-256 "
            f"{recorded[:12]}...) than the source model {config.source}: the run starts away from the prior's centre"]
