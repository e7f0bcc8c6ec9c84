"""Issue 10, item 2: every figure is derived from checksummed records.

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

from harness.cli import app
from harness.config import load_config
from harness.results import read_results
from harness.runner import run
from rospr.artifacts import seal

TASKS = [{"name": "builtin/animals", "limit": 10, "prompts": ["mentions_animal", "is_there_animal"]},
         {"name": "builtin/nli", "limit": 8}]


def hand_accuracy(path: Path) -> float:
    """The accuracy of a records file computed from predictions and gold labels alone."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(r["prediction"] == r["gold"] for r in rows) / len(rows)


def one_line_error(result, *needles: str) -> None:
    text = result.output
    assert result.exit_code == 2 and "Traceback" not in text, text
    joined = " ".join(text.split())
    for n in needles:
        assert n in joined, (n, text)


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("trust-figures")
    tree = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": TASKS,
            "scoring": {"batch_size": 4}, "onnxruntime": {"cache_dir": str(root / "onnx"), "threads": 1}}
    config = root / "run.yaml"
    config.write_text(json.dumps(tree))
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
    assert res.execution["resumed"] == len(golden.units) and res.execution["computed"] == 0
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
    assert first.execution["computed"] == len(golden.units)
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
    assert second.execution["cached"] == (len(golden.units) if reseal else 0)
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
    from harness.compare import compare_runs, load_run_scores

    scores = load_run_scores(root / "golden")
    cmp = compare_runs(scores, scores, n_boot=50)
    by_prompt = {(r.task, r.prompt): r.new for r in cmp.rows if r.prompt}
    for u in golden.units:
        assert by_prompt[(u.task, u.prompt)] == pytest.approx(hand_accuracy(root / "golden" / u.records), abs=1e-12)
    assert all(r.delta == 0 for r in cmp.rows)
