"""harness/runner/session.py: the executor step of a run. The unit cache opens only when enabled, the
executor starts at its first call (so a run that computes nothing starts neither it nor Ray), in
process or planned for Ray as the config says, and the provenance stamp carries the run's identity."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
from fakes import fake_backend, row_scores

from rospr.scoring import EncodedExample
from rospr_harness.cache import UnitCache
from rospr_harness.runner.executor import InProcessExecutor
from rospr_harness.runner.session import Clock, OnDemand, Stamp, build_executor, unit_cache
from rospr_harness.runner.stages import Stages

ROWS = [EncodedExample([5, 7, 9], [[3], [4, 4]]), EncodedExample([2, 1], [[8], [1, 2], [6]])]


def test_the_unit_cache_opens_only_when_enabled(run_config, tmp_path):
    assert unit_cache(run_config().cache) is None
    cache = unit_cache(run_config(cache={"enabled": True, "dir": str(tmp_path / "units")}).cache)
    assert isinstance(cache, UnitCache) and cache.root == tmp_path / "units"


def test_in_process_the_executor_starts_at_its_first_call(run_config):
    config = run_config(ray={"enabled": False})
    backend, stages = fake_backend(config), Stages()
    with contextlib.ExitStack() as stack:
        lazy = OnDemand(config, backend, None, stack, stages, units=3)
        assert (lazy.name, lazy.max_in_flight, lazy.uses_ray) == ("in_process", 1, False)
        assert lazy.stats() == {"executor": "in_process", "scorers": 0, "started": False}
        done = asyncio.run(lazy.score(ROWS, lazy.put(None)))
        assert isinstance(lazy.started, InProcessExecutor) and lazy.stats() == {"executor": "in_process", "scorers": 1}
        for row, scores in zip(ROWS, done.value):
            np.testing.assert_array_equal(scores, row_scores(row))
        assert lazy.executor() is lazy.started  # started once
        lazy.close()


def test_planned_for_ray_nothing_starts_before_a_call(run_config, monkeypatch):
    """The driver plans with ``name`` and ``max_in_flight`` of a Ray run; no call, no Ray."""
    ray = pytest.importorskip("ray")
    monkeypatch.setattr("rospr_harness.runner.session.ray_available", lambda: True)
    config = run_config(ray={"enabled": True, "scorers": 3})
    before = ray.is_initialized()  # the session's own Ray may be up already (another test's fixture)
    with contextlib.ExitStack() as stack:
        lazy = OnDemand(config, fake_backend(config), None, stack, Stages())
        assert (lazy.name, lazy.max_in_flight) == ("ray", 12)  # 4 x scorers by default
        assert lazy.stats() == {"executor": "ray", "scorers": 0, "started": False}
        lazy.close()
    assert lazy.started is None and ray.is_initialized() == before
    with contextlib.ExitStack() as stack:
        assert OnDemand(run_config(ray={"enabled": True, "max_in_flight": 5}), fake_backend(config), None, stack,
                        Stages()).max_in_flight == 5


def test_without_retrieval_the_in_process_executor_has_no_retrieval_worker(run_config):
    config = run_config()
    ex = build_executor(config, fake_backend(config), None, use_ray=False)
    assert isinstance(ex, InProcessExecutor) and ex.retrieval is None
    assert ex.scoring.pad_id == (fake_backend(config).tokenizer.pad_token_id or 0)


def test_the_stamp_carries_the_runs_identity_and_the_time_so_far(run_config):
    config = run_config(seed=7)
    backend = fake_backend(config)
    clock = Clock(started=Clock().started - 2.0)
    prov = Stamp(config, backend, clock, overrides=["scoring.batch_size=4"])()
    assert prov.config_hash == config.content_hash() and prov.backend == "fake" and prov.model == backend.identity
    assert prov.seed == 7 and prov.overrides == ["scoring.batch_size=4"] and prov.started_at == clock.started_at
    assert prov.wall_s >= 2.0 and prov.retriever is None
