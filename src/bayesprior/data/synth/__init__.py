"""Synthetic brain MRI datasets: MS-like lesions on FLAIR (source) and glioma-like tumours on T2 (target).

Anatomy comes from the MNI152 2009a template shipped inside the nilearn wheel (see `anatomy.MNI_NOTICE`).
`synthesize_dataset` writes an nnU-Net v2 raw dataset (plus, for tumours, an optional BRATS-style mirror)
with a JSON manifest of every case's generator parameters.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

from ...atomic import atomic_path, atomic_write_json, remove_stale_temp_files
from ...errors import ConfigError
from ...locks import LOCK_NAME, folder_lock
from ..naming import channel_file_name
from ..nifti import nifti_bytes
from .anatomy import MNI_NOTICE, atlas_folder, healthy_anatomy
from .generate import GENERATOR_VERSION, KINDS, SyntheticCase, case_seed, generate_case

DATASET_NAMES = {"ms": "SynMS", "tumour": "SynBraTS"}
LABELS = {"ms": {"background": 0, "lesion": 1},
          "tumour": {"background": 0, "necrotic/non-enhancing core": 1, "edema": 2, "enhancing tumour": 4}}

__all__ = ["synthesize_dataset", "synthetic_case_ids", "generate_case", "SyntheticCase", "case_seed",
           "healthy_anatomy", "atlas_folder",
           "GENERATOR_VERSION", "MNI_NOTICE", "KINDS"]


def synthetic_case_ids(kind: str, n_cases: int) -> list[str]:
    """The case ids `synthesize_dataset` gives `n_cases` cases of `kind` (``SynMS_0001`` ...), known before they
    are made."""
    return [f"{DATASET_NAMES[kind]}_{index:04d}" for index in range(1, n_cases + 1)]


def _write(path: Path, array, affine, dtype) -> None:
    payload = nifti_bytes(array, affine, dtype=dtype)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


#: written first into the output folder, with the settings: a killed run's folder is recognised as ours, and
#: a rerun with the same settings keeps the cases already finished
SETTINGS_FILE = ".bayesprior-synth.json"


def _check_output_folder(out_dir: Path, settings: dict) -> None:
    """Refuse to write into a non-empty folder unless it holds an earlier (finished or killed) synthetic dataset
    made with the same `settings` (kind, seed, grid, generator release ...): a rerun resumes, adds or removes cases
    of its own dataset, never mixes in another one's."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: output exists and is not a folder")
    if not any(p.name != LOCK_NAME for p in out_dir.iterdir()):
        return
    found = _earlier_settings(out_dir)
    if found is None:
        raise ConfigError(f"{out_dir}: folder is not empty and is not a bayesprior synthetic dataset; "
                          f"choose an empty or new folder")
    changed = [f"{key} {found[key]!r} -> {settings[key]!r}" for key in settings
               if key in found and found[key] != settings[key]]
    if changed:
        raise ConfigError(f"{out_dir}: holds a synthetic dataset made with other settings ({', '.join(changed)}); "
                          "synth resumes only a dataset of its own kind and settings: choose an empty or new folder")


def _earlier_settings(out_dir: Path) -> dict | None:
    """The settings of the synthetic dataset in `out_dir`: its settings file, else (older versions wrote none)
    what its dataset.json records; None if the folder holds no bayesprior synthetic dataset."""
    if (out_dir / SETTINGS_FILE).exists():
        return _read_settings(out_dir)
    try:
        meta = json.loads((out_dir / "dataset.json").read_text())
    except (OSError, ValueError):
        return None  # no readable dataset.json: not a synthetic dataset of ours
    generator = meta.get("generator") if isinstance(meta, dict) else None
    if not str(meta.get("release", "") if isinstance(meta, dict) else "").startswith("bayesprior-synth") \
            or not isinstance(generator, dict):
        return None
    return {"release": meta["release"], **{k: generator[k] for k in ("kind", "seed", "shape", "spacing", "brats_mirror")
                                           if k in generator}}


def _read_settings(out_dir: Path) -> dict | None:
    try:
        settings = json.loads((out_dir / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return None  # a damaged settings file: the folder is not recognised as ours
    return settings if isinstance(settings, dict) else None


def _finished_case(out_dir: Path, case_id: str) -> dict | None:
    """The manifest of a case a previous run finished (written last, after its images), or None."""
    try:
        manifest = json.loads((out_dir / "manifests" / f"{case_id}.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("case_id") == case_id else None


def _remove_stale_cases(out_dir: Path, name: str, n_cases: int) -> None:
    """Delete cases beyond `n_cases` left by an earlier, larger run into the same folder."""
    pattern = re.compile(rf"^{re.escape(name)}_(\d{{4}})(_\d{{4}})?\.(nii\.gz|json)$")
    for sub in ("imagesTr", "labelsTr", "manifests"):
        folder = out_dir / sub
        for path in folder.iterdir() if folder.is_dir() else ():
            match = pattern.match(path.name)
            if match and int(match.group(1)) > n_cases:
                path.unlink()
    mirror = out_dir / "brats" / "HGG"
    for patient in mirror.iterdir() if mirror.is_dir() else ():
        match = re.match(rf"^{re.escape(name)}_(\d{{4}})$", patient.name)
        if match and int(match.group(1)) > n_cases:
            shutil.rmtree(patient)


def synthesize_dataset(kind: str, n_cases: int, out_dir: str | Path, shape: tuple[int, int, int] | None = None,
                       spacing: float | None = None, seed: int = 0, brats_mirror: bool = False,
                       procedural: bool = False, progress: Callable | None = None) -> Path:
    """Write a synthetic dataset in nnU-Net v2 layout.

    Layout: out_dir/dataset.json, imagesTr/<ID>_0000.nii.gz (int16), labelsTr/<ID>.nii.gz (uint8; {0,1} for
    ms, BRATS {0,1,2,4} for tumour), manifests/<ID>.json; with `brats_mirror` (tumour only) also
    out_dir/brats/HGG/<ID>/<ID>_{t2,flair,seg}.nii.gz.

    Args:
        kind: "ms" or "tumour".
        n_cases: number of cases (>= 1).
        shape / spacing: output grid; give at most one (default 2 mm, 84x100x84).
        seed: base seed; case i depends only on (seed, kind, i), so files are identical across runs.
        procedural: use the procedural brain instead of the MNI template (always used without nilearn).
        progress: optional wrapper for the case loop (e.g. tqdm).
    Returns:
        out_dir as a Path.
    Raises:
        ConfigError: bad kind, count, shape/spacing, a BRATS mirror for MS, or a non-empty folder that
            is not a synthetic dataset of the same kind and settings (seed, grid, generator release ...).
        FolderInUseError: another process writes into `out_dir`.

    The settings are written first (``.bayesprior-synth.json``), so a killed run's folder is recognised:
    rerunning the same command keeps the cases it finished, makes the rest, and removes its temporary files.
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    if int(n_cases) < 1:
        raise ConfigError(f"n_cases must be >= 1, got {n_cases!r}")
    if shape is not None and spacing is not None:
        raise ConfigError("give shape or spacing, not both")
    if shape is not None and (len(tuple(shape)) != 3 or min(shape) < 8):
        raise ConfigError(f"shape must be three integers >= 8, got {shape!r}")
    if spacing is not None and not 0.5 <= float(spacing) <= 10:
        raise ConfigError(f"spacing must be between 0.5 and 10 mm, got {spacing!r}")
    if brats_mirror and kind != "tumour":
        raise ConfigError("a BRATS mirror is only written for kind 'tumour'")
    out_dir = Path(out_dir)
    settings = {"release": GENERATOR_VERSION, "kind": kind, "seed": int(seed),
                "shape": None if shape is None else [int(v) for v in shape], "spacing": spacing,
                "brats_mirror": bool(brats_mirror), "procedural": bool(procedural)}
    _check_output_folder(out_dir, settings)
    with folder_lock(out_dir, "dataset folder"):
        _check_output_folder(out_dir, settings)  # again: another process may have written meanwhile
        remove_stale_temp_files(out_dir, recursive=True)
        keep_finished = _read_settings(out_dir) == settings
        atomic_write_json(settings, out_dir / SETTINGS_FILE)
        _write_cases(kind, int(n_cases), out_dir, settings, keep_finished, progress)
    return out_dir


def _write_cases(kind: str, n_cases: int, out_dir: Path, settings: dict, keep_finished: bool,
                 progress: Callable | None) -> None:
    name = DATASET_NAMES[kind]
    sequence = KINDS[kind]
    brats_mirror, shape, spacing, seed = settings["brats_mirror"], settings["shape"], settings["spacing"], settings["seed"]
    sequences = (sequence, "FLAIR") if brats_mirror else (sequence,)
    ids = synthetic_case_ids(kind, n_cases)
    indices = range(1, n_cases + 1)
    loop = progress(indices) if progress else indices
    anatomy_source = None
    for index in loop:
        case_id = ids[index - 1]
        finished = _finished_case(out_dir, case_id) if keep_finished else None
        if finished is not None:  # a killed run with the same settings made it; it is the same case
            anatomy_source = finished.get("anatomy")
            continue
        case = generate_case(kind, index, seed, None if shape is None else tuple(shape), spacing, sequences,
                             settings["procedural"])
        anatomy_source = case.manifest["anatomy"]
        _write(out_dir / "imagesTr" / channel_file_name(case_id, 0), case.images[sequence], case.affine, "int16")
        _write(out_dir / "labelsTr" / f"{case_id}.nii.gz", case.label, case.affine, "uint8")
        if brats_mirror:
            patient = out_dir / "brats" / "HGG" / case_id
            for seq_name, image in case.images.items():
                _write(patient / f"{case_id}_{seq_name.lower()}.nii.gz", image, case.affine, "int16")
            _write(patient / f"{case_id}_seg.nii.gz", case.label, case.affine, "uint8")
        atomic_write_json({"case_id": case_id, **case.manifest}, out_dir / "manifests" / f"{case_id}.json")
    _remove_stale_cases(out_dir, name, n_cases)
    atomic_write_json({
        "name": name,
        "description": f"Synthetic {'MS-like lesions (FLAIR)' if kind == 'ms' else 'glioma-like tumours (T2)'} "
                       f"made by bayesprior; all values are synthetic.",
        "channel_names": {"0": sequence},
        "labels": LABELS[kind],
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "release": GENERATOR_VERSION,
        "generator": {"kind": kind, "seed": seed, "shape": shape, "spacing": spacing, "anatomy": anatomy_source,
                      "brats_mirror": brats_mirror},
        "label_convention": "binary lesion" if kind == "ms" else "BraTS {1 NCR/NET, 2 edema, 4 enhancing}; whole tumour = label > 0",
        "licence": "synthetic; anatomy from the MNI ICBM152 2009a template. " + MNI_NOTICE,
    }, out_dir / "dataset.json")
