"""The executor step of a run: what it computes with, set up once the run directory is ready.

``Stamp`` writes the run's provenance (git state, versions, host, backend identity, wall time);
``unit_cache`` opens the unit cache when ``cache.enabled``; ``build_executor`` makes the in-process
executor (the reference) or the Ray executor (a retrieval actor and scoring actors), each running
the same worker classes (``executor.py``). The run's Ray itself is ``rospr_harness.ray_session.run_ray``.
``OnDemand`` starts the executor (and the run's Ray) at the first call that needs it, so a run whose
units are all kept or cached starts neither.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Sequence
from datetime import datetime, timezone

from rospr_harness.backends import Backend
from rospr_harness.cache import UnitCache, cache_root
from rospr_harness.config import CacheConfig, RunConfig, checkpoint_revision, retriever_name
from rospr_harness.method.prepare import RosprContext
from rospr_harness.provenance import git_state, host, package_versions, used_revision
from rospr_harness.schema import Provenance
from rospr_harness.ray_session import ray_available, ray_choice, run_ray
from rospr_harness.runner.executor import Done, Executor, InProcessExecutor, RetrievalRequest, RetrievalWorker, ScoringWorker
from rospr_harness.runner.ray_executor import RayExecutor
from rospr_harness.runner.stages import Stages

log = logging.getLogger(__name__)


@dataclass
class Clock:
    """When a run started (wall clock for provenance, monotonic-enough seconds for ``wall_s``)."""

    started: float = field(default_factory=time.time)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class Stamp:
    """The run's provenance, read once (git, versions, host) and stamped with the wall time so far;
    ``retriever``: the identity of the retriever the library was built with, once it is prepared."""

    def __init__(self, config: RunConfig, backend: Backend, clock: Clock, overrides: Sequence[str] = ()) -> None:
        self.config, self.backend, self.clock, self.overrides = config, backend, clock, list(overrides)
        self.rev, self.dirty = git_state()
        self.versions, self.machine = package_versions(), host()
        self.retriever: dict | None = None
        model, retriever = config.model.name_or_path, retriever_name(config)
        used = used_revision(model, config.model.revision, "model.revision")  # the revisions loaded at, if any
        self.revisions = {"model_revision": used, "retriever_revision": used if retriever == model else
                          used_revision(retriever, checkpoint_revision(config, retriever), "rospr.retriever_revision")}

    def __call__(self) -> Provenance:
        return Provenance(git_revision=self.rev, git_dirty=self.dirty, package_versions=self.versions,
                          config_hash=self.config.content_hash(), model=self.backend.identity,
                          backend=self.backend.name, seed=self.config.seed, host=self.machine,
                          started_at=self.clock.started_at, wall_s=time.time() - self.clock.started,
                          command=list(sys.argv), overrides=self.overrides,
                          **self.revisions, retriever=self.retriever)


def unit_cache(cc: CacheConfig) -> UnitCache | None:
    """The unit cache of ``cache:`` (None when disabled)."""
    return UnitCache(cache_root("units", cc.dir)) if cc.enabled else None


def build_executor(config: RunConfig, backend: Backend, ctx: RosprContext | None, use_ray: bool) -> Executor:
    """The run's executor: Ray actors (``use_ray``) or in process, with a retrieval worker when the
    run retrieves (``ctx``)."""
    pad = backend.tokenizer.pad_token_id or 0
    if use_ray:
        return RayExecutor(config, pad, str(ctx.library.root) if ctx else None, ctx.library.content_hash if ctx else "")
    retrieval = RetrievalWorker(ctx.library, ctx.embedder, ctx.retriever_tokenizer) if ctx else None
    return InProcessExecutor(ScoringWorker(backend.scorer, pad), retrieval)


class OnDemand:
    """The run's executor, started at its first ``put``, ``score`` or ``retrieve`` (under the
    ``executor`` stage): the run's Ray (``run_ray``, entered on ``stack``, left when the run ends) and
    ``build_executor``'s actors or workers. ``name`` and ``max_in_flight`` come from the config, so the
    driver plans with them before anything starts; a run that computes nothing never starts it, and its
    ``stats`` say so (``started: false``, no scorers)."""

    def __init__(self, config: RunConfig, backend: Backend, ctx: RosprContext | None, stack: contextlib.ExitStack,
                 stages: Stages, units: int = 0) -> None:
        self.config, self.backend, self.ctx, self.stack, self.stages = config, backend, ctx, stack, stages
        chosen, why = ray_choice(config.ray, units)
        if config.ray.enabled == "auto":
            log.info("%s", why)
        self.uses_ray = chosen and ray_available()  # run_ray falls back the same way, with a warning
        self.name = "ray" if self.uses_ray else "in_process"
        self.max_in_flight = (config.ray.max_in_flight or 4 * config.ray.scorers) if self.uses_ray else 1
        self.started: Executor | None = None

    def executor(self) -> Executor:
        if self.started is None:
            with self.stages.timing("executor"):  # the run's Ray start included
                use_ray = self.stack.enter_context(run_ray(self.config.ray)) if self.uses_ray else False
                self.started = build_executor(self.config, self.backend, self.ctx, use_ray)
        return self.started

    def put(self, values) -> Any:
        return self.executor().put(values)

    def score(self, rows: Sequence, prompt: Any) -> Awaitable[Done]:
        return self.executor().score(rows, prompt)

    def retrieve(self, requests: Sequence[RetrievalRequest]) -> Awaitable[Done]:
        return self.executor().retrieve(requests)

    def stats(self) -> dict[str, Any]:
        if self.started is None:
            return {"executor": self.name, "scorers": 0, "started": False}
        return self.started.stats()

    def close(self) -> None:
        if self.started is not None:
            self.started.close()
