"""The runner: the in-process reference run, a run with nothing to compute starts no Ray, a run
directory is locked against a second driver. The whole runs on Ray actors that must reproduce the
reference (one actor, three at another batch size, actors killed mid-run) are in
tests/e2e/test_runner_ray.py.

The reference is the in-process run, checked independently elsewhere (tests/e2e/test_methods_run.py
rescored a unit with PyTorch); here every other executor must reproduce it unit by unit.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import rospr_settings

from rospr_harness.lock import RunLock, RunLocked
from rospr_harness.schema import read_records, read_results
from rospr_harness.runner import run

METHODS = ["t0", "rospr", "rospr+inter", "rospr+var"]


def small_settings(root) -> dict:
    """The ``run_config`` overrides of a demo-like run, reduced: three targets, four methods, a bank of
    a few quickly tuned prompts."""
    return rospr_settings(root, METHODS, limit=16, batch_size=4, var_candidates=3)


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
def reference(run_config, tmp_path_factory):
    """The in-process run on the real scorer (it also tunes the bank and builds the library the other
    runs reuse): every executor below must reproduce its numbers."""
    root = tmp_path_factory.mktemp("runner")
    settings = small_settings(root)
    res = run(run_config(**settings), root / "in_process")
    return settings, root, res


def test_in_process_reference_is_complete(reference):
    settings, root, res = reference
    assert len(res.units) == 3 * len(METHODS)
    assert res.execution.executor == "in_process" and res.execution.computed == 12
    assert all(u.sha256 and not u.cached for u in res.units)


def test_a_locked_run_directory_is_refused(reference, run_config, fake_scorer, tmp_path):
    """(t0 only, on the fake scorer: what is checked is the lock.)"""
    settings, _, _ = reference
    with RunLock(tmp_path / "busy"):
        with pytest.raises(RunLocked, match=r"another rospr run is using this directory \(pid \d+ on .*since"):
            run(run_config("method=[t0]", **settings), tmp_path / "busy")
    assert not (tmp_path / "busy" / "results.json").exists()
    # released: the same directory is usable again
    res = run(run_config("method=[t0]", "tasks.0.limit=4", "tasks=[{name: builtin/nli, limit: 4}]", **settings),
              tmp_path / "busy")
    assert res.units


def test_cli_names_the_lock_holder(reference, run_config, tmp_path):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    settings, _, _ = reference
    cfg = run_config.write(tmp_path / "c.yaml", **{**settings, "method": ["t0"]})
    with RunLock(tmp_path / "busy"):
        out = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "busy")])
    assert out.exit_code == 2 and "another rospr run is using this directory" in out.output


# -- Ray ---------------------------------------------------------------------------------------------

def test_a_run_with_nothing_to_compute_starts_no_ray(reference, run_config, tmp_path, monkeypatch):
    """Every unit in the unit cache: a Ray-enabled run starts no Ray and no actor (the executor is
    started at its first call, and none comes), and says so in execution. (The real scorer: the
    runs reuse the reference's bank, tuned under the real backbone's identity, which the fake
    scorer's identity does not match.)"""
    import rospr_harness.runner.session as session

    settings, _, _ = reference
    cached = {**settings, "cache": {"enabled": True, "dir": str(tmp_path / "units")}}
    first = run(run_config(**cached), tmp_path / "fill")  # in process: fills the unit cache
    assert first.execution.computed == len(first.units)

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started for a run with nothing to compute")

    monkeypatch.setattr(session, "run_ray", no_ray)
    res = run(run_config("ray.enabled=true", **cached), tmp_path / "again")
    assert res.execution.cached == len(res.units) == len(first.units)
    assert res.execution.started is False and res.execution.scorers == 0
    assert_same_run(tmp_path / "again", tmp_path / "fill")


@pytest.mark.parametrize("content", ["[" * 4000, "[1, 2]", "\udcff"])
def test_class3_a_held_lock_whose_file_holds_anything_is_still_one_refusal(tmp_path, content):
    """class 3 (issue 32): the holder's note is parsed within bounds; a lock file holding deep brackets,
    a list or bad bytes leaves the holder unknown, not a RecursionError."""
    import fcntl

    from rospr_harness.lock import LOCK_NAME

    (tmp_path / "busy").mkdir()
    path = tmp_path / "busy" / LOCK_NAME
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    with open(path, "rb+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(RunLocked, match=r"another rospr run is using this directory \(holder unknown\)"):
            RunLock(tmp_path / "busy").acquire()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_class_8_what_users_meet_a_runs_outputs_follow_the_umask(run_config, fake_scorer, tmp_path, umask):
    """class 8: what users meet. results.json, report.md, report.html and every records file of a run get the
    mode any other tool's output gets under the user's umask (they were 0600 whatever it was), a run resumed
    or reusing cached units too; the unit cache's records stay read-only."""
    import os
    import stat

    def mode(p):
        return stat.S_IMODE(p.stat().st_mode)

    old = os.umask(umask)
    try:
        cfg = run_config(tasks=[{"name": "builtin/animals", "limit": 3}],
                         cache={"enabled": True, "dir": str(tmp_path / "cache")})
        for out in (tmp_path / "run", tmp_path / "cached"):  # the second reuses every unit from the cache
            run(cfg, out)
            files = [out / "results.json", out / "report.md", out / "report.html", *(out / "records").iterdir()]
            assert len(files) > 3
            computed = {f: mode(f) for f in files if f.parent.name != "records" or out.name == "run"}
            assert set(computed.values()) == {0o666 & ~umask}, computed
        cached = list((tmp_path / "cache").rglob("records.jsonl"))
        assert cached and {mode(f) for f in cached} == {0o444 & ~umask}
    finally:
        os.umask(old)
