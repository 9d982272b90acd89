"""The report stage: the tables, comparisons and figures of the finished runs the config plans, with notes on
the settings the results were made with (`report` draws and writes them)."""
from __future__ import annotations

from typing import Any, Sequence

from .context import ExperimentContext
from .report import plot_dsc_vs_train_size, plot_predictions, write_tables
from .runs import RunSpec, all_runs
from .scoring import read_figure_slice


def write_report(context: ExperimentContext) -> str | None:
    """Write the tables and figures of the results in the experiment folder that this config plans; the tables'
    text, or None while no planned run has finished.

    Raises:
        DataError: a result or figure slice file that is not one.
    """
    c = context.config
    out = context.out
    planned = set(all_runs(c))
    found = context.store.read_all()
    # a folder may also hold results of runs this config does not make (another config's, a method or size
    # taken out): they are left out of its tables and counted
    results = [r for r in found if RunSpec(r["split"], r["train_size"], r["method"]) in planned]
    if not results:
        return None
    bayesian = {name for name, method in context.methods.items() if method.bayesian}
    outside = f", {len(found) - len(results)} result(s) of runs outside this config left out" if len(found) > len(
        results) else ""
    note = (f"{_settings_note(results, bayesian)}; {_schedule_note(results)}; {_grid_note(results)}; "
            f"{len(planned) - len(results)} run(s) not finished yet{outside}.")
    text = write_tables(results, c.methods, c.train_sizes, out, note=note)
    plot_dsc_vs_train_size(results, c.methods, c.train_sizes, out / "dsc_vs_train_size.png")
    slices = {}
    for r in results:
        if r["split"] != 0:
            continue
        f = out / "results" / "figures" / f"split0_n{r['train_size']}_{r['method']}.npz"
        if f.is_file():
            slices[(r["train_size"], r["method"])] = read_figure_slice(f)
    plot_predictions(slices, c.methods, c.train_sizes, out / "predictions.png")
    return text


def _settings_note(results: Sequence[dict[str, Any]], bayesian: set[str]) -> str:
    """The loss settings the results were made with, as the results record them (not as the config says); the
    KL weight of the `bayesian` methods only (a deterministic run records one it never used)."""
    parts = []
    for key, name in (("ce_reduction", "CE reduction"), ("kl_weight", "KL weight")):
        methods = [m for m in dict.fromkeys(r["method"] for r in results) if key != "kl_weight" or m in bayesian]
        if not methods:
            continue
        values = {m: sorted({str(r.get(key)) for r in results if r["method"] == m}) for m in methods}
        if len({v for vs in values.values() for v in vs}) == 1:
            parts.append(f"{name} {next(iter(values.values()))[0]}")
        else:
            parts.append(f"{name} " + ", ".join(f"{m} {'/'.join(v)}" for m, v in values.items()))
    return ", ".join(parts)


def _schedule_note(results: Sequence[dict[str, Any]]) -> str:
    """What steered the results' learning-rate schedules, as the results record it: held-out pool cases' loss, or
    the training loss or its data term (``lr_monitor``, absent from a result's settings at its default)."""
    def steered_by(result: dict[str, Any]) -> str:
        k = len(result.get("schedule_cases", []))
        if k:
            return f"the loss of {k} held-out pool case(s) per split"
        settings = result.get("settings")
        train = settings.get("train_config", {}) if isinstance(settings, dict) else {}
        monitor = train.get("lr_monitor", "loss") if isinstance(train, dict) else "loss"
        return "the training data term" if monitor == "data" else "the training loss"
    by_method: dict[str, set[str]] = {}
    for r in results:
        by_method.setdefault(str(r.get("method")), set()).add(steered_by(r))
    ways = {way for ways in by_method.values() for way in ways}
    if len(ways) == 1:
        return f"learning rate steered by {next(iter(ways))}"
    return "learning rate steered by " + "; ".join(f"{' and '.join(sorted(w))} ({m})" for m, w in by_method.items())


def _grid_note(results: Sequence[dict[str, Any]]) -> str:
    """Which grid the overlap scores of the results were computed on."""
    grids = {r.get("score_grid", "preprocessed") for r in results}
    where = {"preprocessed": "the preprocessed grid (the network's input)",
             "original": "each image's original grid (predictions mapped back)"}
    return "DSC and IoU computed on " + " and ".join(where.get(g, str(g)) for g in sorted(grids))
