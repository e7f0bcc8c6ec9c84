"""Where a run's time goes: seconds per stage, measured in the driver, and the executor's own work.

Two kinds of time, kept apart because they overlap on Ray:

- **Driver stages** (``Stages``): disjoint intervals of the driver's thread. ``setup`` (backend
  load or export, provenance), ``prepare`` (prompt bank and library), ``executor`` (workers or Ray
  actors started), ``load`` (tasks resolved, rows read and templates rendered: at plan time for
  each task's first prompt, when admitted for the others), ``cache`` (unit-cache keys and
  lookups), ``tokenise``, ``select`` (frequency table, VAR ranking, prompt mix), ``wait`` (the
  driver's event loop less the stages run inside it: blocked on the executor; in process this is
  where the work runs), ``write`` (records built, units and results.json written). A stage entered
  inside another is charged to the inner one only (the outer's clock pauses), so the stages never
  count a second twice and sum to at most the wall time. The stack of stages is the thread's, so a
  stage block in a coroutine never spans an ``await`` (another coroutine would run inside it).
- **Executor work** (``Work``): seconds reported by the workers with each result: ``retrieval``,
  ``var`` (VAR scoring of the queries), ``scoring`` and ``model`` (inside the scorer's own calls:
  the session run, feed included; part of ``var`` and ``scoring``). In process they lie inside
  ``wait``; on Ray they are summed over actors, which run beside each other and the driver, so
  ``model_share`` divides by the wall time times the number of scorers.
  The onnxruntime scorer opens its session on first use, so a worker's first ``scoring`` (or
  ``var``) batch also carries that opening, outside ``model``.

``summary`` gives the ``time`` object of results.json's ``execution`` (``rospr_harness.schema.RunTime``,
whose ``StageSeconds`` and ``WorkSeconds`` name the stages and work kinds: one definition).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from rospr_harness.schema import RunTime, StageSeconds, WorkSeconds

STAGES = tuple(StageSeconds.model_fields)  # setup, prepare, executor, load, cache, tokenise, select, wait, write
WORK = tuple(WorkSeconds.model_fields)  # retrieval, var, scoring, model


def process_started() -> float | None:
    """The wall-clock time (epoch seconds) at which this process started, from ``/proc`` (Linux), so
    a run can say how long the interpreter and its imports took before it; None where unknown."""
    try:
        stat = Path("/proc/self/stat").read_text()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        # field 22 (starttime, clock ticks after boot); the command name (field 2) may hold spaces
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class Stages:
    """Seconds per driver stage (``STAGES``) and per executor work kind (``WORK``); see the module
    docstring. ``started``: when the run began (epoch seconds, the run's ``Clock``)."""

    def __init__(self, started: float | None = None) -> None:
        self.started = time.time() if started is None else started
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.work = dict.fromkeys(WORK, 0.0)
        self.batches = {"var": 0, "scoring": 0}
        self.examples = 0  # rows of ``scoring`` batches (the scorer's own rate is examples / scoring)
        self.first_batch: float | None = None  # epoch seconds when the first scored batch came back
        self._stack: list[list] = []  # [name, perf_counter at (re)start] of the stages entered

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        """Charge the time inside the block to stage ``name`` (an enclosing stage pauses meanwhile).
        Refuses (``KeyError``) a name not in ``STAGES``."""
        self.seconds[name] += 0.0  # KeyError for an unknown stage, before anything is timed
        now = time.perf_counter()
        if self._stack:
            outer = self._stack[-1]
            self.seconds[outer[0]] += now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            now = time.perf_counter()
            _, since = self._stack.pop()
            self.seconds[name] += now - since
            if self._stack:
                self._stack[-1][1] = now

    def worked(self, kind: str, seconds: float, model_s: float = 0.0, rows: int = 0) -> None:
        """Add a worker's report: ``kind`` (retrieval, var, scoring), its seconds and the scorer's share."""
        self.work[kind] += max(seconds, 0.0)
        self.work["model"] += max(model_s, 0.0)
        if kind in self.batches:
            self.batches[kind] += 1
            if self.first_batch is None:
                self.first_batch = time.time()
        if kind == "scoring":
            self.examples += rows

    def summary(self, scorers: int = 1, until: float | None = None) -> RunTime:
        """The ``time`` object of ``execution``: ``wall_s`` (run start to ``until``, default now),
        ``stages_s`` (driver stages) and ``other_s`` (the rest of the wall time: plan, run directory,
        driver loop), ``work_s`` (executor work), ``model_share`` (model / (wall x scorers)),
        ``scoring_examples``, ``batches``, ``startup_s`` (process start to run start: interpreter and
        imports) and ``first_batch_s`` (process start to the first scored batch back; None before)."""
        wall = max((until or time.time()) - self.started, 0.0)
        stages = {k: round(v, 4) for k, v in self.seconds.items()}
        born = process_started()
        return RunTime.model_validate({
            "wall_s": round(wall, 4),
            "scorers": max(scorers, 1),
            "stages_s": stages,
            "other_s": round(max(wall - sum(self.seconds.values()), 0.0), 4),
            "work_s": {k: round(v, 4) for k, v in self.work.items()},
            "model_share": round(self.work["model"] / (wall * max(scorers, 1)), 4) if wall > 0 else None,
            "scoring_examples": self.examples,
            "batches": dict(self.batches),
            "startup_s": round(self.started - born, 3) if born is not None else None,
            "first_batch_s": round(self.first_batch - born, 3) if born is not None and self.first_batch else None,
        })
