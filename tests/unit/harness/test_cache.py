"""The unit cache (``rospr_harness.cache``) as a run uses it: a reused unit's records are a hard link
to the entry's read-only file (a copy where no link can be made), and its stderr and bootstrap
interval are taken from the entry only when its records give the same n and accuracy."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from rospr_harness.config import load_config
from rospr_harness.figures import UnitFigures
from rospr_harness.schema import Statistics, read_results
from rospr_harness.runner import run
from rospr.artifacts import FileRef, atomic_link_or_write, read_file_ref
import hashlib
import json
from dataclasses import asdict
from rospr_harness.cache import CACHE_FORMAT, CACHE_VERSION, cache_root, key_parts, unit_key
from rospr.scoring import Convention
from rospr.selection import T0, Method


def cached_config(run_config, cache: Path):
    """Two small tasks with ``t0``, the unit cache in ``cache`` (the export cache: the session's)."""
    tree = run_config.tree(tasks=[{"name": "builtin/animals", "limit": 6}, {"name": "builtin/nli", "limit": 5}],
                           method=["t0"], cache={"enabled": True, "dir": str(cache)}, onnxruntime={"threads": 1})
    return load_config(None, [], tree=tree)


def plain(units) -> list[dict]:
    return [u.model_dump(exclude={"wall_s", "cached"}) for u in units]


def entry_records(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*/records.jsonl"))


def test_a_reused_unit_links_the_entrys_records_and_gives_the_computed_numbers(run_config, tmp_path):
    cache = tmp_path / "cache"
    first = run(cached_config(run_config, cache), tmp_path / "a")
    assert first.execution.computed == len(first.units) > 1
    entries = {p.stat().st_ino: p for p in entry_records(cache)}
    assert len(entries) == len(first.units)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in entries.values())  # read-only

    second = run(cached_config(run_config, cache), tmp_path / "b")
    assert second.execution.cached == len(second.units) and second.execution.computed == 0
    assert plain(second.units) == plain(first.units)  # n, accuracy, stderr, interval, sha256
    assert second.tasks == first.tasks and second.overall == first.overall
    for unit in second.units:
        mine = tmp_path / "b" / unit.records
        assert mine.stat().st_ino in entries  # the entry's file itself, not a copy
        assert mine.read_bytes() == (tmp_path / "a" / unit.records).read_bytes()
    assert plain(read_results(tmp_path / "b" / "results.json").units) == plain(first.units)


def test_a_reused_unit_is_copied_where_no_link_can_be_made(run_config, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first = run(cached_config(run_config, cache), tmp_path / "a")

    def cross_device(*_a, **_k):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", cross_device)
    second = run(cached_config(run_config, cache), tmp_path / "b")
    assert second.execution.cached == len(second.units)
    assert plain(second.units) == plain(first.units)
    inodes = {p.stat().st_ino for p in entry_records(cache)}
    for unit in second.units:
        mine = tmp_path / "b" / unit.records
        assert mine.stat().st_ino not in inodes and mine.read_bytes() == (tmp_path / "a" / unit.records).read_bytes()


def test_a_run_records_file_changed_in_place_is_caught_and_the_unit_recomputed(run_config, tmp_path):
    """Editing a reused unit's records in place changes the entry too (one file): the next run finds the
    entry damaged and computes the unit again, with the same numbers; the first run keeps its own."""
    cache = tmp_path / "cache"
    first = run(cached_config(run_config, cache), tmp_path / "a")
    run(cached_config(run_config, cache), tmp_path / "b")
    victim = tmp_path / "b" / first.units[0].records
    os.chmod(victim, 0o644)
    with open(victim, "ab") as fh:  # in place, not by a rename
        fh.write(b"\n")
    third = run(cached_config(run_config, cache), tmp_path / "c")
    assert third.execution.computed == 1 and third.execution.cached == len(first.units) - 1
    assert plain(third.units) == plain(first.units)
    assert (tmp_path / "a" / first.units[0].records).read_bytes() == (tmp_path / "c" / first.units[0].records).read_bytes()


def test_a_reused_unit_draws_no_bootstrap_again(run_config, tmp_path, monkeypatch):
    import rospr_harness.stats as stats

    cache = tmp_path / "cache"
    first = run(cached_config(run_config, cache), tmp_path / "a")
    drawn = []
    real = stats.accuracy_interval
    monkeypatch.setattr(stats, "accuracy_interval", lambda units, names, *a, **k: drawn.append(names[0]) or
                        real(units, names, *a, **k))
    second = run(cached_config(run_config, cache), tmp_path / "b")
    assert "unit" not in drawn and "task" in drawn  # a task's spread over its prompts is still drawn
    assert plain(second.units) == plain(first.units)


def figures(n=3, accuracy=2 / 3) -> UnitFigures:
    return UnitFigures(n, accuracy, {0: 1.0, 1: 1.0, 2: 0.0}, ("t", "p", "t0"))


@pytest.mark.parametrize("change", [{"n": 4}, {"accuracy": 0.5}, {"statistics": {"bootstrap_replicates": 10}}, None])
def test_a_known_spread_is_taken_only_for_the_same_records_and_statistics(change):
    drawn = figures().spread
    known = {"n": 3, "accuracy": 2 / 3, "stderr": 9.0, "ci_low": 8.0, "ci_high": 10.0,
             "statistics": Statistics().model_dump()}
    if change is None:
        f = figures()
        f.known_spread(known)
        assert (f.spread.stderr, f.spread.ci_low, f.spread.ci_high) == (9.0, 8.0, 10.0)
        return
    f = figures()
    f.known_spread({**known, **change})
    assert f.spread == drawn


def test_read_file_ref_refuses_a_link_and_a_replaced_source_is_written_not_linked(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"one\n")
    (tmp_path / "link").symlink_to(src)
    with pytest.raises(OSError):
        read_file_ref(tmp_path / "link")
    data, ref = read_file_ref(src)
    assert data == b"one\n" and isinstance(ref, FileRef)
    assert atomic_link_or_write(tmp_path / "a", data, ref) and (tmp_path / "a").stat().st_ino == src.stat().st_ino
    replacement = tmp_path / "new"
    replacement.write_bytes(b"two\n")
    os.replace(replacement, src)  # the source is another file now
    assert not atomic_link_or_write(tmp_path / "b", data, ref)
    assert (tmp_path / "b").read_bytes() == b"one\n" and (tmp_path / "b").stat().st_ino != src.stat().st_ino
    assert not atomic_link_or_write(tmp_path / "c", b"three\n", None) and (tmp_path / "c").read_bytes() == b"three\n"


# -- the unit-cache key and root, against hand-written references --------------------------------------
def test_cache_key_is_composed_as_documented():
    scorer = {"backend": "onnxruntime", "identity": {"name": "m"}, "weights": None}
    rospr = {"library": "L", "bank": "B", "queries": 32}
    conv = Convention()
    by_hand = {"model": scorer, "task": "rte", "prompt": "p", "data": "D",
               "convention": {"input_eos": False, "choice_eos": True, "length_normalize": False,
                              "max_input_tokens": 1024, "max_choice_tokens": 256},
               "method": "rospr+var", "rospr": rospr}
    parts = key_parts(scorer, "rte", "p", "D", conv, Method(var=True), rospr)
    assert parts == by_hand
    text = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, **by_hand}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    assert unit_key(parts) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    # t0 carries no retrieval part (and does not need one); a RoSPr method without it is refused
    t0 = key_parts(scorer, "rte", "p", "D", conv, T0, None)
    assert "rospr" not in t0 and t0["method"] == "t0"
    with pytest.raises(ValueError, match="rospr_part"):
        key_parts(scorer, "rte", "p", "D", conv, Method(), None)
    assert asdict(conv) == by_hand["convention"]


def test_cache_roots(monkeypatch, tmp_path):
    monkeypatch.delenv("ROSPR_UNIT_CACHE", raising=False)
    monkeypatch.setenv("ROSPR_ONNX_CACHE", str(tmp_path / "onnx"))
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    assert cache_root("units") == tmp_path / "home" / "units"
    assert cache_root("onnx") == tmp_path / "onnx"
    assert cache_root("units", tmp_path / "u") == tmp_path / "u"
    with pytest.raises(KeyError, match="units or onnx"):
        cache_root("data")


def test_unit_meta_is_written_as_the_unit_fields_and_a_malformed_one_is_recomputed(tmp_path):
    """meta.json's ``unit``: the unit's fields in UnitResult's order, then ``figures``; read back typed,
    and an entry whose ``unit`` does not follow UnitMeta is refused (None: the unit is recomputed)."""
    from rospr_harness.cache import UnitCache, UnitMeta
    from rospr_harness.schema import RetrievalLog, UnitResult
    from rospr.artifacts import seal

    log = RetrievalLog(method="rospr+var", queries=[0, 2], hits=4, excluded=[], library="lib", candidates=[],
                       n_candidates=0, var_rule="choices", chosen=["p1"], weights=[1.0])
    unit = UnitResult(task="t", prompt="p", method="rospr+var", n=3, accuracy=0.5, skipped=1,
                      skipped_reasons={"empty": 1}, truncated=2, records="records/x.jsonl", content_hash="c",
                      wall_s=0.25, retrieval=log, sha256="s", cached=False, stderr=0.1)
    meta = UnitMeta.of(unit, {"n": 3})
    expected = {**unit.model_dump(include={"n", "accuracy", "skipped", "skipped_reasons", "truncated", "content_hash",
                                           "wall_s", "retrieval"}), "figures": {"n": 3}}
    assert list(meta.to_json()) == list(expected) and meta.to_json() == expected

    cache = UnitCache(tmp_path / "u")
    key = "cd" + "0" * 62
    cache.put(key, {"p": 1}, b'{"index": 0}\n', meta)
    assert json.loads((cache.path(key) / "meta.json").read_text())["unit"] == expected
    assert cache.get(key).meta == meta and cache.get(key).meta.retrieval.var_rule == "choices"

    bad = "ef" + "0" * 62
    cache.put(bad, {"p": 1}, b'{"index": 0}\n', UnitMeta(n=1, skipped=-1))
    data = json.loads((cache.path(bad) / "meta.json").read_text())
    data["unit"]["skipped"] = "many"
    (cache.path(bad) / "meta.json").write_text(json.dumps(seal(data), indent=1))  # sealed again: only the field is bad
    assert cache.get(bad) is None
