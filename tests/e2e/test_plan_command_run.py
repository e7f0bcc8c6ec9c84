"""`rospr plan`: its counts against what a real run of the same config then computes, and the second
plan after the run against the run's reuse (bank, library, export, unit cache): two whole runs of
configs/paper.yaml on the tiny model (moved from tests/unit/harness/cli/test_run_plan.py, whose fixture it uses)."""

from __future__ import annotations

import json

import pytest

from rospr.softprompt import PromptBank
from rospr_harness.config import load_config
from rospr_harness.runner import run as run_config
from unit.harness.cli.test_run_plan import paper_setup, plan_json  # noqa: F401  the fixture and the plan's JSON


@pytest.mark.slow
def test_plan_counts_equal_the_run_and_the_second_plan_sees_its_reuse(paper_setup):
    overrides, tmp = paper_setup
    before = plan_json(overrides)
    assert not (tmp / "bank").exists() and not (tmp / "library").exists()
    assert not (tmp / "home" / "units").exists() and not (tmp / "home" / "onnx").exists()  # nothing written

    config = load_config("configs/paper.yaml", overrides)
    res = run_config(config, tmp / "run")

    # units, examples, answer choices: the run's records
    planned = {(u["task"], u["prompt"], u["method"]): u for u in before["units"]}
    assert set(planned) == {(u.task, u.prompt, u.method) for u in res.units}
    assert len(planned) == before["totals"]["units"] == 3 * 5
    choices = 0
    for u in res.units:
        records = [json.loads(line) for line in (tmp / "run" / u.records).read_text().splitlines()]
        p = planned[(u.task, u.prompt, u.method)]
        assert p["examples"] == u.n == len(records)
        assert p["choices"] == sum(len(r["choices"]) for r in records)
        choices += p["choices"]
    assert before["totals"]["examples"] == sum(u.n for u in res.units)
    assert before["totals"]["choices"] == choices

    # tuning jobs: exactly the prompts the run trained into the empty bank
    bank = PromptBank.open(tmp / "bank", None).ids()  # one sealed store entry per prompt
    assert sorted(before["tuning"]["to_train"]) == sorted(bank)
    assert before["tuning"]["reused"] == [] and before["tuning"]["jobs"] == len(bank)
    assert before["stages"]["tuning"]["backward"] > 0
    # the library the run built, and its retrieval: queries per target as the run logged them
    library = json.loads((tmp / "library" / "manifest.json").read_text())
    assert before["retrieval"]["library_keys"] == library["n_keys"]
    logged = {(u.task, u.prompt): len(u.retrieval.queries) for u in res.units if u.retrieval}
    assert before["retrieval"]["queries"] == sum(logged.values())
    var_used = sum(min(config.rospr.var_candidates, u.retrieval.n_candidates)
                   for u in res.units if u.method == "rospr+var")
    assert var_used <= before["retrieval"]["var_candidates_max"]
    assert res.execution.computed == before["totals"]["units_to_compute"] == 15

    after = plan_json(overrides)
    assert sorted(after["tuning"]["reused"]) == sorted(before["tuning"]["to_train"])
    assert after["tuning"]["to_train"] == []
    assert after["retrieval"]["library_status"] == "reused" and after["retrieval"]["library_keys"] == 0
    assert after["onnx_export"].startswith("reused ")
    assert all(u["cached"] is True for u in after["units"])
    assert after["totals"]["units_cached"] == 15 and after["totals"]["flops"] == 0
    again = run_config(config, tmp / "run2")
    assert again.execution.cached == after["totals"]["units_cached"]
