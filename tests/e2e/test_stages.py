"""Where the time goes: ``execution.time`` of results.json.

Structure, never durations: every stage is present and non-negative, the driver's stages sum to no
more than the wall time, the workers' seconds lie inside the driver's wait (in process), and the
counts (batches, examples) equal what the run's own units say (an independent tally of records).
The nesting rule of ``Stages`` is checked on a hand-driven clock.
"""

from __future__ import annotations

import html

import pytest

from rospr_harness.config import load_config
from rospr_harness.schema import read_records, read_results
from rospr_harness.runner import run
from rospr_harness.runner import stages as stages_mod
from rospr_harness.runner.stages import STAGES, WORK, Stages

EPS = 1e-3  # figures are rounded to 4 decimals; nine of them may add 4.5e-4


def test_nested_stage_is_charged_to_the_inner_one_only(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(stages_mod.time, "perf_counter", lambda: now[0])
    st = Stages(started=0.0)
    with st.timing("load"):  # load 2 s, then tokenise 3 s inside it, then load 1 s more
        now[0] += 2
        with st.timing("tokenise"):
            now[0] += 3
        now[0] += 1
    assert st.seconds["load"] == 3 and st.seconds["tokenise"] == 3
    assert sum(st.seconds.values()) == 6  # the wall of the block, counted once
    with pytest.raises(KeyError):
        with st.timing("lunch"):
            pass


def tree(model_dir, root, methods) -> dict:
    return {
        "model": {"name_or_path": str(model_dir)},
        "method": methods,
        "tasks": [{"name": "builtin/sentiment", "limit": 10, "prompts": ["review_sentiment"]},
                  {"name": "builtin/nli", "limit": 7, "prompts": ["given_that"]}],
        "scoring": {"batch_size": 4},
        "cache": {"enabled": False},
        "rospr": {"sources": ["builtin/sentiment", "builtin/nli", "builtin/animals"],
                  "prompt_bank": str(root / "bank"), "library": str(root / "library"),
                  "tune": {"steps": 2, "prompt_length": 4, "batch_size": 8, "source_rows": 16, "parallel": "off"},
                  "library_n": 8, "queries": 5, "top_n": 3, "n_inter": 2, "var_candidates": 2},
    }


def check_structure(res, run_dir) -> dict:
    t = res.execution.time.model_dump()
    assert set(t["stages_s"]) == set(STAGES) and set(t["work_s"]) == set(WORK)
    assert all(v >= 0 for v in t["stages_s"].values()) and all(v >= 0 for v in t["work_s"].values())
    assert t["wall_s"] > 0 and t["other_s"] >= 0
    assert sum(t["stages_s"].values()) <= t["wall_s"] + EPS
    assert t["wall_s"] <= res.provenance.wall_s + EPS  # the provenance is stamped after the summary
    work = t["work_s"]
    assert work["model"] <= work["var"] + work["scoring"] + EPS
    assert 0 <= t["model_share"] <= 1
    assert 0 <= t["startup_s"] <= t["first_batch_s"]
    # every example of every computed unit went through one scoring batch: the records say how many
    assert t["scoring_examples"] == sum(len(read_records(run_dir / u.records)) for u in res.units)
    return t


def test_in_process_run_records_its_stages(tiny_model_dir, tmp_path):
    methods = ["t0", "rospr+var"]
    res = run(load_config(None, [], tree=tree(tiny_model_dir, tmp_path, methods)), tmp_path / "run")
    t = check_structure(res, tmp_path / "run")
    work = t["work_s"]
    # in process the work runs while the driver waits for it
    assert work["retrieval"] + work["var"] + work["scoring"] <= t["stages_s"]["wait"] + EPS
    assert work["retrieval"] > 0 and work["var"] > 0 and work["scoring"] > 0
    # batches of 4: sentiment 10 rows -> 3, nli 7 rows -> 2, per method; VAR: 2 candidates x 5 queries -> 2 each
    assert t["batches"] == {"scoring": 2 * (3 + 2), "var": 2 * 2 * 2}
    disk = read_results(tmp_path / "run" / "results.json")
    assert disk.execution.time.model_dump() == t
    md = (tmp_path / "run" / "report.md").read_text()
    page = html.unescape((tmp_path / "run" / "report.html").read_text())
    for text in (md, page):
        assert "waiting on the executor" in text and "the scorer's own" in text


@pytest.mark.slow
def test_ray_run_sums_what_the_actors_report(tiny_model_dir, tmp_path, ray_cluster):
    tr = tree(tiny_model_dir, tmp_path, ["t0"])
    ref = run(load_config(None, [], tree=tr), tmp_path / "in_process")
    tr["ray"] = {"enabled": True, "scorers": 2}
    res = run(load_config(None, [], tree=tr), tmp_path / "ray")
    t = check_structure(res, tmp_path / "ray")
    assert t["scorers"] == 2 and t["work_s"]["scoring"] > 0
    # the same batches whichever executor scored them
    assert t["batches"] == ref.execution.time.batches.model_dump() == {"scoring": 3 + 2, "var": 0}
