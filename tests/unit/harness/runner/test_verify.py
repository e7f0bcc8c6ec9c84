"""rospr_harness.runner.verify, class 4: no figure hides what happened. ``rospr verify`` recomputes every
figure of results.json from what it derives from (the records, the config's plan, the counts): an edited
aggregate, a unit removed or added, a count changed, each is one problem line naming the field, and the
command exits 1. A run as written verifies clean."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import cli

from rospr_harness.runner.verify import verify_run


@pytest.fixture(scope="module")
def written(run_config, tmp_path_factory):
    """A finished run of two tasks (t0 over their prompts), fake scores; its folder and results.json."""
    from fakes import fake_scoring

    from rospr_harness.runner import run

    out = tmp_path_factory.mktemp("verify") / "run"
    cfg = run_config(tasks=[{"name": "builtin/animals", "limit": 6}, {"name": "builtin/nli", "limit": 5}])
    with fake_scoring():
        run(cfg, out)
    return out, json.loads((out / "results.json").read_text())


def edited(written, edit) -> list[str]:
    """The problems ``verify_run`` finds once ``edit(results)`` changed results.json (restored afterwards)."""
    out, original = written
    data = copy.deepcopy(original)
    edit(data)
    path = out / "results.json"
    path.write_text(json.dumps(data))
    try:
        return verify_run(out)
    finally:
        path.write_text(json.dumps(original))


def test_class_4_a_run_as_written_verifies_clean(written):
    out, data = written
    assert len(data["units"]) > 4 and len(data["tasks"]) == 2 and set(data["overall"]) == {"t0"}
    assert verify_run(out) == []


def test_class_4_an_edited_overall_is_found(written):
    def edit(d):
        d["overall"]["t0"] += 0.05
    (problem,) = edited(written, edit)
    assert "overall.t0" in problem and "the task means give" in problem


def test_class_4_an_overall_for_a_method_that_was_not_run_is_found(written):
    (problem,) = edited(written, lambda d: d["overall"].__setitem__("rospr", 0.9))
    assert "overall.rospr: 0.9" in problem


@pytest.mark.parametrize("field,value", [("mean", 0.99), ("median", 0.01), ("max", 1.0), ("n_prompts", 9),
                                         ("stderr", 0.5)])
def test_class_4_an_edited_task_summary_is_found(written, field, value):
    def edit(d):
        d["tasks"][1][field] = value
    problems = edited(written, edit)
    task = written[1]["tasks"][1]
    assert any(f"tasks {task['task']} / {task['method']}: {field} {value}" in p for p in problems), problems


def test_class_4_a_task_summary_removed_or_added_is_found(written):
    gone = written[1]["tasks"][0]
    (problem,) = edited(written, lambda d: d["tasks"].pop(0))
    assert f"tasks {gone['task']} / {gone['method']}: missing" in problem
    extra = {**gone, "task": "builtin/topic"}
    (problem,) = edited(written, lambda d: d["tasks"].append(extra))
    assert f"tasks builtin/topic / {gone['method']}: listed, but no scored unit" in problem


def test_class_4_a_removed_unit_is_found_even_with_every_aggregate_and_count_fixed_up(written):
    """A unit taken out, and the task summaries, overall and counts rewritten to match what is left: the
    config's plan still lists it."""
    from rospr_harness.figures import summarise
    from rospr_harness.schema import ResultsFile

    gone = written[1]["units"][2]

    def edit(d):
        d["units"].pop(2)
        res = ResultsFile.model_validate(d)
        tasks, overall = summarise(res.units)
        d["tasks"] = [t.model_dump(exclude={"stderr", "ci_low", "ci_high"}) for t in tasks]
        d["overall"] = overall
        d["execution"]["computed"] -= 1
    problems = edited(written, edit)
    assert any(f"{gone['task']} / {gone['prompt']} / {gone['method']} of the config's plan is not listed" in p
               for p in problems), problems


def test_class_4_an_added_unit_is_found(written):
    def twice(d):
        d["units"].append(d["units"][0])
    problems = edited(written, twice)
    u = written[1]["units"][0]
    assert any(f"{u['task']} / {u['prompt']} / {u['method']} is listed 2 times" in p for p in problems), problems

    def foreign(d):  # a unit of a method the config never ran, with intact records
        d["units"].append({**d["units"][0], "method": "rospr"})
    problems = edited(written, foreign)
    assert any(f"{u['task']} / {u['prompt']} / rospr is not a unit of the run's config" in p for p in problems)


@pytest.mark.parametrize("count", ["computed", "cached", "resumed"])
def test_class_4_a_changed_count_is_found(written, count):
    def edit(d):
        d["execution"][count] += 2
    (problem,) = edited(written, edit)
    assert "execution:" in problem and f"but {len(written[1]['units'])} are listed" in problem


def test_class_4_verify_exits_1_on_an_edited_aggregate(written):
    out, original = written
    data = copy.deepcopy(original)
    data["tasks"][0]["mean"] = 0.5 if data["tasks"][0]["mean"] != 0.5 else 0.25
    (out / "results.json").write_text(json.dumps(data))
    try:
        r = cli("verify", out)
    finally:
        (out / "results.json").write_text(json.dumps(original))
    assert r.exit_code == 1 and "failed:" in r.output and "mean" in r.output, r.output
    assert cli("verify", out).exit_code == 0
