"""The runner: the same numbers in one process, on one Ray actor and on three (any batch size); a
scoring actor killed mid-run changes nothing; a run directory is locked against a second driver.

The reference is the in-process run, checked independently elsewhere (tests/e2e/test_methods_run.py
rescored a unit with PyTorch); here every other executor must reproduce it unit by unit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rospr_harness.config import load_config
from rospr_harness.lock import RunLock, RunLocked
from rospr_harness.results import read_records, read_results
from rospr_harness.runner import run
from helpers import rospr_tree

METHODS = ["t0", "rospr", "rospr+inter", "rospr+var"]


def small_tree(model_dir, root) -> dict:
    """A demo-like run, reduced: three targets, four methods, a bank of a few quickly tuned prompts."""
    return rospr_tree(model_dir, root, METHODS, limit=16, batch_size=4, var_candidates=3)


def assert_same_run(run_dir, ref_dir) -> None:
    """Unit by unit: the same units, identical predictions and retrieval choices, scores within 1e-5."""
    got, ref = read_results(run_dir / "results.json"), read_results(ref_dir / "results.json")
    assert [(u.task, u.prompt, u.method) for u in got.units] == [(u.task, u.prompt, u.method) for u in ref.units]
    for g, r in zip(got.units, ref.units):
        assert g.n == r.n and g.accuracy == r.accuracy, (g.task, g.prompt, g.method)
        assert (g.retrieval and g.retrieval.chosen) == (r.retrieval and r.retrieval.chosen)
        grec, rrec = read_records(run_dir / g.records), read_records(ref_dir / r.records)
        assert [x.index for x in grec] == [x.index for x in rrec]
        assert [x.prediction for x in grec] == [x.prediction for x in rrec]
        for a, b in zip(grec, rrec):
            np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
    assert got.overall == pytest.approx(ref.overall, abs=1e-12)


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """The in-process run (it also tunes the bank and builds the library the other runs reuse)."""
    root = tmp_path_factory.mktemp("runner")
    tree = small_tree(tiny_model_dir, root)
    res = run(load_config(None, [], tree=tree), root / "in_process")
    return tree, root, res


def test_in_process_reference_is_complete(reference):
    tree, root, res = reference
    assert len(res.units) == 3 * len(METHODS)
    assert res.execution.executor == "in_process" and res.execution.computed == 12
    assert all(u.sha256 and not u.cached for u in res.units)


def test_a_locked_run_directory_is_refused(reference, tmp_path):
    tree, _, _ = reference
    with RunLock(tmp_path / "busy"):
        with pytest.raises(RunLocked, match=r"another rospr run is using this directory \(pid \d+ on .*since"):
            run(load_config(None, ["method=[t0]"], tree=tree), tmp_path / "busy")
    assert not (tmp_path / "busy" / "results.json").exists()
    # released: the same directory is usable again
    res = run(load_config(None, ["method=[t0]", "tasks.0.limit=4", "tasks=[{name: builtin/nli, limit: 4}]"], tree=tree),
              tmp_path / "busy")
    assert res.units


def test_cli_names_the_lock_holder(reference, tmp_path):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    tree, _, _ = reference
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({**tree, "method": ["t0"]}))
    with RunLock(tmp_path / "busy"):
        out = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "busy")])
    assert out.exit_code == 2 and "another rospr run is using this directory" in out.output


# -- Ray ---------------------------------------------------------------------------------------------

def test_a_run_with_nothing_to_compute_starts_no_ray(reference, tmp_path, monkeypatch):
    """Every unit in the unit cache: a Ray-enabled run starts no Ray and no actor (the executor is
    started at its first call, and none comes), and says so in execution."""
    import rospr_harness.runner.session as session

    tree, _, _ = reference
    cached = {**tree, "cache": {"enabled": True, "dir": str(tmp_path / "units")}}
    first = run(load_config(None, [], tree=cached), tmp_path / "fill")  # in process: fills the unit cache
    assert first.execution.computed == len(first.units)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started for a run with nothing to compute")

    monkeypatch.setattr(session, "run_ray", no_ray)
    res = run(load_config(None, ["ray.enabled=true"], tree=cached), tmp_path / "again")
    assert res.execution.cached == len(res.units) == len(first.units)
    assert res.execution.started is False and res.execution.scorers == 0
    assert_same_run(tmp_path / "again", tmp_path / "fill")


@pytest.mark.slow
def test_one_actor_gives_the_in_process_numbers(reference, ray_cluster, tmp_path):
    tree, root, _ = reference
    res = run(load_config(None, ["ray.enabled=true", "ray.scorers=1"], tree=tree), tmp_path / "ray1")
    assert res.execution.executor == "ray" and res.execution.scorers == 1
    assert_same_run(tmp_path / "ray1", root / "in_process")


@pytest.mark.slow
def test_three_actors_at_another_batch_size_give_the_same_numbers(reference, ray_cluster, tmp_path):
    tree, root, _ = reference
    res = run(load_config(None, ["ray.enabled=true", "ray.scorers=3", "scoring.batch_size=3", "ray.max_in_flight=5",
                                 "ray.retrieval_group=2"], tree=tree), tmp_path / "ray3")
    assert res.execution.scorers == 3 and res.execution.computed == 12
    assert_same_run(tmp_path / "ray3", root / "in_process")


@pytest.mark.slow
def test_scoring_actors_killed_mid_run_change_nothing(reference, ray_cluster, tmp_path):
    """After the first unit: actor 0 is killed and restarted by Ray (its in-flight calls resent),
    actor 1 is killed for good (the driver resubmits its batches to the others)."""
    tree, root, _ = reference
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
    res = run(load_config(None, ["ray.enabled=true", "ray.scorers=3", "ray.max_in_flight=12"], tree=tree),
              tmp_path / "faults", observer=obs)
    assert obs.killed
    ex = res.execution.model_dump()
    assert ex["actor_restarts"] >= 1 and ex["actors_lost"] == 1 and ex["resubmitted"] >= 1, ex
    assert_same_run(tmp_path / "faults", root / "in_process")


@pytest.mark.slow
def test_the_ray_driver_opens_no_scorer_session(reference, ray_cluster, tmp_path):
    """Memory scales with the sessions used: with Ray the actors score, and the driver's onnxruntime
    scorer (exported and verified, for the tokenizer and the identity) never opens its session."""
    from rospr_harness.backends import create_backend

    tree, root, _ = reference
    config = load_config(None, ["ray.enabled=true", "ray.scorers=2", "backend=onnxruntime"], tree=tree)
    backend = create_backend(config)
    res = run(config, tmp_path / "ray2", backend=backend)
    assert res.execution.executor == "ray"
    assert not backend.scorer._lazy.opened
    assert_same_run(tmp_path / "ray2", root / "in_process")
    backend.scorer.prompt_dim  # the first use opens it
    assert backend.scorer._lazy.opened
