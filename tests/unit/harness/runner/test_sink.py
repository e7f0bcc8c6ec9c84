"""The unit sink (``rospr_harness.runner.sink``): one receiver of finished units.

What must hold: a computed unit is written to the run directory, listed in results.json and kept in
the unit cache; the same unit found in the cache is written with the same records bytes and the
same figures, counted as cached, without rewriting results.json; without a unit cache nothing is
reused; a unit cache that cannot be written is dropped with a warning and the unit still written.
"""

from __future__ import annotations

import json
import logging

import pytest
from fakes import row_scores

from rospr_harness.backends import create_backend
from rospr_harness.cache import UnitCache
from rospr_harness.runner.driver import build_records
from rospr_harness.runner.plan import plan_run
from rospr_harness.runner.rundir import open_run, records_path
from rospr_harness.runner.session import Clock, Stamp
from rospr_harness.runner.sink import UnitKeys, UnitSink
from rospr_harness.runner.stages import Stages
from rospr_harness.schema import Execution, UnitResult, read_results, records_text
from rospr.scoring import encode_examples
from rospr.selection import T0


class Done:
    """An observer that keeps the units it is told are done."""

    def __init__(self) -> None:
        self.units: list[UnitResult] = []

    def start(self, total):
        pass

    def advance(self, n):
        pass

    def unit_done(self, unit):
        self.units.append(unit)


@pytest.fixture
def target(run_config, fake_scorer):
    """A t0 run's config and backend, its one target, its rows and the records text of its unit."""
    config = run_config(method=["t0"], tasks=[{"name": "builtin/sentiment", "limit": 6}])
    backend = create_backend(config)
    plan = plan_run(config)
    spec = plan.specs[0]
    data = spec.load()
    conv = config.scoring.convention()
    encoded = encode_examples(backend.tokenizer, data.examples, conv)
    text = records_text(build_records(data.examples, encoded, [row_scores(e) for e in encoded], conv))
    return config, backend, plan, spec, data, text


def sink_into(out, target, cache: UnitCache | None) -> tuple[UnitSink, Done]:
    config, backend, plan, _, _, _ = target
    rundir, _ = open_run(out, config, plan.order, resume=False)
    done = Done()
    keys = UnitKeys.of(config, backend, None) if cache is not None else None
    sink = UnitSink(rundir, cache, keys, done, Stages(), Stamp(config, backend, Clock()),
                    Execution(executor="in_process"))
    return sink, done


def computed(spec, data) -> UnitResult:
    return UnitResult(task=spec.task_name, prompt=spec.prompt, method=T0.name, n=len(data.examples), accuracy=None,
                      skipped=data.skipped, skipped_reasons=dict(data.skip_reasons), truncated=0,
                      records=records_path(spec.task_name, spec.prompt, T0.name), content_hash=data.content_hash,
                      wall_s=0.5)


def test_a_computed_unit_is_written_listed_and_cached_then_reused_with_the_same_bytes(target, tmp_path):
    _, _, _, spec, data, text = target
    cache = UnitCache(tmp_path / "units")
    sink, done = sink_into(tmp_path / "a", target, cache)
    assert not sink.reuse(spec, data, T0)  # an empty cache holds nothing
    sink.add(spec, data, T0, computed(spec, data), text)
    assert sink.counts == {"computed": 1, "cached": 0}
    listed = read_results(tmp_path / "a" / "results.json")
    assert [u.method for u in listed.units] == ["t0"] and listed.execution.computed == 1
    written = (tmp_path / "a" / listed.units[0].records).read_bytes()
    assert written == text.encode("utf-8") and done.units[0].n == len(data.examples)

    again, done_again = sink_into(tmp_path / "b", target, cache)
    assert again.reuse(spec, data, T0)
    assert again.counts == {"computed": 0, "cached": 1}
    assert not (tmp_path / "b" / "results.json").exists()  # a cached unit does not rewrite results.json
    reused = done_again.units[0]
    assert reused.cached and (tmp_path / "b" / reused.records).read_bytes() == written
    first = done.units[0]
    assert (reused.n, reused.accuracy, reused.stderr, reused.ci_low, reused.ci_high, reused.skipped) == \
        (first.n, first.accuracy, first.stderr, first.ci_low, first.ci_high, first.skipped)


def test_without_a_unit_cache_nothing_is_reused(target, tmp_path):
    _, _, _, spec, data, text = target
    sink, _ = sink_into(tmp_path / "a", target, None)
    assert not sink.reuse(spec, data, T0)
    sink.add(spec, data, T0, computed(spec, data), text)
    assert sink.counts == {"computed": 1, "cached": 0}


def test_an_unwritable_unit_cache_is_dropped_and_the_unit_still_written(target, tmp_path, monkeypatch, caplog):
    _, _, _, spec, data, text = target
    cache = UnitCache(tmp_path / "units")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "units"))

    monkeypatch.setattr(cache, "put", full)
    sink, _ = sink_into(tmp_path / "a", target, cache)
    with caplog.at_level(logging.WARNING):
        sink.add(spec, data, T0, computed(spec, data), text)
    assert sink.cache is None and "cannot be written" in caplog.text
    assert json.loads((tmp_path / "a" / "results.json").read_text())["execution"]["computed"] == 1
