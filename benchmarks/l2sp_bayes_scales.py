"""Where the `l2sp_bayes` prior's empirical-Bayes scale ended: per layer of every finished l2sp_bayes run of an
experiment folder, s / RMS(w_source), with s^2 = (||m - w_source||^2 + sum v) / D (the closed form the prior uses,
`bayesprior_l2sp.prior`), from the saved model alone (its posterior means and variances, and the prior centres it
keeps).

    python benchmarks/l2sp_bayes_scales.py RUNS/near_cpu RUNS/far_cpu

A training-side fact: nothing here reads a score.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bayesprior.safe_load import load_plain


def relative_scales(model_file: Path) -> list[float]:
    """s / RMS(w_source) for each layer under the prior, in the network's order."""
    state = load_plain(model_file, "model")["state_dict"]
    means = [k for k in state if k.endswith("posterior.loc")]
    centres = sorted((k for k in state if k.endswith(".centre")), key=lambda k: int(k.split(".")[1][len("prior"):]))
    if len(means) != len(centres):
        raise SystemExit(f"{model_file}: {len(means)} Bayesian layers but {len(centres)} prior centres")
    scales = []
    for mean_key, centre_key in zip(means, centres, strict=True):
        m, w0 = state[mean_key].double(), state[centre_key].double()
        variance = state[mean_key.replace("loc", "log_variance")].double().exp()
        s2 = (((m - w0) ** 2).sum() + variance.sum()) / m.numel()
        scales.append(float(s2.sqrt() / w0.pow(2).mean().sqrt()))
    return scales


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="experiment folders with runs/*_l2sp_bayes/model.pt")
    for folder in parser.parse_args().folders:
        scales = [s for f in sorted(folder.glob("runs/*_l2sp_bayes/model.pt")) for s in relative_scales(f)]
        if len(scales) < 2:
            print(f"{folder}: no finished l2sp_bayes run")
            continue
        deciles = statistics.quantiles(scales, n=10)
        print(f"{folder}: {len(scales)} layer-runs, s / RMS(w_source): median {statistics.median(scales):.4f}, "
              f"10th percentile {deciles[0]:.4f}, 90th {deciles[-1]:.4f}, max {max(scales):.4f}")


if __name__ == "__main__":
    main()
