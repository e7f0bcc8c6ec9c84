"""harness/schema.py: a results file with a figure that is not a finite number is never written."""

from __future__ import annotations

import re

import pytest


def test_a_results_file_with_a_non_finite_figure_is_never_written(tmp_path):
    """Writing refuses what reading would: NaN or inf anywhere, named by its field."""
    from rospr_harness.schema import Execution, Provenance, ResultsFile, UnitResult, read_results, write_results
    from rospr_harness.runner.stages import Stages

    prov = Provenance(git_revision=None, git_dirty=None, package_versions={}, config_hash="x", model={},
                      backend="torch", seed=0, host={}, started_at="now", wall_s=0.0)
    unit = UnitResult(task="t", prompt="p", method="t0", n=2, accuracy=float("inf"), records="records/u.jsonl")
    path = tmp_path / "results.json"
    for bad, field in ((ResultsFile(provenance=prov, config={}, units=[unit], tasks=[], overall={}), "units[0].accuracy"),
                       (ResultsFile(provenance=prov, config={}, units=[], tasks=[], overall={"t0": float("nan")}),
                        "overall.t0"),
                       (ResultsFile(provenance=prov, config={}, units=[], tasks=[], overall={},
                                    execution=Execution(executor="in_process", time=Stages().summary().model_copy(
                                        update={"wall_s": float("-inf")}))), "execution.time.wall_s")):
        with pytest.raises(ValueError, match=f"field {re.escape(field)} is not a finite number"):
            write_results(path, bad)
        assert not path.exists()
    good = ResultsFile(provenance=prov, config={}, units=[unit.model_copy(update={"accuracy": 0.5})], tasks=[], overall={})
    write_results(path, good)
    assert read_results(path) == good


def test_a_results_file_of_schema_1_2_is_read_typed(tmp_path):
    """A 1.2 file (no spreads, no statistics, execution as Ray wrote it) reads into the typed models."""
    import json

    from rospr_harness.schema import Execution, read_results

    time = {"wall_s": 3.5, "scorers": 2, "other_s": 0.1, "model_share": None, "scoring_examples": 8,
            "stages_s": dict.fromkeys(("setup", "prepare", "executor", "load", "cache", "tokenise", "select", "wait",
                                       "write"), 0.25),
            "work_s": {"retrieval": 0.0, "var": 0.0, "scoring": 1.0, "model": 0.5},
            "batches": {"var": 0, "scoring": 2}, "startup_s": 0.4, "first_batch_s": None}
    execution = {"executor": "ray", "resumed": 1, "computed": 2, "cached": 0, "driver_s": 1.5, "scorers": 2,
                 "resubmitted": 1, "actor_restarts": 1, "actors_lost": 0,
                 "nodes": {"n1": {"ip": "127.0.0.1", "batches": 2}},
                 "retried": [{"kind": "score", "actor": 0, "server": None, "attempt": 2, "reason": "died"}],
                 "time": time}
    old = {"schema_version": "1.2", "config": {}, "tasks": [], "overall": {}, "execution": execution,
           "provenance": {"git_revision": None, "git_dirty": None, "package_versions": {}, "config_hash": "x",
                          "model": {}, "backend": "onnxruntime", "seed": 0, "host": {}, "started_at": "now",
                          "wall_s": 3.6},
           "units": [{"task": "t", "prompt": "p", "method": "t0", "n": 2, "accuracy": 0.5,
                      "records": "records/u.jsonl", "sha256": "ab"}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    res = read_results(path)
    assert isinstance(res.execution, Execution) and res.execution.time.stages_s.wait == 0.25
    assert res.execution.nodes["n1"].batches == 2 and res.execution.retried[0].attempt == 2
    assert res.units[0].stderr is None and res.statistics is None
    # written back, the execution object has the same keys and values as before it was typed (no nulls added)
    assert res.execution.model_dump(mode="json") == execution
    assert Execution(executor="in_process").model_dump() == {"executor": "in_process", "resumed": 0, "computed": 0,
                                                            "cached": 0}


def test_the_schema_describes_execution_and_the_spreads():
    from rospr_harness.schema import ResultsFile

    schema = ResultsFile.model_json_schema()
    defs = schema["$defs"]
    assert set(defs["RunTime"]["properties"]["stages_s"]["$ref"].split("/")[-1:]) == {"StageSeconds"}
    assert set(defs["StageSeconds"]["properties"]) == {"setup", "prepare", "executor", "load", "cache", "tokenise",
                                                       "select", "wait", "write"}
    for name in ("UnitResult", "TaskSummary"):
        assert {"stderr", "ci_low", "ci_high"} <= set(defs[name]["properties"])
    assert "overrides" in defs["Provenance"]["properties"] and "statistics" in schema["properties"]


def test_units_and_tasks_carry_their_standard_error_and_interval(run_config, fake_scorer, tmp_path):
    """Per unit: lm-eval's acc_stderr of the records' scores (statistics.stdev, the sample one, / sqrt(n)) and an
    interval around the accuracy; per task, where every prompt scored every row: the stderr of each row's mean
    over the prompts. Both the same when the run is resumed, and in report.md and report.html. The records'
    scores are the fake scorer's: the figures are derived from whatever the records hold."""
    import json
    import math
    import statistics

    from rospr_harness.schema import read_records, read_results
    from rospr_harness.runner import run

    cfg = run_config(tasks=[{"name": "builtin/animals", "limit": 12}, {"name": "builtin/nli", "limit": 9}])
    res = run(cfg, tmp_path / "run")
    assert any(0 < u.accuracy < 1 for u in res.units)  # not a degenerate case: some spread to measure
    by_task: dict = {}
    for u in res.units:
        scores = {r.index: r.score for r in read_records(tmp_path / "run" / u.records)}
        by_task.setdefault(u.task, []).append(scores)
        values = list(scores.values())
        assert u.stderr == pytest.approx(statistics.stdev(values) / math.sqrt(len(values)), rel=1e-12, abs=1e-15)
        assert u.ci_low <= u.accuracy <= u.ci_high and 0 <= u.ci_low and u.ci_high <= 1
    for s in res.tasks:
        units = by_task[s.task]
        if all(set(u) == set(units[0]) for u in units):
            row_means = [statistics.fmean(u[r] for u in units) for r in units[0]]
            assert s.stderr == pytest.approx(statistics.stdev(row_means) / math.sqrt(len(row_means)), abs=1e-12)
        assert s.ci_low <= s.mean <= s.ci_high
    assert res.statistics.stderr == "sample" and res.statistics.bootstrap_replicates == 2000
    resumed = run(cfg, tmp_path / "run", resume=True)  # every unit kept: its figures recomputed from its records
    assert [(u.stderr, u.ci_low, u.ci_high) for u in resumed.units] == [(u.stderr, u.ci_low, u.ci_high)
                                                                         for u in res.units]
    assert [(t.stderr, t.ci_low, t.ci_high) for t in resumed.tasks] == [(t.stderr, t.ci_low, t.ci_high)
                                                                         for t in res.tasks]
    assert read_results(tmp_path / "run" / "results.json").units == resumed.units
    md = (tmp_path / "run" / "report.md").read_text()
    page = (tmp_path / "run" / "report.html").read_text()
    for u in res.units:
        cells = [f"{100 * u.accuracy:.1f}", f"{100 * u.stderr:.1f}", f"{100 * u.ci_low:.1f} – {100 * u.ci_high:.1f}"]
        assert f"| {u.task} | {u.prompt} | {u.method} | {u.n} | " + " | ".join(cells) + " |" in md
        assert "".join(f'<td class="num">{c}</td>' for c in cells) in page
    # an edited interval is caught by verify, as an edited accuracy is
    from rospr_harness.runner.verify import verify_run

    assert verify_run(tmp_path / "run") == []
    path = tmp_path / "run" / "results.json"
    data = json.loads(path.read_text())
    data["units"][1]["ci_high"] = 0.999
    path.write_text(json.dumps(data))
    (problem,) = verify_run(tmp_path / "run")
    assert "units[1]: ci_high 0.999 (records: " in problem
