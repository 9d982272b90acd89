"""Issue 22's rule for one source-centred prior on both pairs, as transfer_far_l2sp_tuning.toml's header fixed it
(2026-12-04 20:15 UTC, before the grids' runs): a candidate's margin on a pair is its mean validation DSC minus PR's on
that pair's grid; the candidate whose smaller margin of the two is the largest is taken to both test sets (ties within
0.005: the simpler, the `l2sp` penalty before l2sp_bayes, then the weaker prior); none if every smaller margin is below
-0.03. Candidates are named the same on both pairs (l2sp_a01, l2sp_a1, l2sp_r01, l2sp_r03, l2sp_r1).

    python benchmarks/choose_both_pairs.py --near RUNS/near_tuning RUNS/near_scale_tuning --near-pr pr_lr4 \
        --far RUNS/far_tuning RUNS/far_l2sp_tuning RUNS/far_scale_tuning --far-pr pr

Reads only validation results (it refuses a result scored on the test set).
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

#: the tie order of the header: the penalty before the Bayesian prior, the weaker prior first within each
TIE_ORDER = ["l2sp_a01", "l2sp_a1", "l2sp_r1", "l2sp_r03", "l2sp_r01"]
MARGIN_FLOOR = -0.03
TIE = 0.005


def validation_dsc(folders: list[Path]) -> dict[str, list[float]]:
    """Method -> the validation DSC of each of its finished runs, over the folders."""
    scores: dict[str, list[float]] = defaultdict(list)
    for folder in folders:
        for path in sorted(folder.glob("results/*.json")):
            result = json.loads(path.read_text())
            if result.get("scored_on") != "validation":
                raise SystemExit(f"{path}: scored on {result.get('scored_on')!r}; the rule reads validation only")
            scores[result["method"]].append(float(result["dsc"]))
    return scores


def choose(near: dict[str, list[float]], far: dict[str, list[float]], near_pr: str, far_pr: str,
           splits: int = 2) -> tuple[str | None, list[tuple[str, float, float]]]:
    """The chosen candidate (None: none) and every complete candidate's (name, near margin, far margin)."""
    base = (statistics.mean(near[near_pr]), statistics.mean(far[far_pr]))
    rows = [(name, statistics.mean(near[name]) - base[0], statistics.mean(far[name]) - base[1])
            for name in TIE_ORDER if len(near.get(name, [])) == splits and len(far.get(name, [])) == splits]
    if not rows:
        return None, rows
    best = max(min(n, f) for _, n, f in rows)
    if best < MARGIN_FLOOR:
        return None, rows
    tied = [name for name, n, f in rows if min(n, f) >= best - TIE]
    return tied[0], rows  # rows follow TIE_ORDER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--near", type=Path, nargs="+", required=True, help="the near pair's grid folders")
    parser.add_argument("--far", type=Path, nargs="+", required=True, help="the far pair's grid folders")
    parser.add_argument("--near-pr", default="pr_lr4", help="PR's method name in the near grid (default pr_lr4)")
    parser.add_argument("--far-pr", default="pr", help="PR's method name in the far grid (default pr)")
    args = parser.parse_args()
    near, far = validation_dsc(args.near), validation_dsc(args.far)
    chosen, rows = choose(near, far, args.near_pr, args.far_pr)
    print("| candidate | near margin | far margin | smaller |\n|---|---:|---:|---:|")
    for name, n, f in rows:
        print(f"| {name} | {n:+.3f} | {f:+.3f} | {min(n, f):+.3f} |")
    missing = [name for name in TIE_ORDER if name not in {r[0] for r in rows}]
    if missing:
        print(f"not complete on both grids: {', '.join(missing)}")
    print(f"chosen: {chosen or 'none'}")


if __name__ == "__main__":
    main()
