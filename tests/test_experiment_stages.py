"""Splitting the experiment by stage changed no behaviour: a finished experiment run again trains nothing and
reports byte for byte as before, and the results and source settings an older bayesprior wrote are taken as
they are (the fixture holds them as the code before the split wrote them)."""
import json
from pathlib import Path

from test_experiment_settings import TINY as SETTINGS_TINY

from bayesprior.experiment import source_stage, target_stage
from bayesprior.experiment.config import parse_config
from bayesprior.experiment.pipeline import Experiment
from bayesprior.hashing import cases_sha256
from bayesprior.locks import LOCK_NAME

#: the tiny experiment of the settings tests, with a method from the source and a learned prior
TINY = {**SETTINGS_TINY, "protocol": {**SETTINGS_TINY["protocol"], "methods": ["ri", "pr", "corrnormal"]}}
#: written again by every run of an experiment (its config, the source stage's end marker and its report); every
#: other file only once
REWRITTEN = {"experiment.json", "source/done.json", "table.md", "table.csv", "comparisons.csv",
             "dsc_vs_train_size.png", "predictions.png"}
#: results and source settings as bayesprior wrote them before the experiment was split by stage
BEFORE_THE_STAGES = Path(__file__).parent / "experiment_made_before_the_stages.json"


def _experiment(raw, out, lines):
    return Experiment(parse_config(json.loads(json.dumps(raw))), out, progress=False, log=lines.append)


def _files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != LOCK_NAME}


def _refuse(*args, **kwargs):
    raise AssertionError("a finished experiment trained or harvested again")


def test_a_finished_experiment_run_again_trains_nothing_and_reports_byte_for_byte_as_before(tmp_path, monkeypatch):
    out = tmp_path / "out"
    first_text = _experiment(TINY, out, []).run()
    before = _files(out)
    for module, name in ((source_stage, "train"), (source_stage, "harvest_kernels"), (target_stage, "train")):
        monkeypatch.setattr(module, name, _refuse)
    lines = []
    second_text = _experiment(TINY, out, lines).run()
    after = _files(out)
    assert second_text == first_text and "UNet-CorrNormal" in second_text
    assert after.keys() == before.keys()
    assert all(after[name][0] == before[name][0] for name in after)  # every file byte for byte
    assert [name for name in after if after[name][1] != before[name][1] and name not in REWRITTEN] == []
    assert "0 target run(s) to do in shard 0/1" in lines
    assert not any("settings changed" in line or "records no settings" in line for line in lines)


def _write_as_before(out: Path, files: dict[str, dict]) -> dict[str, str]:
    """Write the fixture's files as `atomic_write_json` wrote them before the split; their text."""
    written = {}
    for name, value in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        written[name] = json.dumps(value, indent=2) + "\n"
        (out / name).write_text(written[name])
    return written


def test_results_and_source_settings_written_before_the_stages_are_taken_as_they_are(tmp_path):
    fixture = json.loads(BEFORE_THE_STAGES.read_text())
    out = tmp_path / "out"
    written = _write_as_before(out, fixture["files"])
    lines = []
    experiment = _experiment(fixture["config"], out, lines)
    stored = fixture["files"]["results/split0_n1_ri.json"]["settings"]
    train = [case for case in experiment.data.cases(experiment.config.target, "target") if case.case_id in
             fixture["files"]["results/split0_n1_ri.json"]["train_cases"]]
    # the synthetic generator is deterministic: the cases are those the fixture was made with, or nothing compares
    assert cases_sha256(train) == stored["train_data"], "the synthetic target cases differ from the fixture's"
    experiment.run()
    assert not any("settings changed" in line or "records no settings" in line for line in lines), lines
    assert "1 target run(s) to do in shard 0/1" in lines  # pr, the one run the fixture has no result of
    for name, text in written.items():  # taken as made with this configuration's settings: kept, not redone
        assert (out / name).read_text() == text, name
    assert not (out / "runs" / "split0_n1_ri").exists() and not (out / "runs" / "split0_n1_gaussian").exists()
    assert not (out / "superseded").exists() and (out / "results" / "split0_n1_pr.json").is_file()
