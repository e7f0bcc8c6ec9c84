"""harness/runner/stages.py: driver stages are disjoint (an inner stage pauses the outer one), executor
work is summed apart from them, and the summary is results.json's ``time`` object."""

from __future__ import annotations

import time

import pytest

from rospr_harness.runner.stages import STAGES, WORK, Stages, process_started


def busy(seconds: float) -> None:
    """Spend ``seconds`` of the thread's time (a sleep would do as well for the wall clock)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass


def test_an_inner_stage_pauses_the_outer_one():
    s = Stages()
    with s.timing("write"):
        busy(0.05)
        with s.timing("cache"):
            busy(0.1)
        busy(0.05)
    assert 0.1 <= s.seconds["cache"] < 0.1 + 0.09  # its own time only, once
    assert 0.1 <= s.seconds["write"] < 0.1 + 0.09  # the outer time less the inner stage's
    assert all(v == 0.0 for k, v in s.seconds.items() if k not in ("write", "cache"))


def test_an_unknown_stage_is_refused_before_anything_is_timed():
    s = Stages()
    with pytest.raises(KeyError):
        with s.timing("lunch"):
            pass
    assert s.seconds == dict.fromkeys(STAGES, 0.0) and not s._stack


def test_a_stage_that_raises_is_still_charged_and_the_outer_resumes():
    s = Stages()
    with s.timing("load"):
        with pytest.raises(ValueError):
            with s.timing("tokenise"):
                busy(0.02)
                raise ValueError("bad row")
        busy(0.02)
    assert s.seconds["tokenise"] >= 0.02 and s.seconds["load"] >= 0.02 and not s._stack


def test_work_reports_add_up_by_kind_with_the_models_share_and_batches():
    s = Stages()
    s.worked("retrieval", 0.5)
    s.worked("scoring", 2.0, model_s=1.5, rows=8)
    s.worked("scoring", 1.0, model_s=0.5, rows=4)
    s.worked("var", 0.25, model_s=0.25)
    s.worked("scoring", -1.0)  # a clock step backwards counts as nothing
    assert s.work == {"retrieval": 0.5, "var": 0.25, "scoring": 3.0, "model": 2.25}
    assert s.batches == {"var": 1, "scoring": 3} and s.examples == 12
    assert s.first_batch is not None and set(s.work) == set(WORK)


def test_the_summary_splits_the_wall_time_and_divides_the_model_share_by_the_scorers():
    s = Stages(started=1000.0)
    s.seconds["setup"], s.seconds["wait"] = 2.0, 5.0
    s.worked("scoring", 6.0, model_s=4.0, rows=10)
    t = s.summary(scorers=2, until=1010.0)
    assert t.wall_s == 10.0 and t.scorers == 2
    assert t.other_s == pytest.approx(3.0)  # the wall time the stages do not cover
    assert t.model_share == pytest.approx(4.0 / (10.0 * 2))
    assert t.scoring_examples == 10 and t.batches.model_dump() == {"var": 0, "scoring": 1}
    assert t.stages_s.setup == 2.0 and t.work_s.model == 4.0
    zero = Stages(started=1000.0).summary(until=1000.0)
    assert zero.model_share is None and zero.scorers == 1  # no wall time: no share


def test_the_process_start_is_before_now_where_proc_says():
    born = process_started()
    if born is None:
        pytest.skip("no /proc on this platform")
    assert born <= time.time()
    assert Stages().summary().startup_s >= 0
