"""Where a finished unit goes: one object that writes it to the run directory and keeps it in the unit cache.

``UnitSink.reuse`` writes a unit the unit cache holds (its records verified there, its figures taken
from them by ``RunDirectory.add``); ``UnitSink.add`` writes a computed unit, lists it in results.json
and puts it into the unit cache. results.json is rewritten after every computed unit; a cached one
costs nothing to redo (and rewriting the whole file after each of them made a fully cached run
quadratic in its units). A unit cache that cannot be written is dropped with a warning: the run goes
on without it. ``UnitKeys``: what a unit's records depend on (``rospr_harness.cache.key_parts``), its
scorer and RoSPr parts computed once per run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Protocol

from rospr_harness.backends import Backend
from rospr_harness.cache import UnitCache, UnitMeta, key_parts, rospr_part, scorer_part, unit_key
from rospr_harness.config import RunConfig, retriever_name
from rospr_harness.figures import spread_fields
from rospr_harness.method.prepare import RosprContext
from rospr_harness.runner.plan import TargetSpec
from rospr_harness.runner.rundir import RunDirectory, records_path
from rospr_harness.runner.stages import Stages
from rospr_harness.schema import Execution, Provenance, UnitResult
from rospr.data import UnitData
from rospr.scoring import Convention
from rospr.selection import Method

log = logging.getLogger(__name__)


class Observer(Protocol):
    """Progress callbacks (the CLI draws a rich progress bar from them)."""

    def start(self, total_units: int) -> None: ...
    def advance(self, n: int) -> None: ...  # n more examples scored
    def unit_done(self, unit: UnitResult) -> None: ...


class Silent:
    def start(self, total_units: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def unit_done(self, unit: UnitResult) -> None: ...


@dataclass(frozen=True)
class UnitKeys:
    """The unit cache's keys of a run: ``scorer`` (``scorer_part``) and ``rospr`` (``rospr_part``; None
    when the run retrieves nothing) are the same for every unit, so they are computed once."""

    scorer: dict
    rospr: dict | None
    convention: Convention

    @classmethod
    def of(cls, config: RunConfig, backend: Backend, rospr: RosprContext | None) -> "UnitKeys":
        scorer = scorer_part(backend.name, dict(backend.identity), config.model.name_or_path)
        part = rospr_part(rospr.library, retriever_name(config), rospr.rc, config.seed) if rospr else None
        return cls(scorer, part, config.scoring.convention())

    def parts(self, spec: TargetSpec, data_hash: str, method: Method) -> dict:
        """What ``method``'s unit of ``spec`` depends on (``rospr_harness.cache.key_parts``)."""
        return key_parts(self.scorer, spec.task_name, spec.prompt, data_hash, self.convention, method,
                         self.rospr if method.retrieve else None)


class UnitSink:
    """The run directory and the unit cache (None: disabled; ``keys`` then unused), as one receiver of
    finished units. ``stamp()``: the provenance results.json is written with; ``execution``: its
    ``execution`` before the counts (``counts``: units computed and reused so far) are added."""

    def __init__(self, rundir: RunDirectory, cache: UnitCache | None, keys: UnitKeys | None, observer: Observer,
                 stages: Stages, stamp: Callable[[], Provenance], execution: Execution) -> None:
        self.rundir, self.cache, self.keys, self.observer, self.stages = rundir, cache, keys, observer, stages
        self.stamp, self.execution = stamp, execution
        self.counts = {"computed": 0, "cached": 0}

    def reuse(self, spec: TargetSpec, data: UnitData, method: Method) -> bool:
        """Write ``method``'s unit of ``spec`` from the unit cache if it holds it; False when not cached.
        Its ``n`` and ``accuracy`` come from the verified records (``RunDirectory.add``), never from the
        entry's metadata."""
        if self.cache is None:
            return False
        with self.stages.timing("cache"):
            hit = self.cache.get(unit_key(self.keys.parts(spec, data.content_hash, method))) if data.content_hash \
                else None
        if hit is None:
            return False
        with self.stages.timing("write"):
            meta = hit.meta
            unit = UnitResult(task=spec.task_name, prompt=spec.prompt, method=method.name, n=0, accuracy=None,
                              skipped=meta.skipped, skipped_reasons=dict(meta.skipped_reasons),
                              truncated=meta.truncated, records=records_path(spec.task_name, spec.prompt, method.name),
                              content_hash=meta.content_hash, wall_s=0.0, retrieval=meta.retrieval, cached=True)
            # debug: the observer prints each unit already ("reused from cache"); an INFO line more cost ~8 ms a unit
            log.debug("%s / %s / %s: reused from the unit cache (%s)", spec.task_name, spec.prompt, method.name,
                      hit.key[:12])
            unit = self.rundir.add(unit, hit.records.decode("utf-8"), meta.figures, hit.source)
            self.counts["cached"] += 1
            self.observer.unit_done(unit)
        return True

    def add(self, spec: TargetSpec, data: UnitData, method: Method, unit: UnitResult, text: str) -> None:
        """Write a computed unit (``text``: its records file), put it into the unit cache when its data
        has a content hash, and write results.json."""
        unit = self.rundir.add(unit, text)
        self.counts["computed"] += 1
        if self.cache is not None and data.content_hash:
            with self.stages.timing("cache"):
                self._store(spec, data.content_hash, method, unit, text)
        self.rundir.write(self.stamp(), self.execution.updated(**self.counts))
        self.observer.unit_done(unit)

    def _store(self, spec: TargetSpec, data_hash: str, method: Method, unit: UnitResult, text: str) -> None:
        """Put a computed unit into the unit cache (a cache that cannot be written is dropped)."""
        parts = self.keys.parts(spec, data_hash, method)
        # its bootstrap (spread_fields): not drawn again on reuse if the records agree
        meta = UnitMeta.of(unit, spread_fields(unit))
        try:
            self.cache.put(unit_key(parts), parts, text.encode("utf-8"), meta)
        except OSError as exc:  # the unit cache is optional: a run goes on without it
            log.warning("unit cache %s: cannot be written (%s); the run goes on without caching its units "
                        "(free space there, or set cache.dir / ROSPR_UNIT_CACHE)",
                        exc.filename or self.cache.root, exc.strerror or exc)
            self.cache = None
