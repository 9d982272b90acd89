"""How much structure do source kernels carry? Movement from initialisation and a Gaussian baseline.

    python benchmarks/probe_source_kernels.py runs/transfer_cpu/source/zoo/seed*/*.pt [--prior PRIOR_FILE]

For each model file written by `bayesprior train` with method `ri` (its initialisation is reproduced
from the recorded seed), print per kernel group:
- the relative distance of the weights from their initialisation, ||w - w0|| / ||w0||;
- the element std of the kernels;
- the log-likelihood per kernel of an i.i.d. Gaussian with that std (the baseline a VAE must beat to
  have learned structure), and, with --prior, the VAE's best held-out ELBO per kernel.
"""
from __future__ import annotations

import argparse
import math

import torch

from bayesprior.checkpoints import deterministic_state, read_model_file
from bayesprior.plugins import architecture_groups
from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_model
from bayesprior.training.trainer import seed_everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--prior", default=None, help="a DWP prior file fitted on these models' kernels")
    args = parser.parse_args()
    heldout = {}
    if args.prior:
        from bayesprior_dwp import load_prior_file

        prior = load_prior_file(args.prior)
        heldout = {g: max(prior.heldout_elbo(g)) for g in prior.groups}
    print("| model | epochs | group | rel. distance from init | element std | iid Gaussian log-lik / kernel | VAE held-out ELBO / kernel |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for path in args.models:
        payload = read_model_file(path)
        config = payload["extra"]["train_config"]
        seed_everything(config["seed"])
        init = build_model(TrainConfig(architecture=config["architecture"],
                                       architecture_config=config["architecture_config"], method="ri"))
        w0, w = init.state_dict(), deterministic_state(payload)
        for group, layers in architecture_groups(config["architecture"], init).items():
            kernels = torch.cat([w[f"{l}.weight"].reshape(-1, w[f"{l}.weight"][0, 0].numel()) for l in layers])
            moved = math.sqrt(sum(float(((w[f"{l}.weight"] - w0[f"{l}.weight"]) ** 2).sum()) for l in layers)
                              / sum(float((w0[f"{l}.weight"] ** 2).sum()) for l in layers))
            std = float(kernels.std())
            iid = -kernels.shape[1] * 0.5 * math.log(2 * math.pi * math.e * std ** 2)
            vae = f"{heldout[group]:.1f}" if group in heldout else "–"
            print(f"| {path.split('/')[-1]} | {payload['extra'].get('epochs', payload['extra'].get('epoch', '?'))} "
                  f"| {group} | {moved:.2f} | {std:.4f} | {iid:.1f} | {vae} |")


if __name__ == "__main__":
    main()
