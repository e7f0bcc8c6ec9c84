"""harness/runner/executor.py: the scoring worker and the in-process executor, with the fake scorer
(``fakes.FakeScorer``, a hand formula per row). The retrieval worker's hits against
``rospr.retrieval.retrieve``: tests/unit/rospr/test_retrieval.py and the runs of tests/e2e/."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from fakes import FakeScorer, row_scores

from rospr.scoring import EncodedExample
from rospr_harness.runner.executor import Done, InProcessExecutor, ScoringWorker

ROWS = [EncodedExample([5, 7, 9], [[3], [4, 4]]), EncodedExample([2, 1], [[8], [1, 2], [6]]),
        EncodedExample([4], [[1]])]


class _Slow(FakeScorer):
    """The fake scorer, busy for a moment in each call (so the scorer's share is measurable)."""

    def score(self, batch):
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.02:
            pass
        return super().score(batch)


def test_a_scoring_worker_gives_each_row_its_own_scores_in_order():
    prompt = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    done = ScoringWorker(FakeScorer(prompt_dim=4)).score(ROWS, prompt)
    assert isinstance(done, Done) and len(done.value) == len(ROWS)
    for row, scores in zip(ROWS, done.value):
        np.testing.assert_array_equal(scores, row_scores(row, prompt))  # its real choices only, no padding
    plain = ScoringWorker(FakeScorer(prompt_dim=4)).score(ROWS, None)
    for row, scores in zip(ROWS, plain.value):
        np.testing.assert_array_equal(scores, row_scores(row))


def test_the_scorers_seconds_are_a_part_of_the_workers():
    scorer = _Slow(prompt_dim=4)
    done = ScoringWorker(scorer).score(ROWS, None)
    assert scorer.calls == 1 and scorer.rows == len(ROWS)  # one batch, one scorer call
    assert 0.02 <= done.model_s <= done.seconds


def test_the_in_process_executor_runs_each_call_when_awaited():
    scorer = FakeScorer(prompt_dim=4)
    ex = InProcessExecutor(ScoringWorker(scorer))
    prompt = np.ones((2, 4), dtype=np.float32)
    assert ex.put(prompt) is prompt  # a handle is the values themselves
    call = ex.score(ROWS, ex.put(prompt))
    assert scorer.calls == 0  # nothing runs before the await
    done = asyncio.run(call)
    assert scorer.calls == 1
    for row, scores in zip(ROWS, done.value):
        np.testing.assert_array_equal(scores, row_scores(row, prompt))
    assert ex.max_in_flight == 1 and ex.stats() == {"executor": "in_process", "scorers": 1}


def test_retrieval_without_a_retrieval_worker_is_refused():
    ex = InProcessExecutor(ScoringWorker(FakeScorer(prompt_dim=4)))
    with pytest.raises(RuntimeError, match="no retrieval worker"):
        asyncio.run(ex.retrieve([]))
