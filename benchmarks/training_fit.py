"""How well the networks of a transfer experiment fit their own training cases, measured after training.

    python benchmarks/training_fit.py CONFIG FOLDER RUN_ID [RUN_ID ...] [--samples 3]

For each run it evaluates the data term (the training loss without the KL, per batch of the run's batch size, as
the trainer computes it) on the run's training cases with the final network: for a Bayesian network once at its
posterior means and averaged over `--samples` weight samples. The log's data term is an average over the last
epoch's steps while the weights still move, and for a Bayesian run it is scaled to the ELBO's N x mean per case;
this is the fit of the network the experiment scores, and the gap between means and samples is what the
posterior's noise costs the fit. Training-side only: it reads no test or validation case.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from bayesprior.checkpoints import model_from_payload, read_model_file
from bayesprior.errors import BayespriorError
from bayesprior.experiment.config import load_config
from bayesprior.experiment.pipeline import Experiment
from bayesprior.training.losses import LossConfig
from bayesprior.training.trainer import batch_data_loss
from bayesprior.wrap import BayesianModel


@torch.no_grad()
def training_loss(net: nn.Module, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], loss: LossConfig,
                  batch_size: int) -> float:
    """Mean over consecutive batches of `batch_size` cases of the data term the trainer computes."""
    values = []
    for start in range(0, len(images), batch_size):
        x = torch.stack([torch.as_tensor(a, dtype=torch.float32)[None] for a in images[start:start + batch_size]])
        y = torch.stack([torch.as_tensor(a, dtype=torch.long) for a in labels[start:start + batch_size]])
        values.append(float(batch_data_loss(net(x).float(), y, loss)[0]))
    return float(np.mean(values))


def fit(net: nn.Module, images, labels, loss: LossConfig, batch_size: int, samples: int) -> dict[str, float]:
    """``{"means": ...}`` and, for a Bayesian network, ``{"samples": ...}`` (mean over `samples` weight draws)."""
    net.eval()
    if not isinstance(net, BayesianModel):
        return {"means": training_loss(net, images, labels, loss, batch_size)}
    torch.manual_seed(0)
    with net.sampling("mean"):
        means = training_loss(net, images, labels, loss, batch_size)
    with net.sampling("sample"):
        sampled = float(np.mean([training_loss(net, images, labels, loss, batch_size) for _ in range(samples)]))
    return {"means": means, "samples": sampled}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, help="the experiment's config file")
    parser.add_argument("folder", type=Path, help="the experiment folder (results/ and runs/)")
    parser.add_argument("runs", nargs="+", help="run ids, e.g. split0_n5_pr")
    parser.add_argument("--samples", type=int, default=3, help="weight samples for a Bayesian network")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        experiment = Experiment(config, args.folder, progress=False, log=lambda line: None)
        by_id = {c.case_id: c for c in experiment.data.cases(config.target, "target")}
        print("| run | data term at the means | with weight samples |\n|---|---:|---:|")
        for run in args.runs:
            result = json.loads((args.folder / "results" / f"{run}.json").read_text())
            model_path = args.folder / "runs" / run / "model.pt"
            payload = read_model_file(model_path)  # read once: its settings and its network
            train = payload["extra"]["train_config"]
            cases = [by_id[c] for c in result["train_cases"]]
            loss = LossConfig(train["dice_weight"], train["ce_weight"], train["ce_reduction"], train["dice_batch"],
                              train["dice_epsilon"])
            values = fit(model_from_payload(payload, model_path), [c.image for c in cases], [c.label for c in cases], loss,
                         train["batch_size"], args.samples)
            sampled = f"{values['samples']:.2f}" if "samples" in values else "-"
            print(f"| {run} | {values['means']:.2f} | {sampled} |")
    except (BayespriorError, OSError, KeyError, ValueError) as e:
        sys.exit(f"training_fit: {e}")


if __name__ == "__main__":
    main()
