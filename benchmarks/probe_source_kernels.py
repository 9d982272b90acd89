"""How much structure do source kernels carry? Movement from initialisation and held-out Gaussian baselines.

    python benchmarks/probe_source_kernels.py runs/src*/model.pt [--prior PRIOR_FILE] [--json out.json]

For each model file written by `bayesprior train` with method `ri` (its initialisation is rebuilt
from the recorded seed and init scale), print per kernel group:
- `moved`: the relative distance of the weights from their initialisation, ||w - w0|| / ||w0||;
- `layer RMS spread`: the largest over the smallest per-layer RMS of the group's kernels;
- `gain`: held-out log-likelihood per kernel of a full-covariance Gaussian minus an i.i.d. Gaussian
  (`bayesprior.kernel_structure`), on the raw kernels and on kernels with every layer scaled to the
  group's RMS ("layer-normalised": the 3x3x3 convs sit behind instance norm, so a layer's scale is
  arbitrary and differences of scale between layers are not spatial structure);
- the final validation DSC and the number of optimiser steps of the run (from its log.jsonl).
A random initialisation scores a gain of about 0.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

from bayesprior.checkpoints import deterministic_state, read_model_file
from bayesprior.kernel_structure import group_structure
from bayesprior.plugins import architecture_groups
from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_model
from bayesprior.training.trainer import seed_everything


def layer_normalised(layers: list[np.ndarray]) -> np.ndarray:
    """Kernels of every layer scaled so that each layer has the RMS of the pooled group."""
    pooled = np.concatenate(layers)
    target = np.sqrt((pooled ** 2).mean())
    return np.concatenate([k * (target / max(np.sqrt((k ** 2).mean()), 1e-12)) for k in layers])


def run_log(model_path: Path) -> tuple[float | None, int | None]:
    log = model_path.parent / "log.jsonl"
    if not log.is_file():
        return None, None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return records[-1].get("val_dsc") if records else None, len(records)


def probe(path: str) -> list[dict]:
    payload = read_model_file(path)
    extra = payload["extra"]
    config = extra["train_config"]
    seed_everything(config["seed"])
    init = build_model(TrainConfig(architecture=config["architecture"], architecture_config=config["architecture_config"],
                                   method="ri", init_scale=config.get("init_scale", 1.0)))
    w0, w = init.state_dict(), deterministic_state(payload)
    val_dsc, epochs = run_log(Path(path))
    steps_per_epoch = config.get("steps_per_epoch") or math.ceil(extra.get("n_train", 0) / config["batch_size"])
    rows = []
    for group, layers in architecture_groups(config["architecture"], init).items():
        per_layer = [w[f"{l}.weight"].reshape(-1, w[f"{l}.weight"][0, 0].numel()).double().numpy() for l in layers]
        moved = math.sqrt(sum(float(((w[f"{l}.weight"] - w0[f"{l}.weight"]) ** 2).sum()) for l in layers)
                          / sum(float((w0[f"{l}.weight"] ** 2).sum()) for l in layers))
        rms = [float(np.sqrt((k ** 2).mean())) for k in per_layer]
        raw = group_structure(np.concatenate(per_layer), group)
        normalised = group_structure(layer_normalised(per_layer), group)
        rows.append({"model": path, "group": group, "moved": moved, "rms_spread": max(rms) / min(rms),
                     "rms": float(np.sqrt(np.mean(np.concatenate(per_layer) ** 2))),
                     "gain_raw": raw.gain, "gain_layer_normalised": normalised.gain,
                     "iid_layer_normalised": normalised.iid, "val_dsc": val_dsc, "epochs": epochs,
                     "steps": epochs * steps_per_epoch if epochs else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | group | moved | RMS | layer RMS spread | gain raw | gain layer-normalised | val DSC | steps |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    everything = []
    for path in args.models:
        for r in probe(path):
            everything.append(r)
            dsc = "-" if r["val_dsc"] is None else f"{r['val_dsc']:.3f}"
            print(f"| {Path(path).parent.name} | {r['group']} | {r['moved']:.2f} | {r['rms']:.4f} | "
                  f"{r['rms_spread']:.2f} | {r['gain_raw']:+.1f} | {r['gain_layer_normalised']:+.1f} | {dsc} | "
                  f"{r['steps'] or '-'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
