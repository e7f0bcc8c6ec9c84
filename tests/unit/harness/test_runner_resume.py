"""Interrupted runs and the unit cache, over the real runner with the fake scorer (``fakes.FakeScorer``:
what is checked is which units are kept, recomputed or reused and that their bytes match, not the
model's numbers), so each case runs in a fraction of a second; the bank and library are tuned and
built once, for the module.

- A resume trusts only records that match their sha256, and refuses another config (a run SIGKILLed
  mid-way and then resumed: ``tests/e2e/test_resume_kill.py``, a whole ``rospr run`` in a subprocess).
- A backend that goes away mid-run: the error ends the run, every finished unit stays, a resume
  finishes the rest.
- The unit cache: a second run reuses every unit (and says so); an entry that fails its checksum is
  recomputed, not trusted.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fakes import fake_scoring
from helpers import resume_settings, same_units

from rospr_harness.backends import Backend, BackendUnavailable, create_backend
from rospr_harness.schema import read_results
from rospr_harness.runner import ResumeError, run


@pytest.fixture(scope="module", autouse=True)
def fake_backends():
    """Every run of this module scores with ``FakeScorer``."""
    with fake_scoring():
        yield


def tamper(path: Path) -> None:
    """Change the first record's prediction (the file stays valid JSON lines)."""
    lines = path.read_text().splitlines()
    first = json.loads(lines[0])
    first["prediction"] = 1 - first["prediction"] if first["prediction"] in (0, 1) else 0
    before = path.read_bytes()
    path.write_text("\n".join([json.dumps(first, ensure_ascii=False), *lines[1:]]) + "\n")
    assert path.read_bytes() != before


@pytest.fixture(scope="module")
def reference(fake_backends, run_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    settings = resume_settings(root)
    res = run(run_config(**settings), root / "uninterrupted")
    return settings, root, res


@pytest.mark.slow  # whole runs, resumed: seconds each (the fast tier stays under 90 s; make test runs it)
def test_resume_recomputes_a_unit_whose_records_changed(reference, run_config, tmp_path):
    settings, root, ref = reference
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(root / "uninterrupted", out)
    tamper(out / ref.units[3].records)
    res = run(run_config(**settings), out, resume=True)
    assert res.execution.resumed == len(ref.units) - 1 and res.execution.computed == 1
    same_units(out, root / "uninterrupted")


def test_resume_refuses_another_config(reference, run_config, tmp_path):
    settings, root, _ = reference
    import shutil

    shutil.copytree(root / "uninterrupted", tmp_path / "r")
    with pytest.raises(ResumeError, match=r"another config \(differs in: scoring.batch_size\)"):
        run(run_config("scoring.batch_size=5", **settings), tmp_path / "r", resume=True)
    # execution settings may change on a resume: nothing left to compute, nothing recomputed
    res = run(run_config("ray.max_in_flight=3", **settings), tmp_path / "r", resume=True)
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


@pytest.mark.slow  # whole runs, resumed: seconds each (the fast tier stays under 90 s; make test runs it)
def test_a_backend_gone_mid_run_keeps_finished_units_then_resume_finishes(reference, run_config, tmp_path):
    settings, root, ref = reference
    cfg = run_config(**settings)
    real = create_backend(cfg)  # the fake one
    failing = Backend(real.name, _GoesAway(real.scorer, 20), real.tokenizer, real.identity)
    with pytest.raises(BackendUnavailable, match="after 3 attempts"):
        run(cfg, tmp_path / "r", backend=failing)
    kept = read_results(tmp_path / "r" / "results.json")
    assert 1 <= len(kept.units) < len(ref.units)
    res = run(cfg, tmp_path / "r", resume=True, backend=real)
    assert res.execution.resumed == len(kept.units)
    same_units(tmp_path / "r", root / "uninterrupted")


@pytest.mark.slow  # whole runs, resumed: seconds each (the fast tier stays under 90 s; make test runs it)
def test_unit_cache_reuses_and_recomputes_a_damaged_entry(reference, run_config, tmp_path):
    settings, root, ref = reference
    cache = ["cache.enabled=true", f"cache.dir={tmp_path / 'cache'}"]
    first = run(run_config(*cache, **settings), tmp_path / "a")
    assert first.execution.computed == len(ref.units) and first.execution.cached == 0
    second = run(run_config(*cache, **settings), tmp_path / "b")
    assert second.execution.cached == len(ref.units) and all(u.cached for u in second.units)
    same_units(tmp_path / "b", root / "uninterrupted")
    assert "## Reused from cache" in (tmp_path / "b" / "report.md").read_text()

    entries = sorted((tmp_path / "cache").glob("*/*/records.jsonl"))
    assert len(entries) == len(ref.units)
    original = entries[0].read_bytes()
    tamper(entries[0])
    third = run(run_config(*cache, **settings), tmp_path / "c")
    assert third.execution.computed == 1 and third.execution.cached == len(ref.units) - 1
    same_units(tmp_path / "c", root / "uninterrupted")
    assert entries[0].read_bytes() == original  # the entry was replaced by the recomputed unit


def test_cache_key_changes_with_what_the_records_depend_on(reference, run_config, tmp_path):
    settings, root, ref = reference
    cache = ["cache.enabled=true", f"cache.dir={tmp_path / 'cache'}", "method=[t0]", "tasks=[{name: builtin/nli, limit: 8}]"]
    run(run_config(*cache, **settings), tmp_path / "a")
    # batch size and execution settings: not in the key
    same = run(run_config(*cache, "scoring.batch_size=3", "ray.max_in_flight=2", **settings), tmp_path / "b")
    assert same.execution.cached == len(same.units) > 0
    # the convention, the rows: in the key
    for change in (["scoring.length_normalize=true"], ["tasks.0.limit=6"]):
        other = run(run_config(*cache, *change, **settings), tmp_path / "c")
        assert other.execution.cached == 0, change


def test_unit_cache_entries_are_store_entries_and_earlier_ones_stay_readable(tmp_path):
    import hashlib

    from rospr_harness.cache import CACHE_FORMAT, CACHE_VERSION, UnitCache, UnitMeta
    from rospr.artifacts import seal

    cache = UnitCache(tmp_path / "u")
    key = "ab" + "0" * 62
    records = b'{"index": 0}\n'
    cache.put(key, {"p": 1}, records, UnitMeta(n=1))
    entry = tmp_path / "u" / "ab" / key
    assert sorted(os.listdir(entry.parent)) == [key]  # no stage, no lock left beside it
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["files"] == {"records.jsonl": hashlib.sha256(records).hexdigest()} and meta["sha256"] == \
        meta["files"]["records.jsonl"]
    got = cache.get(key)
    assert (got.records, got.meta) == (records, UnitMeta(n=1))
    # an entry written before the store (no 'files'): read from its 'sha256'
    old = seal({"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "parts": {"p": 1}, "unit": {"n": 1},
                "sha256": hashlib.sha256(records).hexdigest()})
    (entry / "meta.json").write_text(json.dumps(old, indent=1))
    assert cache.get(key).records == records and cache.get(key).meta == UnitMeta(n=1)  # absent keys: defaults
    # damaged: refused by get (which only looks), replaced by put
    (entry / "records.jsonl").write_bytes(b'{"index": 1}\n')
    assert cache.get(key) is None and entry.is_dir()
    cache.put(key, {"p": 1}, records, UnitMeta(n=1))
    assert cache.get(key).records == records
    # a good entry already there is kept (a concurrent writer was first)
    cache.put(key, {"p": 1}, records, UnitMeta(n=2))
    assert cache.get(key).meta == UnitMeta(n=1)
