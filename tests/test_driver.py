"""The driver (``rospr_harness.runner.driver``) over a fake executor: fast, no model scoring.

``FakeExecutor`` scores a row by a hand formula of its token ids, and can finish its calls out of
order (each call yields to the event loop a different number of times) or fail at its n-th call.
What must hold: the records do not depend on the order in which batches finish; no more than
``max_in_flight`` batches are out at once and no more than ``max_active`` targets are loaded; an
error from the executor ends the run as it was raised, keeps the units written before it, and a
resume finishes the rest with the same bytes.
"""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

import rospr_harness.runner as runner
from rospr_harness.backends import BackendUnavailable, create_backend
from rospr_harness.config import load_config
from rospr_harness.results import read_results
from rospr_harness.runner.executor import Done
from rospr_harness.runner.plan import TargetSpec


def fake_scores(row) -> np.ndarray:
    """The hand formula: choice j scores -(sum of its ids + sum of the input's ids) mod 11, minus j/10."""
    base = sum(row.input_ids)
    return np.array([-float((base + sum(c)) % 11) - j / 10 for j, c in enumerate(row.choice_ids)], dtype=np.float32)


class FakeExecutor:
    """An ``Executor`` whose calls finish out of order (``shuffle``) or fail at call ``fail_at``."""

    name = "fake"

    def __init__(self, max_in_flight: int, shuffle: bool = True, fail_at: int | None = None) -> None:
        self.max_in_flight, self.shuffle, self.fail_at = max_in_flight, shuffle, fail_at
        self.calls = self.out = self.most_out = 0

    def put(self, values):
        return values

    async def score(self, rows, prompt) -> Done:
        self.calls += 1
        call = self.calls
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            for _ in range((call * 7) % 5 if self.shuffle else 0):
                await asyncio.sleep(0)  # the other calls in flight may finish first
            if call == self.fail_at:
                raise BackendUnavailable(f"fake server gone at call {call}")
            return Done([fake_scores(r) for r in rows], 0.001)
        finally:
            self.out -= 1

    async def retrieve(self, requests) -> Done:
        raise AssertionError("t0 only: nothing to retrieve")

    def stats(self) -> dict:
        return {"executor": self.name, "scorers": 1}

    def close(self) -> None:
        pass


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
def setup(tiny_model_dir, monkeypatch):
    tree = {"model": {"name_or_path": str(tiny_model_dir)}, "backend": "torch", "method": ["t0"],
            "tasks": [{"name": "builtin/sentiment", "limit": 13}, {"name": "builtin/nli", "limit": 11},
                      {"name": "builtin/animals", "limit": 7}],
            "scoring": {"batch_size": 3}, "ray": {"max_active_units": 2}}
    config = load_config(None, [], tree=tree)
    backend = create_backend(config)
    tally = Tally()
    load = TargetSpec.load

    def counted_load(spec):
        tally.loaded += 1
        tally.most_active = max(tally.most_active, tally.loaded - tally.finished)
        return load(spec)

    monkeypatch.setattr(TargetSpec, "load", counted_load)

    def run_with(executor, out, resume=False, **scoring):
        monkeypatch.setattr(runner, "OnDemand", lambda *a, **k: executor)  # the run's executor is the fake
        cfg = config.model_copy(update={"scoring": config.scoring.model_copy(update=scoring)}) if scoring else config
        return runner.run(cfg, out, observer=tally, backend=backend, resume=resume)

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
