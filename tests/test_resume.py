"""Interrupted runs and the unit cache.

- A run SIGKILLed mid-way and then resumed equals an uninterrupted run, unit by unit, with no unit
  lost or counted twice; a resume trusts only records that match their sha256, and refuses another
  config.
- A backend that goes away mid-run: the error ends the run, every finished unit stays, a resume
  finishes the rest.
- The unit cache: a second run reuses every unit (and says so); an entry that fails its checksum is
  recomputed, not trusted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rospr_harness.backends import Backend, BackendUnavailable, create_backend
from rospr_harness.config import load_config
from rospr_harness.results import read_records, read_results
from rospr_harness.runner import ResumeError, run

REPO = Path(__file__).resolve().parents[1]
TASKS = ["builtin/sentiment", "builtin/topic", "builtin/animals", "builtin/nli", "builtin/fruit_choice"]


def tree_for(model_dir, root, limit: int = 48) -> dict:
    return {
        "model": {"name_or_path": str(model_dir)},
        "method": ["t0", "rospr"],
        "tasks": [{"name": t, "limit": limit} for t in TASKS],
        "scoring": {"batch_size": 8},
        "rospr": {"sources": ["builtin/sentiment", "builtin/nli", "builtin/animals"],
                  "prompt_bank": str(root / "bank"), "library": str(root / "library"),
                  "tune": {"steps": 3, "prompt_length": 4, "batch_size": 8, "source_rows": 24, "parallel": "off"},
                  "library_n": 16, "queries": 6, "top_n": 5},
    }


def same_units(run_dir: Path, ref_dir: Path) -> None:
    """Exactly the reference's units and records (the same executor: the same bytes)."""
    got, ref = read_results(run_dir / "results.json"), read_results(ref_dir / "results.json")
    assert [(u.task, u.prompt, u.method) for u in got.units] == [(u.task, u.prompt, u.method) for u in ref.units]
    for g, r in zip(got.units, ref.units):
        assert (g.n, g.accuracy, g.sha256) == (r.n, r.accuracy, r.sha256), (g.task, g.prompt, g.method)
        assert read_records(run_dir / g.records) == read_records(ref_dir / r.records)
    assert got.overall == ref.overall and got.tasks == ref.tasks


def tamper(path: Path) -> None:
    """Change the first record's prediction (the file stays valid JSON lines)."""
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["prediction"] = 1 - first["prediction"] if first["prediction"] in (0, 1) else 0
    before = path.read_bytes()
    path.write_text("\n".join([json.dumps(first, ensure_ascii=False), *lines[1:]]) + "\n")
    assert path.read_bytes() != before


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    tree = tree_for(tiny_model_dir, root)
    (root / "config.yaml").write_text(json.dumps(tree))
    res = run(load_config(None, tree=tree), root / "uninterrupted")
    return tree, root, res


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(reference, tmp_path):
    tree, root, ref = reference
    total = len(ref.units)
    out = tmp_path / "killed"
    # its own unit cache: the run computes its units (a cached unit does not rewrite results.json, so a run
    # of cached units is never caught half-way)
    env = {**os.environ, "ROSPR_UNIT_CACHE": str(tmp_path / "units")}
    proc = subprocess.Popen([sys.executable, "-m", "rospr_harness.cli", "run", str(root / "config.yaml"), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(json.loads((out / "results.json").read_text())["units"]) >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    partial = read_results(out / "results.json")
    assert 2 <= len(partial.units) < total

    res = run(load_config(None, tree=tree), out, resume=True)
    ex = res.execution.model_dump()
    assert ex["resumed"] == len(partial.units) and ex["resumed"] + ex["computed"] == total, ex
    same_units(out, root / "uninterrupted")
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))


def test_resume_recomputes_a_unit_whose_records_changed(reference, tmp_path):
    tree, root, ref = reference
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(root / "uninterrupted", out)
    tamper(out / ref.units[3].records)
    res = run(load_config(None, tree=tree), out, resume=True)
    assert res.execution.resumed == len(ref.units) - 1 and res.execution.computed == 1
    same_units(out, root / "uninterrupted")


def test_resume_refuses_another_config(reference, tmp_path):
    tree, root, _ = reference
    import shutil

    shutil.copytree(root / "uninterrupted", tmp_path / "r")
    with pytest.raises(ResumeError, match=r"another config \(differs in: scoring.batch_size\)"):
        run(load_config(None, ["scoring.batch_size=5"], tree=tree), tmp_path / "r", resume=True)
    # execution settings may change on a resume: nothing left to compute, nothing recomputed
    res = run(load_config(None, ["ray.max_in_flight=3"], tree=tree), tmp_path / "r", resume=True)
    assert res.execution.computed == 0 and res.execution.resumed == len(res.units)


class _GoesAway:
    """A scorer whose server disappears after ``n`` batches."""

    def __init__(self, scorer, n: int) -> None:
        self.scorer, self.n, self.prompt_dim = scorer, n, scorer.prompt_dim

    def score(self, batch):
        self.n -= 1
        if self.n < 0:
            raise BackendUnavailable("Triton: t0_scorer at grpc://127.0.0.1:1 is unavailable after 3 attempts")
        return self.scorer.score(batch)


def test_a_backend_gone_mid_run_keeps_finished_units_then_resume_finishes(reference, tmp_path):
    tree, root, ref = reference
    cfg = load_config(None, tree=tree)
    real = create_backend(cfg)
    failing = Backend(real.name, _GoesAway(real.scorer, 20), real.tokenizer, real.identity)
    with pytest.raises(BackendUnavailable, match="after 3 attempts"):
        run(cfg, tmp_path / "r", backend=failing)
    kept = read_results(tmp_path / "r" / "results.json")
    assert 1 <= len(kept.units) < len(ref.units)
    res = run(cfg, tmp_path / "r", resume=True, backend=real)
    assert res.execution.resumed == len(kept.units)
    same_units(tmp_path / "r", root / "uninterrupted")


def test_unit_cache_reuses_and_recomputes_a_damaged_entry(reference, tmp_path):
    tree, root, ref = reference
    cache = ["cache.enabled=true", f"cache.dir={tmp_path / 'cache'}"]
    first = run(load_config(None, cache, tree=tree), tmp_path / "a")
    assert first.execution.computed == len(ref.units) and first.execution.cached == 0
    second = run(load_config(None, cache, tree=tree), tmp_path / "b")
    assert second.execution.cached == len(ref.units) and all(u.cached for u in second.units)
    same_units(tmp_path / "b", root / "uninterrupted")
    assert "## Reused from cache" in (tmp_path / "b" / "report.md").read_text()

    entries = sorted((tmp_path / "cache").glob("*/*/records.jsonl"))
    assert len(entries) == len(ref.units)
    original = entries[0].read_bytes()
    tamper(entries[0])
    third = run(load_config(None, cache, tree=tree), tmp_path / "c")
    assert third.execution.computed == 1 and third.execution.cached == len(ref.units) - 1
    same_units(tmp_path / "c", root / "uninterrupted")
    assert entries[0].read_bytes() == original  # the entry was replaced by the recomputed unit


def test_cache_key_changes_with_what_the_records_depend_on(reference, tmp_path):
    tree, root, ref = reference
    cache = ["cache.enabled=true", f"cache.dir={tmp_path / 'cache'}", "method=[t0]", "tasks=[{name: builtin/nli, limit: 8}]"]
    run(load_config(None, cache, tree=tree), tmp_path / "a")
    # batch size and execution settings: not in the key
    same = run(load_config(None, cache + ["scoring.batch_size=3", "ray.max_in_flight=2"], tree=tree), tmp_path / "b")
    assert same.execution.cached == len(same.units) > 0
    # the convention, the rows: in the key
    for change in (["scoring.length_normalize=true"], ["tasks.0.limit=6"]):
        other = run(load_config(None, cache + change, tree=tree), tmp_path / "c")
        assert other.execution.cached == 0, change


def test_unit_cache_entries_are_store_entries_and_earlier_ones_stay_readable(tmp_path):
    import hashlib

    from rospr_harness.cache import CACHE_FORMAT, CACHE_VERSION, UnitCache
    from rospr.artifacts import seal

    cache = UnitCache(tmp_path / "u")
    key = "ab" + "0" * 62
    records = b'{"index": 0}\n'
    cache.put(key, {"p": 1}, records, {"n": 1})
    entry = tmp_path / "u" / "ab" / key
    assert sorted(os.listdir(entry.parent)) == [key]  # no stage, no lock left beside it
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["files"] == {"records.jsonl": hashlib.sha256(records).hexdigest()} and meta["sha256"] == \
        meta["files"]["records.jsonl"]
    got = cache.get(key)
    assert (got.records, got.fields) == (records, {"n": 1})
    # an entry written before the store (no 'files'): read from its 'sha256'
    old = seal({"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "parts": {"p": 1}, "unit": {"n": 1},
                "sha256": hashlib.sha256(records).hexdigest()})
    (entry / "meta.json").write_text(json.dumps(old, indent=1))
    assert cache.get(key).records == records
    # damaged: refused by get (which only looks), replaced by put
    (entry / "records.jsonl").write_bytes(b'{"index": 1}\n')
    assert cache.get(key) is None and entry.is_dir()
    cache.put(key, {"p": 1}, records, {"n": 1})
    assert cache.get(key).records == records
    # a good entry already there is kept (a concurrent writer was first)
    cache.put(key, {"p": 1}, records, {"n": 2})
    assert cache.get(key).fields == {"n": 1}
