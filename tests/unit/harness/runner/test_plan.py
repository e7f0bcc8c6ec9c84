"""harness/runner/plan.py: a run's targets, what is left of them, and the order results list units in."""

from __future__ import annotations

from helpers import two_task_config

from rospr_harness.schema import UnitResult
from rospr_harness.runner.plan import plan_run
from rospr.selection import T0, Method


def test_plan_lists_targets_and_what_is_left(tmp_path):
    plan = plan_run(two_task_config("method=[t0, rospr]"))
    targets = [(s.task_name, s.prompt) for s in plan.specs]
    assert targets == [("builtin/sentiment", "review_sentiment"), ("builtin/sentiment", "how_did_they_feel"),
                       ("builtin/sentiment", "sentiment_label"), ("builtin/topic", "topic_label"),
                       ("builtin/topic", "section")]
    assert plan.retrieves and not plan_run(two_task_config()).retrieves
    done = {("builtin/sentiment", "how_did_they_feel", "t0"), ("builtin/topic", "section", "rospr")}
    todo = plan.todo(done)
    assert todo[1] == [Method()] and todo[4] == [T0] and todo[0] == [T0, Method()]
    unit = lambda t, p, m: UnitResult(task=t, prompt=p, method=m, n=0, accuracy=None, skipped=0, truncated=0,  # noqa: E731
                                      records="", content_hash="", wall_s=0.0)
    # results.json lists units by method (config order), then by target (plan order)
    assert plan.order(unit("builtin/topic", "section", "t0")) == (0, 4)
    assert plan.order(unit("builtin/sentiment", "review_sentiment", "rospr")) == (1, 0)
    assert plan.order(unit("gone", "x", "rospr+inter")) == (2, 5)
