"""harness/runner/ray_executor.py without a Ray cluster: what actors are given (the config with local
paths made absolute, their thread count and their own Triton server), and the fault rules of the
driver side (resubmission with backoff up to ``ray.max_batch_attempts``; a server gone takes every
actor of it out, and the last one gone ends the run naming them all). Whole runs on real Ray actors,
killed ones included: tests/e2e/test_runner_ray.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import fake_scoring

from rospr.errors import StateError
from rospr_harness.backends import BackendUnavailable
from rospr_harness.runner.ray_executor import RayExecutor, ScoringActor, actor_config


def test_actors_get_the_config_with_local_paths_made_absolute(run_config, tmp_path, monkeypatch):
    model = Path(run_config.model_dir)
    monkeypatch.chdir(model.parent)
    config = run_config(model={"name_or_path": model.name}, onnxruntime={"cache_dir": "onnx-here"})
    tree = actor_config(config)
    assert tree["model"]["name_or_path"] == str(model.resolve())
    assert tree["rospr"]["retriever"] == str(model.resolve())  # the model's own encoder by default
    assert tree["onnxruntime"]["cache_dir"] == str((model.parent / "onnx-here").resolve())
    hub = actor_config(run_config(model={"name_or_path": "bigscience/T0_3B"}))  # not a local path: as given
    assert hub["model"]["name_or_path"] == "bigscience/T0_3B"


def _actor_configs(tree: dict, threads: int, url: str | None) -> list:
    """The configs a ``ScoringActor`` built its backend from (fake scorers: no model, no server)."""
    from rospr_harness import backends

    seen, real = [], backends.create_backend
    with fake_scoring(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "create_backend", lambda c: seen.append(c) or real(c))
        ScoringActor(tree, pad_id=0, threads=threads, triton_url=url)
    return seen


def test_a_scoring_actor_takes_the_threads_it_is_given_and_only_its_own_server(run_config):
    tree = actor_config(run_config(backend="triton", ray={"triton_urls": ["a:8001", "b:8001"]}))
    (config,) = _actor_configs(tree, threads=3, url="b:8001")
    assert config.onnxruntime.threads == 3 and config.scoring.threads == 3  # unset: the actor's share
    assert config.triton.url == "b:8001" and config.ray.triton_urls is None  # no fail-over inside an actor
    tree["onnxruntime"]["threads"] = 1
    (config,) = _actor_configs(tree, threads=3, url=None)
    assert config.onnxruntime.threads == 1 and config.ray.triton_urls == ["a:8001", "b:8001"]  # as configured


def _executor(run_config, urls: list, attempts: int = 3) -> RayExecutor:
    """A ``RayExecutor``'s driver-side state for ``urls`` (one scoring actor each), no actors."""
    ex = RayExecutor.__new__(RayExecutor)
    ex.rc = run_config(ray={"max_batch_attempts": attempts}).ray
    ex.urls, ex.scorers = list(urls), [object() for _ in urls]
    ex.failures, ex.load, ex.down = [0] * len(urls), [0] * len(urls), set()
    ex.resubmitted, ex.retried, ex.lost_servers = 0, [], {}
    return ex


def test_a_dead_actor_is_resubmitted_with_backoff_until_the_attempts_are_spent(run_config):
    ex = _executor(run_config, [None, None], attempts=3)
    work = {"kind": "score", "attempts": 0, "avoid": None, "actor": 1}
    assert ex._retry(work, RuntimeError("gone")) == pytest.approx(0.2)
    assert (work["attempts"], work["avoid"], ex.failures, ex.resubmitted) == (1, 1, [0, 1], 1)
    assert ex.retried == [{"kind": "score", "actor": 1, "server": None, "attempt": 2,
                           "reason": "scoring actor 1 died: RuntimeError"}]
    assert ex._retry(work, RuntimeError("gone")) == pytest.approx(0.4)
    with pytest.raises(StateError, match="a score batch failed 3 times because scoring actor 1 died"):
        ex._retry(work, RuntimeError("gone"))


def test_a_server_gone_takes_its_actors_out_and_the_last_one_ends_the_run(run_config):
    ex = _executor(run_config, ["a:8001", "b:8001", "a:8001"])
    work = {"kind": "score", "attempts": 0, "avoid": None, "actor": 0}
    ex._fail_over(work, BackendUnavailable("a:8001 refused\nmore"))
    assert ex.down == {0, 2} and ex.lost_servers == {"a:8001": "a:8001 refused"} and work["avoid"] == 0
    work["actor"] = 1
    with pytest.raises(BackendUnavailable, match=r"every Triton server .* \(a:8001: a:8001 refused; b:8001: b down\)"):
        ex._fail_over(work, BackendUnavailable("b down"))


def test_without_triton_a_backend_error_is_the_runs_error(run_config):
    ex = _executor(run_config, [None])
    with pytest.raises(BackendUnavailable, match="scorer broke"):
        ex._fail_over({"kind": "score", "attempts": 0, "avoid": None, "actor": 0}, BackendUnavailable("scorer broke"))
    assert ex.down == set() and ex.resubmitted == 0
