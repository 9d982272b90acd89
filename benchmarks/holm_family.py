"""Holm's correction over every test-set comparison a question has asked, from the experiments' comparisons files.

Once a test set has been asked about several candidates, one "better" among them is weaker evidence than one
planned test: issue 22's second look (transfer_{far,near}_a1_cpu.toml) corrects its "better" over all six of the
issue's candidate - PR comparisons on the two test sets. This prints them as one table: each comparison's mean paired
DSC difference and interval (as its experiment reported them), its raw Wilcoxon p and Holm's adjusted p over the
family, and the corrected verdict: "better" if the interval excludes 0 above, at least 6 splits and the adjusted
p < 0.05; "worse" if the interval is below 0 with the raw p < 0.05 (a harm at its plain level); else "no difference
shown".

    python benchmarks/holm_family.py benchmarks/transfer_near_cpu_comparisons.csv \
        benchmarks/transfer_far_cpu_comparisons.csv ... --train-size 5 --baseline pr [--exclude ri] [--plot family.png]

``--plot`` draws the family as intervals against 0 (and a non-inferiority margin, ``--margin``).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from bayesprior.experiment.statistics import ALPHA, MIN_SPLITS_FOR_VERDICT, holm_adjusted
from bayesprior.figures import pyplot, save_figure


def family_rows(files: list[Path], train_size: int, baseline: str,
                exclude: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Every comparison against `baseline` at `train_size` in `files`, each labelled with its file, but those of the
    methods in `exclude` (a baseline of the question, such as RI against PR, is no candidate)."""
    rows = []
    for path in files:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if int(row["train_size"]) == train_size and row["baseline"] == baseline and \
                        row["method"] not in exclude:
                    rows.append({**row, "file": path.name.removesuffix("_comparisons.csv")})
    return rows


def corrected_verdict(row: dict[str, str], adjusted_p: float) -> str:
    low, high, raw_p = float(row["ci_low"]), float(row["ci_high"]), float(row["wilcoxon_p"])
    if int(row["splits"]) < MIN_SPLITS_FOR_VERDICT:
        return f"too few splits ({row['splits']})"
    if low > 0 and adjusted_p < ALPHA:
        return "better"
    if high < 0 and raw_p < ALPHA:
        return "worse"
    return "no difference shown"


def plot_family(rows: list[dict[str, str]], adjusted: list[float], path: Path, margin: float | None) -> None:
    """One line per comparison: its mean paired DSC difference and 95 % interval, labelled with the Holm p."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.2))
    for y, (row, p) in enumerate(zip(rows, adjusted, strict=True)):
        mean, low, high = (float(row[k]) for k in ("mean_dsc_difference", "ci_low", "ci_high"))
        ax.plot([low, high], [y, y], color="C0")
        ax.plot(mean, y, "o", color="C0")
        ax.annotate(f"Holm p {p:.3f}", (high, y), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    if margin is not None:
        ax.axvline(margin, color="grey", linestyle="--", linewidth=0.8, label=f"non-inferiority margin {margin:+g}")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{r['method']} ({r['file']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"paired DSC difference against {rows[0]['baseline']}, mean and 95 % bootstrap CI")
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="comparisons CSV files (an experiment's comparisons.csv)")
    parser.add_argument("--train-size", type=int, default=5)
    parser.add_argument("--baseline", default="pr")
    parser.add_argument("--exclude", action="append", default=[], metavar="METHOD",
                        help="leave this method's comparisons out of the family (e.g. ri: a baseline, no candidate)")
    parser.add_argument("--plot", type=Path, help="also draw the family's intervals to this PNG")
    parser.add_argument("--margin", type=float, default=None, help="a non-inferiority margin to draw (e.g. -0.03)")
    args = parser.parse_args()
    rows = family_rows(args.files, args.train_size, args.baseline, tuple(args.exclude))
    absent = sorted(set(args.exclude) - {r["method"] for r in family_rows(args.files, args.train_size, args.baseline)})
    if absent:  # a misspelt method would leave the family larger than meant, silently
        parser.error(f"--exclude {', '.join(absent)}: no such method compared against {args.baseline} at "
                     f"{args.train_size} cases in the files given")
    if not rows:
        parser.error(f"no comparison against {args.baseline} at {args.train_size} cases in the files given"
                     f"{' but the excluded ones' if args.exclude else ''}")
    adjusted = holm_adjusted([float(r["wilcoxon_p"]) for r in rows])
    print(f"Holm over {len(rows)} comparisons against {args.baseline} at {args.train_size} cases\n")
    print("| test | method | splits | mean paired DSC difference [95 % CI] | Wilcoxon p | Holm p | verdict (corrected) |")
    print("|---|---|---:|---|---:|---:|---|")
    for row, p in zip(rows, adjusted, strict=True):
        print(f"| {row['file']} | {row['method']} | {row['splits']} | {float(row['mean_dsc_difference']):+.3f} "
              f"[{float(row['ci_low']):+.3f}, {float(row['ci_high']):+.3f}] | {float(row['wilcoxon_p']):.4f} | "
              f"{p:.4f} | {corrected_verdict(row, p)} |")
    if args.plot:
        plot_family(rows, list(adjusted), args.plot, args.margin)


if __name__ == "__main__":
    main()
