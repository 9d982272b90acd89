"""Turn the tuning grid's validation results into the benchmark's target settings, by the rule fixed in advance.

    python benchmarks/choose_target_settings.py benchmarks/transfer_cpu_tuning.toml runs/transfer_cpu_tuning

The rule (also in the header of transfer_cpu_tuning.toml, written before any result existed):
- the DWP variant with the highest mean validation DSC over all its runs (every split and train size, each run
  weighted equally) wins; within TIE of the best, the cheaper one (forward_mode "sample" before "lrt") and then
  the one that changes fewer settings wins;
- its settings that every Bayesian prior reads go to the per-method tables of dwp, gaussian and corrnormal in
  transfer_cpu.toml (the Gaussian and corrnormal priors are trained the same way, RI, PR and PRf as in the grid);
  the DWP-only ones to dwp's table alone.

Prints the ranking and the TOML lines to copy. Refuses an unfinished grid: a variant with missing runs would be
ranked on other splits than its rivals.
"""
from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np

from bayesprior.experiment.config import parse_config
from bayesprior.experiment.runs import ResultStore, all_runs

TIE = 0.005
#: settings every Bayesian prior reads: shared by dwp, gaussian and corrnormal in the benchmark
SHARED = ("kl_weight", "kl_warmup", "prior_init", "log_variance_init", "posterior_std_ratio", "forward_mode")


def dwp_variants(config) -> dict[str, dict]:
    """The DWP variants of the grid and the settings each changes from [target_training] (plain "dwp": none)."""
    base = {**config.target_train_options, "prior_init": config.prior_init, "kl_weight": config.kl_weight,
            "forward_mode": config.forward_mode}
    return {m: {k: v for k, v in config.target_method_options.get(m, {}).items()
                if k != "method" and (k not in base or base[k] != v)}
            for m in config.methods if config.base_method(m) == "dwp"}


def forward_mode(config, options: dict) -> str:
    return options.get("forward_mode", config.forward_mode)


def rank(config, results: list[dict]) -> list[tuple[str, float, int]]:
    """(variant, mean validation DSC, runs) per DWP variant, best first by the rule's order."""
    expected = {(r.split, r.train_size, r.method) for r in all_runs(config)}
    test_scored = [r for r in results if r.get("scored_on") != "validation"]
    if test_scored:
        raise SystemExit(f"a result scored on {test_scored[0].get('scored_on')!r} cases (split {test_scored[0]['split']}, "
                         f"{test_scored[0]['method']}): settings are chosen on validation cases only")
    found = {(r["split"], r["train_size"], r["method"]): r["dsc"] for r in results}
    missing = sorted(expected - set(found))
    if missing:
        raise SystemExit(f"{len(missing)} run(s) of the grid are not finished (first: split {missing[0][0]}, "
                         f"{missing[0][1]} cases, {missing[0][2]}); finish the grid first")
    variants = dwp_variants(config)
    scores = {m: [found[k] for k in expected if k[2] == m] for m in variants}
    best = max(float(np.mean(s)) for s in scores.values())

    def order(m: str) -> tuple:
        mean = float(np.mean(scores[m]))
        tied = mean >= best - TIE
        return (not tied, tied and forward_mode(config, variants[m]) == "lrt", tied and len(variants[m]), -mean)

    return [(m, float(np.mean(scores[m])), len(scores[m])) for m in sorted(variants, key=order)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, help="the tuning grid's TOML")
    parser.add_argument("out", type=Path, help="its experiment folder")
    args = parser.parse_args(argv)
    config = parse_config(tomllib.loads(args.config.read_text()), args.config)
    if config.score_on != "validation":
        raise SystemExit(f"{args.config}: scored on {config.score_on!r}; settings are chosen on validation cases only")
    results = ResultStore(args.out / "results").read_all()
    ranking = rank(config, results)
    for m, mean, n in ranking:
        print(f"{m:20s} mean validation DSC {mean:.4f} over {n} runs")
    for baseline in ("ri", "pr"):
        values = [r["dsc"] for r in results if r["method"] == baseline]
        if values:
            print(f"{baseline:20s} mean validation DSC {np.mean(values):.4f} over {len(values)} runs")
    winner = ranking[0][0]
    options = dwp_variants(config)[winner]
    shared = {k: options[k] for k in SHARED if k in options}
    own = {k: v for k, v in options.items() if k not in SHARED}
    print(f"\nchosen: {winner} (tie margin {TIE})")
    if not options:
        print("no change: the benchmark's [target_training] settings stand")
    for method, table in (("dwp", {**shared, **own}), ("gaussian", shared), ("corrnormal", shared)):
        if table:
            print(f"\n[target_training.per_method.{method}]")
            for key, value in table.items():
                print(f"{key} = {_toml(value)}")


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return repr(value)


if __name__ == "__main__":
    main(sys.argv[1:])
