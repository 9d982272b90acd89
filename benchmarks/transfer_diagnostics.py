"""How the methods of a transfer experiment trained: the last epoch's data term and KL, per method and train size.

    python benchmarks/transfer_diagnostics.py runs/transfer_cpu_tuning [--baseline ri]

For every finished run (a result and a run folder with log.jsonl) it reads the last logged epoch: the data term
(the training loss without the KL), the KL, and the KL's share of the loss as trained (``loss - data``, so any
warm-up is counted as it was). The trainer logs a Bayesian run's data term as the ELBO has it, N times the mean per
case, and a deterministic run's per batch; the data term here is per batch for both (the log's ``data_per_case``
times the batch size; in logs older than that field, a Bayesian run's data term times batch size / N, from the
run's config.json), so that the two compare. Per method and train size it prints the means and the data term
relative to the baseline's on the same split: how much worse a Bayesian network fits its training cases at the end
of its steps, and the epoch its learning rate first fell (the schedule watches the training loss, KL included).
With the runs' networks (model.pt) it also gives how far their k x k x k kernels (posterior means for
a Bayesian network) ended from the source network's: ||w - w_source|| / ||w_source|| over every such kernel, and the
same over the 1 x 1 x 1 convolutions, which no kernel group holds (a Bayesian run leaves them plain, unpenalised). PR
starts at the source, so its distance is what the data alone moved; a prior that starts there too and ends further
away was pulled by the prior. These are training-side facts only: nothing here reads a test score other than the
result's own DSC.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bayesprior.checkpoints import deterministic_state, read_model_file
from bayesprior.errors import BayespriorError
from bayesprior.experiment.runs import ResultStore, RunSpec
from bayesprior.training.methods import training_method
from bayesprior.training.run_folder import read_log


def _data_per_batch(config: Path, last: dict) -> float:
    """The last epoch's data term per batch, on one scale for every method: ``data_per_case`` x batch size where
    the log has it; in older logs the logged data term, a Bayesian one times batch size / N (from config.json)."""
    logged = float(last.get("data", last["loss"]))
    try:
        record = json.loads(config.read_text())
        train, n_train = record["train_config"], int(record["n_train"])
        if "data_per_case" in last:
            return float(last["data_per_case"]) * train["batch_size"]
        bayesian = training_method(train["method"]).bayesian
        return logged * train["batch_size"] / n_train if bayesian and n_train > 0 else logged
    except (OSError, ValueError, KeyError, TypeError, BayespriorError):
        return logged


def kernels(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """The k x k x k kernels (k > 1) of model file `path` and its 1 x 1 x 1 convolutions (outside every kernel group:
    no kernel prior covers them), by the plain network's layer names; None if unreadable."""
    try:
        state = deterministic_state(read_model_file(path))
    except (BayespriorError, OSError):
        return None
    convolutions = {key: value for key, value in state.items() if key.endswith(".weight") and value.dim() >= 3}
    return ({key: v.numpy() for key, v in convolutions.items() if min(v.shape[2:]) > 1},
            {key: v.numpy() for key, v in convolutions.items() if max(v.shape[2:]) == 1})


def distance_from(network: dict[str, np.ndarray], source: dict[str, np.ndarray]) -> float:
    """||network - source|| / ||source|| over the kernels both have, with the same shapes (NaN if none)."""
    shared = [k for k in source if k in network and network[k].shape == source[k].shape]
    if not shared:
        return float("nan")
    moved = sum(float(np.sum((network[k] - source[k]) ** 2)) for k in shared)
    return float(np.sqrt(moved / sum(float(np.sum(source[k] ** 2)) for k in shared)))


def recorded_source(folder: Path) -> Path | None:
    """The source network the runs of `folder` record (their train_config's ``source``), if any."""
    for model in sorted((folder / "runs").glob("*/model.pt")):
        try:
            source = read_model_file(model)["extra"]["train_config"].get("source")
        except (BayespriorError, OSError, KeyError, TypeError):
            continue
        if source:
            return Path(source)
    return None


def first_lr_drop(lines: list[dict]) -> float | None:
    """The first epoch whose learning rate is below the first epoch's; inf if it never fell, None if not logged."""
    start = lines[0].get("lr")
    if start is None:
        return None
    return next((float(e["epoch"]) for e in lines if e.get("lr", start) < start), float("inf"))


def last_epochs(folder: Path, source: Path | None = None) -> list[dict]:
    """One row per finished run of experiment `folder`: method, split, size, DSC, its last logged epoch and the
    epoch its learning rate first fell; with `source`, the distance of the run's kernels from that network's
    (``moved``) and of its 1 x 1 x 1 convolutions (``moved_pointwise``), NaN without a readable model."""
    source_weights = kernels(source) if source is not None else None
    rows = []
    for result in ResultStore(folder / "results").read_all():
        run = RunSpec(result["split"], result["train_size"], result["method"])
        lines = read_log(folder / "runs" / run.run_id / "log.jsonl", up_to_epoch=sys.maxsize)
        if not lines:  # a result whose run folder is gone
            continue
        last = lines[-1]
        logged = float(last.get("data", last["loss"]))
        data = _data_per_batch(folder / "runs" / run.run_id / "config.json", last)
        rows.append({"method": run.method, "split": run.split, "train_size": run.train_size,
                     "dsc": result["dsc"], "epochs": len(lines), "data": data, "kl": float(last.get("kl", 0.0)),
                     "logged_data": logged, "weighted_kl": float(last["loss"]) - logged,
                     "lr_drop": first_lr_drop(lines)})
        if source_weights is not None:
            network = kernels(folder / "runs" / run.run_id / "model.pt")
            for k, key in enumerate(("moved", "moved_pointwise")):  # the kernels, then the 1 x 1 x 1 convolutions
                rows[-1][key] = distance_from(network[k], source_weights[k]) if network else float("nan")
    return rows


def summary(rows: list[dict], baseline: str) -> list[list]:
    """Per (method, train size): runs, epochs, the epoch the learning rate first fell (median; how many runs it never
    fell in), data term, its ratio to the baseline's on the same split, KL, weighted KL / data term, distance of the
    kernels and of the 1 x 1 x 1 convolutions from the source network (where measured), DSC (means)."""
    base = {(r["split"], r["train_size"]): r["data"] for r in rows if r["method"] == baseline}
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["train_size"])].append(r)
    table = []
    for (method, size), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ratios = [r["data"] / base[(r["split"], size)] for r in runs if base.get((r["split"], size))]
        table.append([method, size, len(runs), f"{np.mean([r['epochs'] for r in runs]):.0f}",
                      _lr_drops([r["lr_drop"] for r in runs]),
                      f"{np.mean([r['data'] for r in runs]):.1f}",
                      f"{np.mean(ratios):.1f}" if ratios else "-",
                      f"{np.mean([r['kl'] for r in runs]):.3g}",
                      f"{np.mean([r['weighted_kl'] / r['logged_data'] for r in runs]):.1f}",
                      _mean_or_dash([r.get("moved", float("nan")) for r in runs]),
                      _mean_or_dash([r.get("moved_pointwise", float("nan")) for r in runs]),
                      f"{np.mean([r['dsc'] for r in runs]):.3f}"])
    return table


def _lr_drops(epochs: list[float | None]) -> str:
    """The median epoch of the first fall, and how many runs it never fell in ("-" where no log has the rate)."""
    fell = [e for e in epochs if e is not None and np.isfinite(e)]
    never = sum(1 for e in epochs if e is not None and not np.isfinite(e))
    return (f"{np.median(fell):.0f}" if fell else "-") + (f" ({never} never)" if never else "")


def _mean_or_dash(values: list[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    return f"{np.mean(finite):.2f}" if finite else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an experiment folder (results/ and runs/)")
    parser.add_argument("--baseline", default="ri", help="the method whose data term the ratio divides by")
    parser.add_argument("--source", type=Path, help="the source network to measure the kernels' distance from "
                        "(default: the one the runs record)")
    args = parser.parse_args(argv)
    source = args.source or recorded_source(args.folder)
    if args.source is not None and kernels(args.source) is None:
        sys.exit(f"{args.source}: not a readable model file")
    rows = last_epochs(args.folder, source)
    if not rows:
        sys.exit(f"{args.folder}: no finished run with a log.jsonl")
    header = ["method", "cases", "runs", "epochs", "lr first fell (epoch)", "data term per batch",
              f"data / {args.baseline}", "KL", "weighted KL / data term in the loss", "kernels moved from source",
              "1x1x1 moved from source", "DSC"]
    print(f"kernels' distance from {source}\n" if source else "no source network recorded: no distances\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in summary(rows, args.baseline):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
