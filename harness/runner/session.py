"""The executor step of a run: what it computes with, set up once the run directory is ready.

``Stamp`` writes the run's provenance (git state, versions, host, backend identity, wall time);
``unit_cache`` opens the unit cache when ``cache.enabled``; ``build_executor`` makes the in-process
executor (the reference) or the Ray executor (a retrieval actor and scoring actors), each running
the same worker classes (``executor.py``). The run's Ray itself is ``harness.ray_session.run_ray``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from harness.backends import Backend
from harness.cache import UnitCache, cache_root
from harness.config import CacheConfig, RunConfig, checkpoint_revision
from harness.method.prepare import RosprContext
from harness.provenance import git_state, host, package_versions
from harness.results import Provenance
from harness.runner.executor import Executor, InProcessExecutor, RetrievalWorker, ScoringWorker
from harness.runner.ray_executor import RayExecutor


@dataclass
class Clock:
    """When a run started (wall clock for provenance, monotonic-enough seconds for ``wall_s``)."""

    started: float = field(default_factory=time.time)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


class Stamp:
    """The run's provenance, read once (git, versions, host) and stamped with the wall time so far."""

    def __init__(self, config: RunConfig, backend: Backend, clock: Clock) -> None:
        self.config, self.backend, self.clock = config, backend, clock
        self.rev, self.dirty = git_state()
        self.versions, self.machine = package_versions(), host()

    def __call__(self) -> Provenance:
        return Provenance(git_revision=self.rev, git_dirty=self.dirty, package_versions=self.versions,
                          config_hash=self.config.content_hash(), model=self.backend.identity,
                          backend=self.backend.name, seed=self.config.seed, host=self.machine,
                          started_at=self.clock.started_at, wall_s=time.time() - self.clock.started,
                          command=list(sys.argv), model_revision=self.config.model.revision,
                          retriever_revision=checkpoint_revision(
                              self.config, self.config.rospr.retriever or self.config.model.name_or_path))


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
