"""The driver (``rospr_harness.runner.driver``) over a fake executor: fast, no model scoring.

``fakes.FakeExecutor`` scores a row by a hand formula of its token ids (``fakes.fake_scores``), and can
finish its calls out of order (each call yields to the event loop a different number of times), fail
at its n-th call or lose an actor at its n-th call; the backend (tokenizer, identity) is the fake one
(``fake_scorer``). What must hold: the records do not depend on the order in which batches finish;
no more than ``max_in_flight`` batches are out at once and no more than ``max_active`` targets are
loaded; an error from the executor ends the run as it was raised, keeps the units written before it,
and a resume finishes the rest with the same bytes; a lost actor changes no record and is counted.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from fakes import FakeExecutor, fake_scores

import rospr_harness.runner as runner
from rospr_harness.backends import BackendUnavailable, create_backend
from rospr_harness.schema import read_records, read_results
from rospr_harness.runner.plan import TargetSpec


class Tally:
    """An observer that counts the targets loaded and not yet finished (one unit each: t0 only)."""

    def __init__(self) -> None:
        self.loaded = self.finished = self.most_active = 0

    def start(self, total):
        pass

    def advance(self, n):
        pass

    def unit_done(self, unit):
        self.finished += 1


@pytest.fixture
def setup(run_config, fake_scorer, monkeypatch):
    config = run_config(method=["t0"], tasks=[{"name": "builtin/sentiment", "limit": 13},
                                              {"name": "builtin/nli", "limit": 11},
                                              {"name": "builtin/animals", "limit": 7}],
                        scoring={"batch_size": 3}, ray={"max_active_units": 2})
    backend = create_backend(config)
    tally = Tally()
    load = TargetSpec.load

    def counted_load(spec):
        tally.loaded += 1
        tally.most_active = max(tally.most_active, tally.loaded - tally.finished)
        return load(spec)

    monkeypatch.setattr(TargetSpec, "load", counted_load)

    on_demand = runner.OnDemand

    def run_with(executor, out, resume=False, **scoring):
        """A run with ``executor`` (None: the run's own, in process over the backend's FakeScorer)."""
        monkeypatch.setattr(runner, "OnDemand", on_demand if executor is None else lambda *a, **k: executor)
        cfg = config.model_copy(update={"scoring": config.scoring.model_copy(update=scoring)}) if scoring else config
        return runner.run(cfg, out, observer=tally, backend=backend, resume=resume)

    run_with.config, run_with.backend = config, backend
    return run_with, tally


def records(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "records").iterdir())}


def test_out_of_order_batches_give_the_in_order_records(setup, tmp_path):
    run_with, tally = setup
    in_order = run_with(FakeExecutor(1, shuffle=False), tmp_path / "a")
    fake = FakeExecutor(3)
    shuffled = run_with(fake, tmp_path / "b")
    assert records(tmp_path / "a") == records(tmp_path / "b") and len(records(tmp_path / "a")) > 3
    assert [u.sha256 for u in in_order.units] == [u.sha256 for u in shuffled.units]
    # the hand formula's scores (an integer in [-10, 0], minus j/10), read back from the records
    got = [json.loads(line)["scores"] for line in next(iter(records(tmp_path / "b").values())).splitlines()]
    assert got and all(abs(x + j / 10 - round(x + j / 10)) < 1e-5 and -10 <= round(x + j / 10) <= 0
                       for s in got for j, x in enumerate(s))
    # batches of 3 per target (ceil(n / 3) each, the units' n from their records); at most 3 out at once
    batches = sum(math.ceil(u.n / 3) for u in shuffled.units)
    assert fake.calls == batches == shuffled.execution.time.batches.scoring
    assert 1 < fake.most_out <= 3
    assert tally.most_active <= 2


def test_an_executor_error_ends_the_run_as_raised_and_resume_finishes(setup, tmp_path):
    run_with, _ = setup
    run_with(FakeExecutor(2, shuffle=False), tmp_path / "ref")
    with pytest.raises(BackendUnavailable, match="fake server gone at call 8"):
        run_with(FakeExecutor(2, fail_at=8), tmp_path / "r")
    kept = read_results(tmp_path / "r" / "results.json")
    total = len(read_results(tmp_path / "ref" / "results.json").units)
    assert 1 <= len(kept.units) < total
    res = run_with(FakeExecutor(2), tmp_path / "r", resume=True)
    assert res.execution.resumed == len(kept.units) and res.execution.computed == total - len(kept.units)
    assert records(tmp_path / "r") == records(tmp_path / "ref")


def test_a_run_from_inside_a_running_event_loop_works(setup, tmp_path):
    """A notebook's cell runs inside an event loop: the driver's loop then runs on a thread of its own."""
    run_with, _ = setup
    run_with(FakeExecutor(1, shuffle=False), tmp_path / "ref")

    async def cell():
        return run_with(FakeExecutor(2), tmp_path / "nb")

    res = asyncio.run(cell())
    assert res.execution.computed == len(res.units) > 0
    assert records(tmp_path / "nb") == records(tmp_path / "ref")


def test_a_token_budget_caps_every_batch_and_keeps_the_records(setup, tmp_path):
    """scoring.batch_tokens: no batch holds more padded tokens than the budget (unless one row alone
    does), there are more batches than by rows alone, and the records are the same."""
    from rospr.scoring import batch_tokens

    class Measuring(FakeExecutor):
        sizes: list = []

        async def score(self, rows, prompt):
            self.sizes.append((len(rows), batch_tokens(rows)))
            return await super().score(rows, prompt)

    run_with, _ = setup
    run_with(FakeExecutor(1, shuffle=False), tmp_path / "rows")
    fake = Measuring(2)
    budgeted = run_with(fake, tmp_path / "tokens", batch_tokens=40)
    assert records(tmp_path / "tokens") == records(tmp_path / "rows")
    assert all(tokens <= 40 or n == 1 for n, tokens in fake.sizes) and any(n == 1 for n, _ in fake.sizes)
    assert fake.calls > sum(math.ceil(u.n / 3) for u in budgeted.units)


def test_the_records_hold_the_hand_formula_and_the_fake_scorer_writes_the_same(setup, tmp_path):
    """Every record's scores, recomputed by hand from its input and choices (tokenised under the run's
    convention), are the formula's; the in-process executor over ``FakeScorer`` (padded batches of 3)
    writes the same bytes as ``FakeExecutor`` (row by row)."""
    from rospr.data import Example
    from rospr.scoring import encode_examples

    run_with, _ = setup
    res = run_with(FakeExecutor(1, shuffle=False), tmp_path / "fake_executor")
    checked = 0
    for unit in res.units:
        recs = read_records(tmp_path / "fake_executor" / unit.records)
        examples = [Example("t", "p", r.index, r.input, tuple(r.choices)) for r in recs]
        encoded = encode_examples(run_with.backend.tokenizer, examples, run_with.config.scoring.convention())
        for rec, enc in zip(recs, encoded):
            assert rec.scores == pytest.approx(fake_scores(enc.input_ids, enc.choice_ids).tolist(), abs=1e-6)
            checked += 1
    assert checked == sum(u.n for u in res.units) > 0
    calls_before = run_with.backend.scorer.calls  # 0: the fake executor never called it
    in_process = run_with(None, tmp_path / "fake_scorer")
    assert in_process.execution.executor == "in_process"
    assert calls_before == 0 and run_with.backend.scorer.calls == sum(math.ceil(u.n / 3) for u in in_process.units)
    assert records(tmp_path / "fake_scorer") == records(tmp_path / "fake_executor")


def test_an_actor_lost_mid_run_changes_no_record_and_is_counted(setup, tmp_path):
    """An actor dies under call 5 (of three): its batch is resubmitted, the records are the same bytes,
    and execution counts the actor lost and the batch resubmitted."""
    run_with, _ = setup
    run_with(FakeExecutor(1, shuffle=False), tmp_path / "ref")
    res = run_with(FakeExecutor(3, lose_at=5, scorers=3), tmp_path / "lost")
    assert records(tmp_path / "lost") == records(tmp_path / "ref")
    ex = read_results(tmp_path / "lost" / "results.json").execution
    assert (ex.scorers, ex.actors_lost, ex.resubmitted) == (3, 1, 1) == (res.execution.scorers,
                                                                          res.execution.actors_lost,
                                                                          res.execution.resubmitted)


def test_the_fake_scorer_scores_each_row_by_the_hand_formula_in_any_batch():
    """``FakeScorer`` reads only a row's real ids and prompt vectors: padding (a longer row, a longer
    prompt, more choices in the batch) changes nothing, and the numbers are the hand computation's."""
    import numpy as np

    from fakes import FakeScorer
    from rospr.scoring import EncodedExample, score_batch

    short = EncodedExample([5, 7], [[3, 1], [2, 1]])
    long = EncodedExample([9, 9, 9, 9, 9], [[4, 4, 4, 1], [1], [6, 1]])
    prompt = np.full((2, 4), 0.25, np.float32)  # sums to 2.0: code 2000 mod 11 = 9
    scorer = FakeScorer(4)
    alone = score_batch(scorer, [short], [None])[0]
    # S = 12; choice 0: -((12 + 4) mod 11) = -5; choice 1: -((12 + 3) mod 11) - 0.1 = -4.1
    assert alone.tolist() == pytest.approx([-5.0, -4.1])
    with_prompt = score_batch(scorer, [short], [prompt])[0]
    assert with_prompt.tolist() == pytest.approx([-3.0, -2.1])  # (16 + 9) mod 11 = 3, (15 + 9) mod 11 = 2
    longer_prompt = np.full((5, 4), 0.5, np.float32)
    batch = score_batch(scorer, [long, short, short], [longer_prompt, None, prompt], pad_id=1)  # padding of 1s
    assert batch[1].tolist() == alone.tolist() and batch[2].tolist() == with_prompt.tolist()
    assert batch[0].tolist() == pytest.approx(fake_scores(long.input_ids, long.choice_ids, longer_prompt).tolist())
    assert (scorer.calls, scorer.rows) == (3, 5)
