"""How the methods of a transfer experiment trained: the last epoch's data term and KL, per method and train size.

    python benchmarks/transfer_diagnostics.py runs/transfer_cpu_tuning [--baseline ri]

For every finished run (a result and a run folder with log.jsonl) it reads the last logged epoch: the data term
(the training loss without the KL), the KL, and the KL's share of the loss as trained (``loss - data``, so any
warm-up is counted as it was). Per method and train size it prints the means and the data term relative to the
baseline's on the same split: how much worse a Bayesian network fits its training cases at the end of its
steps. These are training-side facts only: nothing here reads a test score other than the result's own DSC.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from bayesprior.experiment.runs import ResultStore, RunSpec
from bayesprior.training.run_folder import read_log


def last_epochs(folder: Path) -> list[dict]:
    """One row per finished run of experiment `folder`: method, split, size, DSC and its last logged epoch."""
    rows = []
    for result in ResultStore(folder / "results").read_all():
        run = RunSpec(result["split"], result["train_size"], result["method"])
        lines = read_log(folder / "runs" / run.run_id / "log.jsonl", up_to_epoch=sys.maxsize)
        if not lines:  # a result whose run folder is gone
            continue
        last = lines[-1]
        data = float(last.get("data", last["loss"]))
        rows.append({"method": run.method, "split": run.split, "train_size": run.train_size,
                     "dsc": result["dsc"], "epochs": len(lines), "data": data, "kl": float(last.get("kl", 0.0)),
                     "weighted_kl": float(last["loss"]) - data})
    return rows


def summary(rows: list[dict], baseline: str) -> list[list]:
    """Per (method, train size): runs, epochs, data term, its ratio to the baseline's on the same split, KL,
    weighted KL / data term, DSC (means)."""
    base = {(r["split"], r["train_size"]): r["data"] for r in rows if r["method"] == baseline}
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], r["train_size"])].append(r)
    table = []
    for (method, size), runs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ratios = [r["data"] / base[(r["split"], size)] for r in runs if base.get((r["split"], size))]
        table.append([method, size, len(runs), f"{np.mean([r['epochs'] for r in runs]):.0f}",
                      f"{np.mean([r['data'] for r in runs]):.1f}",
                      f"{np.mean(ratios):.1f}" if ratios else "-",
                      f"{np.mean([r['kl'] for r in runs]):.3g}",
                      f"{np.mean([r['weighted_kl'] / r['data'] for r in runs]):.1f}",
                      f"{np.mean([r['dsc'] for r in runs]):.3f}"])
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="an experiment folder (results/ and runs/)")
    parser.add_argument("--baseline", default="ri", help="the method whose data term the ratio divides by")
    args = parser.parse_args(argv)
    rows = last_epochs(args.folder)
    if not rows:
        sys.exit(f"{args.folder}: no finished run with a log.jsonl")
    header = ["method", "cases", "runs", "epochs", "data term", f"data / {args.baseline}", "KL",
              "weighted KL / data", "DSC"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in summary(rows, args.baseline):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
