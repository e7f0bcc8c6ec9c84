"""Whole runs on Ray (moved from tests/unit/harness/test_runner.py, names and assertions kept): the same numbers
as the in-process reference on one actor and on three (any batch size); scoring actors killed mid-run
change nothing; with Ray the driver's scorer never opens its session.

The reference is the in-process run, checked independently elsewhere (tests/e2e/test_methods_run.py
rescored a unit with PyTorch); here every other executor must reproduce it unit by unit.
"""

from __future__ import annotations

import pytest
from unit.harness.test_runner import assert_same_run, reference  # noqa: F401  (reference: the module's fixture)

from rospr_harness.runner import run


@pytest.mark.slow
def test_one_actor_gives_the_in_process_numbers(reference, run_config, ray_cluster, tmp_path):
    settings, root, _ = reference
    res = run(run_config("ray.enabled=true", "ray.scorers=1", **settings), tmp_path / "ray1")
    assert res.execution.executor == "ray" and res.execution.scorers == 1
    assert_same_run(tmp_path / "ray1", root / "in_process")


@pytest.mark.slow
def test_three_actors_at_another_batch_size_give_the_same_numbers(reference, run_config, ray_cluster, tmp_path):
    settings, root, _ = reference
    res = run(run_config("ray.enabled=true", "ray.scorers=3", "scoring.batch_size=3", "ray.max_in_flight=5",
                         "ray.retrieval_group=2", **settings), tmp_path / "ray3")
    assert res.execution.scorers == 3 and res.execution.computed == 12
    assert_same_run(tmp_path / "ray3", root / "in_process")


@pytest.mark.slow
def test_scoring_actors_killed_mid_run_change_nothing(reference, run_config, ray_cluster, tmp_path):
    """After the first unit: actor 0 is killed and restarted by Ray (its in-flight calls resent),
    actor 1 is killed for good (the driver resubmits its batches to the others)."""
    settings, root, _ = reference
    ray = ray_cluster
    from rospr_harness.runner.ray_executor import ACTOR_PREFIX

    class KillAfterFirstUnit:
        killed = False

        def start(self, total):
            pass

        def advance(self, n):
            pass

        def unit_done(self, unit):
            if self.killed:
                return
            names = sorted(n for n in ray.util.list_named_actors() if n.startswith(ACTOR_PREFIX))
            assert len(names) == 3
            ray.kill(ray.get_actor(names[0]), no_restart=False)
            ray.kill(ray.get_actor(names[1]), no_restart=True)
            self.killed = True

    obs = KillAfterFirstUnit()
    res = run(run_config("ray.enabled=true", "ray.scorers=3", "ray.max_in_flight=12", **settings),
              tmp_path / "faults", observer=obs)
    assert obs.killed
    ex = res.execution.model_dump()
    assert ex["actor_restarts"] >= 1 and ex["actors_lost"] == 1 and ex["resubmitted"] >= 1, ex
    assert_same_run(tmp_path / "faults", root / "in_process")


@pytest.mark.slow
def test_the_ray_driver_opens_no_scorer_session(reference, run_config, ray_cluster, tmp_path):
    """Memory scales with the sessions used: with Ray the actors score, and the driver's onnxruntime
    scorer (exported and verified, for the tokenizer and the identity) never opens its session."""
    from rospr_harness.backends import create_backend

    settings, root, _ = reference
    config = run_config("ray.enabled=true", "ray.scorers=2", "backend=onnxruntime", **settings)
    backend = create_backend(config)
    res = run(config, tmp_path / "ray2", backend=backend)
    assert res.execution.executor == "ray"
    assert not backend.scorer._lazy.opened
    assert_same_run(tmp_path / "ray2", root / "in_process")
    backend.scorer.prompt_dim  # the first use opens it
    assert backend.scorer._lazy.opened
