"""Every figure of a whole run is derived from its checksummed records (harness/figures.py).

An accuracy edited in results.json does not survive a resume; one edited in a unit-cache entry's
metadata is not reused (even with the entry's seal redone); ``rospr compare`` refuses records that
fail their sha256, or whose scores do not follow from their predictions, naming the file. The
reference figures are recomputed here by hand from the records (mean of 1[prediction == gold]).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rospr_harness.cli import app
from rospr_harness.config import load_config
from rospr_harness.schema import read_results
from rospr_harness.runner import run
from helpers import bigbench_task, one_line_error, toy_task
from rospr.artifacts import seal

TASKS = [{"name": "builtin/animals", "limit": 10, "prompts": ["mentions_animal", "is_there_animal"]},
         {"name": "builtin/nli", "limit": 8}]


def hand_accuracy(path: Path) -> float:
    """The accuracy of a records file computed from predictions and gold labels alone."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(r["prediction"] == r["gold"] for r in rows) / len(rows)


@pytest.fixture(scope="module")
def finished(run_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("trust-figures")
    config = run_config.write(root / "run.yaml", tasks=TASKS, scoring={"batch_size": 4},
                              onnxruntime={"cache_dir": str(root / "onnx"), "threads": 1})
    res = run(load_config(config), root / "golden")
    for u in res.units:  # the harness's figures are the hand computation's
        assert u.accuracy == pytest.approx(hand_accuracy(root / "golden" / u.records), abs=1e-12)
    return config, root, res


def test_golden_figures_agree_with_a_hand_computation(finished):
    _, root, res = finished
    accs = {}
    for u in res.units:
        accs.setdefault(u.task, []).append(hand_accuracy(root / "golden" / u.records))
    means = {t: sum(a) / len(a) for t, a in accs.items()}
    assert res.overall["t0"] == pytest.approx(sum(means.values()) / len(means), abs=1e-12)


def test_an_accuracy_edited_in_results_json_does_not_survive_resume(finished, tmp_path):
    config, root, golden = finished
    out = tmp_path / "run"
    shutil.copytree(root / "golden", out)
    data = json.loads((out / "results.json").read_text())
    data["units"][0]["accuracy"] = 0.999
    data["units"][0]["n"] = 1000
    data["overall"]["t0"] = 0.999
    (out / "results.json").write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(out)])
    assert r.exit_code == 0, r.output
    res = read_results(out / "results.json")
    assert res.execution.resumed == len(golden.units) and res.execution.computed == 0
    assert res.units[0].accuracy == pytest.approx(hand_accuracy(out / res.units[0].records), abs=1e-12)
    assert res.units[0].n == 10
    assert res.overall == golden.overall and res.tasks == golden.tasks
    assert "99.9" not in (out / "report.md").read_text()


def test_rospr_verify_finds_an_edited_accuracy(finished, tmp_path):
    _, root, _ = finished
    r = CliRunner().invoke(app, ["verify", str(root / "golden")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    shutil.copytree(root / "golden", out)
    data = json.loads((out / "results.json").read_text())
    data["units"][1]["accuracy"] = 0.999
    (out / "results.json").write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["verify", str(out)])
    assert r.exit_code == 1 and "units[1]" in " ".join(r.output.split()), r.output


@pytest.mark.parametrize("reseal", [False, True])
def test_an_accuracy_edited_in_a_cache_entry_is_not_reused(finished, tmp_path, reseal):
    config, root, golden = finished
    cache = ["cache.enabled=true", f"cache.dir={tmp_path / 'units'}"]
    first = run(load_config(config, cache), tmp_path / "a")
    assert first.execution.computed == len(golden.units)
    metas = sorted((tmp_path / "units").glob("*/*/meta.json"))
    assert len(metas) == len(golden.units)
    edited = {}
    for m in metas:
        meta = json.loads(m.read_text())
        meta["unit"]["accuracy"], meta["unit"]["n"] = 0.999, 1000
        if reseal:  # a forger who redoes the seal: the number still comes from the records
            meta = seal(meta)
        m.write_text(json.dumps(meta))
        edited[meta["key"]] = meta
    second = run(load_config(config, cache), tmp_path / "b")
    # unsealed: every entry is refused and recomputed; resealed: reused, but with the records' figures
    assert second.execution.cached == (len(golden.units) if reseal else 0)
    for g, u in zip(golden.units, second.units):
        assert (u.n, u.accuracy) == (g.n, g.accuracy)
        assert u.accuracy == pytest.approx(hand_accuracy(tmp_path / "b" / u.records), abs=1e-12)
    assert second.overall == golden.overall


def _tamper_scores(out: Path, unit_index: int = 0) -> Path:
    """Every record of a unit scored 1.0 (the issue's "+64.6 points" case); the sha256 is left."""
    res = read_results(out / "results.json")
    path = out / res.units[unit_index].records
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "score": 1.0}) + "\n" for r in rows))
    return path


def test_compare_refuses_records_that_fail_their_checksum(finished, tmp_path):
    _, root, _ = finished
    out = tmp_path / "run"
    shutil.copytree(root / "golden", out)
    path = _tamper_scores(out)
    r = CliRunner().invoke(app, ["compare", str(out), "--against", str(root / "golden")])
    one_line_error(r, str(path), "sha256", "units[0].sha256")
    r = CliRunner().invoke(app, ["compare", str(root / "golden"), "--against", str(out)])
    one_line_error(r, str(path))


def test_compare_refuses_scores_that_do_not_follow_from_the_predictions(finished, tmp_path):
    """A forger who also updates the sha256 in results.json: the scores are recomputed, and disagree."""
    _, root, _ = finished
    out = tmp_path / "run"
    shutil.copytree(root / "golden", out)
    path = _tamper_scores(out)
    data = json.loads((out / "results.json").read_text())
    data["units"][0]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / "results.json").write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["compare", str(out), "--against", str(root / "golden")])
    one_line_error(r, str(path), "field 'score'")


def test_compare_of_malformed_results_names_the_file(finished, tmp_path):
    _, root, _ = finished
    out = tmp_path / "run"
    shutil.copytree(root / "golden", out)
    (out / "results.json").write_text('{"schema_version": "1.2", "units": [')
    r = CliRunner().invoke(app, ["compare", str(out), "--against", str(root / "golden")])
    one_line_error(r, str(out / "results.json"), "not valid JSON")


def test_compare_of_untouched_runs_uses_the_records(finished):
    """Against itself: delta 0 everywhere and the accuracy per prompt is the hand computation."""
    _, root, golden = finished
    from rospr_harness.compare import compare_runs, load_run_scores

    scores = load_run_scores(root / "golden")
    cmp = compare_runs(scores, scores, n_boot=50)
    by_prompt = {(r.task, r.prompt): r.new for r in cmp.rows if r.prompt}
    for u in golden.units:
        assert by_prompt[(u.task, u.prompt)] == pytest.approx(hand_accuracy(root / "golden" / u.records), abs=1e-12)
    assert all(r.delta == 0 for r in cmp.rows)


# -- figures stay honest on degenerate input ---------------------------------------------

def hand_credit(rec: dict) -> float:
    """A record's credit by hand: 1/k when the gold is among the k choices sharing the top raw score."""
    top = max(rec["scores"])
    tied = [i for i, s in enumerate(rec["scores"]) if s == top]
    return (rec["gold"] in tied) / len(tied)


def test_choices_that_render_the_same_text_are_skipped_with_their_reason(run_config, tmp_path):
    """'yes ||| yes' on every row, and row-dependent choices equal on two rows: those rows are skipped
    (never counted right by the choices' order), their reason is in results.json and the report, the
    empty unit has no accuracy and stays out of the task mean, and compare lists it."""
    from rospr_harness.runner.plan import SAME_CHOICES

    data = toy_task(tmp_path, [("same", "yes ||| yes"), ("pair", "'{{a}} ||| {{b}}'"), ("ok", "no ||| yes")])
    cfg = run_config(data=data, tasks=["toy"], onnxruntime={"cache_dir": str(tmp_path / "onnx"), "threads": 1})
    res = run(cfg, tmp_path / "run")
    units = {u.prompt: u for u in res.units}
    assert (units["same"].n, units["same"].skipped, units["same"].accuracy) == (0, 6, None)
    assert units["same"].skipped_reasons == {SAME_CHOICES: 6}
    assert (units["pair"].n, units["pair"].skipped, units["pair"].skipped_reasons) == (4, 2, {SAME_CHOICES: 2})
    pair = [json.loads(line) for line in (tmp_path / "run" / units["pair"].records).read_text().splitlines()]
    assert [r["index"] for r in pair] == [0, 2, 3, 5]
    hand = {p: sum(map(hand_credit, rs)) / len(rs) for p, rs in
            (("pair", pair), ("ok", [json.loads(x) for x in (tmp_path / "run" / units["ok"].records).read_text().splitlines()]))}
    assert units["pair"].accuracy == pytest.approx(hand["pair"], abs=1e-12)
    (task,) = res.tasks
    assert task.n_prompts == 2 and task.mean == pytest.approx((hand["pair"] + hand["ok"]) / 2, abs=1e-12)
    report = " ".join((tmp_path / "run" / "report.md").read_text().split())
    assert "## Skipped rows" in report and f"| toy | same | no scorable row ({SAME_CHOICES}: 6) | 0 | 6 |" in report
    assert "Skipped rows" in (tmp_path / "run" / "report.html").read_text()
    r = CliRunner().invoke(app, ["compare", str(tmp_path / "run"), "--against", str(tmp_path / "run")])
    assert r.exit_code == 0 and "not compared (no scorable row" in " ".join(r.output.split()), r.output


def test_a_tie_between_a_right_and_a_wrong_choice_earns_half(run_config, tmp_path):
    """Choices that differ as text but not as tokens ('yes' and fullwidth 'ｙｅｓ', one after NFKC) score
    the same on every row: with gold 0 on every row the first-on-a-tie rule gave 100%; by hand it is 1/2."""
    data = toy_task(tmp_path, [("width", "yes ||| ｙｅｓ")])
    rows = tmp_path / "rows" / "toy" / "validation.jsonl"
    rows.write_text("".join(json.dumps({"text": f"row {i}", "a": "x", "b": "y", "label": 0}) + "\n" for i in range(5)))
    cfg = run_config(data=data, tasks=["toy"], onnxruntime={"cache_dir": str(tmp_path / "onnx"), "threads": 1})
    (unit,) = run(cfg, tmp_path / "run").units
    recs = [json.loads(line) for line in (tmp_path / "run" / unit.records).read_text().splitlines()]
    assert all(r["scores"][0] == r["scores"][1] and r["tied"] == [0, 1] and r["score"] == 0.5 for r in recs)
    assert unit.n == 5 and unit.accuracy == pytest.approx(sum(map(hand_credit, recs)) / 5) == 0.5
    # the credit is recomputed from the records: a record claiming a full point for its tie is refused
    recs[0]["score"] = 1.0
    from rospr_harness.schema import Record, RecordsError, record_scores

    with pytest.raises(RecordsError, match="field 'score' is 1.0 but its prediction scores 0.5"):
        record_scores([Record.model_validate(r) for r in recs], "r.jsonl")


class _NaNScorer:
    """A scorer whose second batch comes back NaN (a broken export, an fp16 overflow)."""

    def __init__(self, scorer) -> None:
        self.scorer, self.prompt_dim, self.calls = scorer, scorer.prompt_dim, 0

    def score(self, batch):
        import numpy as np

        self.calls += 1
        out = np.asarray(self.scorer.score(batch))
        return np.full_like(out, np.nan) if self.calls == 2 else out


def test_a_backend_returning_nan_fails_the_unit_in_one_line(finished, tmp_path):
    """NaN log-probabilities would make the prediction arbitrary (argmax picks the first NaN) and the
    records unreadable as JSON: the unit is refused, naming it and the field, and nothing NaN is written."""
    from rospr_harness.backends import Backend, create_backend

    config, root, _ = finished
    cfg = load_config(config)
    real = create_backend(cfg)
    with pytest.raises(ValueError, match=r"record \d+ \(row \d+\): field scores\[\d\] is not a finite number"):
        run(cfg, tmp_path / "run", backend=Backend(real.name, _NaNScorer(real.scorer), real.tokenizer, real.identity))
    for f in (tmp_path / "run").rglob("*.json*"):
        assert "NaN" not in f.read_text(), f


# -- BIG-bench scores graded as written down, by hand ------------------------------------------------

# Grades that do not depend on what the model predicts (all scores of an example equal).
FIXED = [
    ({"a": 0, "b": 0}, 0.0),                    # all zero: counts, earns 0
    ({"a": 1, "b": 1.0}, 1.0),                  # several maxima (int and float alike)
    ({"a": -1, "b": -1}, -1.0),                 # negative: a negative grade, no clipping
    ({"a": 0.25, "b": 0.25, "c": 0.25}, 0.25),  # fractional
    ({"a": 2, "b": 2}, 2.0),                    # above 1: no normalisation
]
FREE = {"x": 1, "y": 0.5, "z": -0.5}  # the grade is the predicted choice's score


def test_unusual_scores_are_graded_as_written_down(run_config, tmp_path):
    examples = [{"input": f"question {i}", "target_scores": s} for i, (s, _) in enumerate(FIXED)]
    examples.append({"input": "which one", "target_scores": FREE})
    bigbench_task(tmp_path / "bb", "mytask", {"name": "mytask", "examples": examples})
    cfg = run_config(backend="torch", data={"bigbench": str(tmp_path / "bb")}, tasks=["bigbench/mytask"])
    res = run(cfg, tmp_path / "run")
    (unit,) = res.units
    records = [json.loads(line) for line in (tmp_path / "run" / unit.records).read_text().splitlines()]
    assert len(records) == 6
    for rec, (_, grade) in zip(records, FIXED):
        assert rec["score"] == grade
    free = records[-1]
    # by hand from the model's own scores: argmax, the first on a tie, then that choice's target score
    best = max(free["scores"])
    predicted = free["scores"].index(best)
    assert free["prediction"] == predicted
    hand_free = list(FREE.values())[predicted]
    assert free["score"] == hand_free
    hand_mean = (0.0 + 1.0 - 1.0 + 0.25 + 2.0 + hand_free) / 6
    assert unit.accuracy == pytest.approx(hand_mean, abs=1e-12)
    assert res.overall["t0"] == pytest.approx(hand_mean, abs=1e-12)
