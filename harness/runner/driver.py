"""The driver: each (task, prompt) target of a run is one coroutine, and each unit is written as soon
as it is finished.

``drive`` runs ``Driver.run_all`` on an event loop: the targets are started in plan order, at most
``max_active`` at once (their rows are in memory), and the first error ends the run. A target's
units are the methods of the config, and ``Driver.run_target`` does its work from top to bottom:

1. **load**: the target's rows, rendered with its template (``TargetSpec.load``);
2. **cache**: a unit found in the unit cache is written at once and needs nothing more;
3. **encode**: the rows tokenised;
4. **t0**, alongside all that follows: every example scored without a soft prompt, then written;
5. **retrieve**: the Q queries (``retrieval_queries``) go to the retrieval worker, together with
   those of the other targets that ask in the same turn of the loop (``retrieval_group`` a call);
6. **frequency table** of the hits;
7. **VAR** (only when a +var method is asked): the queries scored with each candidate, while the
   methods that need no VAR are already being scored;
8. **select and mix** per method (``rospr_harness.method.unit.decide``), in the driver, where the bank
   is; the prompt is put in the executor's store once (a bank prompt once per run while recently
   used, an INTER mix once per target);
9. **score** every example with it, then **write** the unit (``RunDirectory.add``) and store it in
   the unit cache. Methods of one target that chose the same prompt (the same bank prompt ids and
   weights, so the same tensor; or none, as t0) share one scoring pass (``Target.scored``), and
   each still writes its own unit.

Scoring: a unit's rows are cut into length-bucketed batches by ``plan_batches`` on that unit's rows
alone, so a batch never depends on the executor, the number of actors or the other targets. At
most ``max_in_flight`` batches are awaited at once (backpressure); their scores come back in any
order and are put back in row order.

Time: each synchronous step is charged to a stage of ``rospr_harness.runner.stages.Stages`` (load,
cache, tokenise, select, write); the event loop's own time, less those stages, is ``wait`` (blocked
on the executor; in process, the work itself). Each awaited call adds the worker's own seconds
(retrieval, VAR, scoring, and the scorer's share), whichever executor ran it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Coroutine, Protocol

import numpy as np

from rospr_harness.backends import Backend
from rospr_harness.cache import UnitCache, key_parts, rospr_part, scorer_part, unit_key
from rospr_harness.config import RunConfig, retriever_name
from rospr_harness.method.prepare import RosprContext
from rospr_harness.method.unit import decide, retrieval_queries, var_candidates
from rospr_harness.results import Execution, Record, ResultsFile, RetrievalLog, UnitResult, records_text, spread_fields
from rospr_harness.runner.executor import Executor, RetrievalRequest
from rospr_harness.runner.plan import TargetSpec
from rospr_harness.runner.rundir import RunDirectory, records_path
from rospr_harness.runner.stages import Stages
from rospr.artifacts import FileRef
from rospr.data import Example, UnitData
from rospr.retrieval import Hits
from rospr.scoring import EncodedExample, encode_examples, plan_batches, rank_classify
from rospr.selection import T0, Candidate, Method, frequency_table

log = logging.getLogger(__name__)

BANK_HANDLES = 64  # bank prompts kept in the executor's store at once (least recently used dropped)


class Observer(Protocol):
    """Progress callbacks (the CLI draws a rich progress bar from them)."""

    def start(self, total_units: int) -> None: ...
    def advance(self, n: int) -> None: ...  # n more examples scored
    def unit_done(self, unit: UnitResult) -> None: ...


class Silent:
    def start(self, total_units: int) -> None: ...
    def advance(self, n: int) -> None: ...
    def unit_done(self, unit: UnitResult) -> None: ...


def drive(config: RunConfig, specs: list[TargetSpec], todo: dict[int, list[Method]], rundir: RunDirectory,
          backend: Backend, ctx: RosprContext | None, executor: Executor | None, observer: Observer,
          cache: UnitCache | None, stamp: Callable[[], Any], execution: Execution,
          stages: Stages | None = None) -> ResultsFile:
    """The drive step: stream the ``todo`` methods of every target through ``executor`` (None:
    nothing to compute), writing results.json (``stamp()``: the provenance) after every computed unit
    and once at the end, whatever happens; the executor is closed. ``stages`` (default: from now) counts
    where the time went; its summary is ``execution.time``. Returns the final results."""
    stages = stages or Stages()
    remaining = sum(len(v) for v in todo.values())
    observer.start(remaining)
    try:
        if executor is not None:
            in_flight = executor.max_in_flight
            max_active = 2 if executor.name == "in_process" else (config.ray.max_active_units or 2 * in_flight)
            driver = Driver(config, specs, todo, rundir, backend, ctx, executor, observer, cache,
                            max_in_flight=in_flight, max_active=max_active, retrieval_group=config.ray.retrieval_group,
                            on_write=lambda: rundir.write(stamp(), execution.updated(**driver.counts)), stages=stages)
            t_driver = time.time()
            try:
                driver.run()
            finally:  # driver_s: the streaming itself (actors started, bank and library ready)
                execution = execution.updated(**driver.counts, driver_s=round(time.time() - t_driver, 3))
    finally:
        if executor is not None:
            execution = execution.updated(**executor.stats())
            executor.close()
        execution = execution.updated(time=stages.summary(scorers=int(execution.scorers or 1)))
        final = rundir.write(stamp(), execution)
    return final


@dataclass(frozen=True)
class Prompt:
    """The soft prompt a unit is scored with: its store ``handle`` (None: no prompt) and ``key``, what
    makes the tensor (the bank prompt ids and their weights; None for no prompt)."""

    handle: Any
    key: tuple | None


NO_PROMPT = Prompt(None, None)


@dataclass
class Target:
    """One (task, prompt) while its units are computed: its rows as loaded and, once encoded, as the
    scorer reads them; ``started``: when it was admitted (a unit's ``wall_s`` counts from then)."""

    spec: TargetSpec
    data: UnitData
    started: float
    encoded: list[EncodedExample] = field(default_factory=list)
    # one scoring pass per prompt: (prompt ids, weights) of the selection, None for no prompt
    scored: dict[tuple | None, asyncio.Future] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.spec.task_name} / {self.spec.prompt}"


class Driver:
    """Streams the targets of a run through an executor (see the module docstring)."""

    def __init__(self, config: RunConfig, specs: list[TargetSpec], todo: dict[int, list[Method]], rundir: RunDirectory,
                 backend: Backend, ctx: RosprContext | None, executor: Executor, observer: Observer,
                 cache: UnitCache | None = None,
                 max_in_flight: int = 1, max_active: int = 2, retrieval_group: int = 16,
                 on_write: Callable[[], None] | None = None, stages: Stages | None = None) -> None:
        self.config, self.rundir, self.backend, self.ctx = config, rundir, backend, ctx
        self.stages = stages or Stages()
        self.executor, self.observer, self.cache = executor, observer, cache
        self.tokenizer = backend.tokenizer
        self.conv = config.scoring.convention()
        self.max_in_flight, self.max_active, self.retrieval_group = max_in_flight, max_active, retrieval_group
        self.on_write = on_write or (lambda: None)
        self.todo = [(spec, todo[spec.order]) for spec in specs if todo.get(spec.order)]
        self.bank_handles: OrderedDict[str, Any] = OrderedDict()
        self.counts = {"computed": 0, "cached": 0}
        self._scorer_part: dict | None = None
        self._rospr_part: dict | None = None

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> None:
        """Every target, on an event loop of the driver's own; the first error is raised as it was."""
        with self.stages.timing("wait"):  # the stages run inside the loop pause it (Stages.timing)
            run_loop(self.run_all())

    async def run_all(self) -> None:
        """The targets in plan order, at most ``max_active`` at once; the first error cancels the others."""
        active = asyncio.Semaphore(self.max_active)
        self.in_flight = asyncio.Semaphore(self.max_in_flight)
        self.retrievals = RetrievalGroups(self.executor, self.retrieval_group, self.stages)

        async def admitted(spec: TargetSpec, methods: list[Method]) -> None:
            async with active:
                await self.run_target(spec, methods)

        await together(*(admitted(spec, methods) for spec, methods in self.todo))

    async def run_target(self, spec: TargetSpec, methods: list[Method]) -> None:
        """One (task, prompt) from top to bottom (the steps of the module docstring); returns when
        every unit of ``methods`` is written."""
        started = time.time()
        with self.stages.timing("load"):
            target = Target(spec, spec.load(), started)
        if not target.data.examples:
            log.warning("%s: no example applies (%d skipped)", target.name, target.data.skipped)
        methods = [m for m in methods if not self.reuse_cached(target, m)]  # a cached unit is written now
        if not methods:
            return
        with self.stages.timing("tokenise"):
            target.encoded = encode_examples(self.tokenizer, target.data.examples, self.conv)
        rospr = [m for m in methods if m.retrieve]
        async with Spawned() as units:  # each unit scored and written as a task of its own, awaited here
            if T0 in methods:
                units.start(self.score_unit(target, T0, NO_PROMPT, None))  # alongside the retrieval
            if not rospr:
                return
            if not target.data.examples:  # nothing to retrieve for: the units are written empty
                for method in rospr:
                    units.start(self.score_unit(target, method, NO_PROMPT, None))
                return
            with self.stages.timing("select"):
                queries, exclude = retrieval_queries(self.ctx, self.config.seed, spec.task_name, spec.prompt,
                                                     target.data.examples)
            hits = await self.retrievals.hits(RetrievalRequest(tuple(queries), self.ctx.rc.top_n, tuple(exclude)))
            with self.stages.timing("select"):
                table = frequency_table(hits.hits, self.ctx.rc.votes) if queries else []
            mixes: dict[tuple, Any] = {}  # an INTER mix is put once per target, whichever methods choose it
            for method in [m for m in rospr if not (m.var and table)]:  # no VAR needed: scored at once
                handle, retrieval = self.select(method, queries, hits, table, {}, mixes)
                units.start(self.score_unit(target, method, handle, retrieval))
            var_methods = [m for m in rospr if m.var and table]
            if var_methods:
                predictions = await self.var_predictions(queries, table)
                for method in var_methods:
                    handle, retrieval = self.select(method, queries, hits, table, predictions, mixes)
                    units.start(self.score_unit(target, method, handle, retrieval))

    # -- the steps of a target, in the order run_target takes them -------------------------------
    def reuse_cached(self, target: Target, method: Method) -> bool:
        """Write ``method``'s unit from the unit cache if it holds it (its records verified there, its
        figures taken from them by ``RunDirectory.add``). False when not cached."""
        if self.cache is None:
            return False
        with self.stages.timing("cache"):
            hit = self.cache.get(unit_key(self.key_parts(target, method))) if target.data.content_hash else None
        if hit is None:
            return False
        with self.stages.timing("write"):
            f = hit.fields
            # n and accuracy from the verified records (RunDirectory.add), never from the entry's metadata
            unit = UnitResult(task=target.spec.task_name, prompt=target.spec.prompt, method=method.name, n=0,
                              accuracy=None, skipped=f.get("skipped", 0),
                              skipped_reasons=f.get("skipped_reasons") or {}, truncated=f.get("truncated", 0),
                              records=records_path(target.spec.task_name, target.spec.prompt, method.name),
                              content_hash=f.get("content_hash", ""), wall_s=0.0, retrieval=f.get("retrieval"),
                              cached=True)
            # debug: the observer prints each unit already ("reused from cache"); an INFO line more cost ~8 ms a unit
            log.debug("%s / %s: reused from the unit cache (%s)", target.name, method.name, hit.key[:12])
            self.write_unit(target, method, unit, hit.records.decode("utf-8"), cached=True, known=f.get("figures"),
                            source=hit.source)
        return True

    async def var_predictions(self, queries: list[Example], table: list[Candidate]) -> dict[str, list[int]]:
        """VAR's evidence: each candidate's predicted choice on each query (candidates scored at once)."""
        with self.stages.timing("select"):
            candidates = var_candidates(self.ctx, table)
        with self.stages.timing("tokenise"):
            encoded = encode_examples(self.tokenizer, queries, self.conv)
        # bucket=True: the queries' batches do not depend on scoring.bucket
        scores = await together(*(self.score_rows(encoded, self.bank_handle(c.prompt_id), "var", bucket=True)
                                  for c in candidates))
        with self.stages.timing("select"):
            return {c.prompt_id: [rank_classify(s, e, self.conv) for s, e in zip(sc, encoded)]
                    for c, sc in zip(candidates, scores)}

    def select(self, method: Method, queries: list[Example], hits: Hits, table: list[Candidate],
               predictions: dict[str, list[int]], mixes: dict[tuple, Any]) -> tuple[Prompt, RetrievalLog]:
        """``method``'s prompt (store handle and key) and its retrieval log."""
        with self.stages.timing("select"):
            sel, values, retrieval = decide(self.ctx, method, queries, hits, table, predictions)
        if not sel.prompt_ids:
            return NO_PROMPT, retrieval
        key = (tuple(sel.prompt_ids), tuple(sel.weights))
        if len(sel.prompt_ids) == 1:
            return Prompt(self.bank_handle(sel.prompt_ids[0]), key), retrieval
        if key not in mixes:
            mixes[key] = self.executor.put(values)
        return Prompt(mixes[key], key), retrieval

    def bank_handle(self, prompt_id: str) -> Any:
        """The store handle of a bank prompt: put once, kept while recently used."""
        if prompt_id in self.bank_handles:
            self.bank_handles.move_to_end(prompt_id)
        else:
            self.bank_handles[prompt_id] = self.executor.put(self.ctx.bank.get(prompt_id).values)
            if len(self.bank_handles) > BANK_HANDLES:
                self.bank_handles.popitem(last=False)  # batches in flight keep their own reference
        return self.bank_handles[prompt_id]

    async def score_unit(self, target: Target, method: Method, prompt: Prompt,
                         retrieval: RetrievalLog | None) -> None:
        """Score every example of ``target`` with ``prompt``, once per prompt of the target (a second
        method with the same prompt awaits the same pass), then write the unit."""
        if prompt.key not in target.scored:
            target.scored[prompt.key] = asyncio.ensure_future(self.score_rows(target.encoded, prompt.handle, "scoring"))
        scores = await target.scored[prompt.key]
        with self.stages.timing("write"):
            records = build_records(target.data.examples, target.encoded, scores, self.conv)
            # n and accuracy: set from the records text by RunDirectory.add (one derivation of every figure)
            unit = UnitResult(task=target.spec.task_name, prompt=target.spec.prompt, method=method.name,
                              n=len(records), accuracy=None, skipped=target.data.skipped,
                              skipped_reasons=dict(target.data.skip_reasons),
                              truncated=sum(e.truncated for e in target.encoded),
                              records=records_path(target.spec.task_name, target.spec.prompt, method.name),
                              content_hash=target.data.content_hash, wall_s=time.time() - target.started,
                              retrieval=retrieval)
            self.write_unit(target, method, unit, records_text(records, f"{target.name} / {method.name}"))

    # -- scoring ---------------------------------------------------------------------------------
    async def score_rows(self, rows: list[EncodedExample], prompt: Any, kind: str,
                         bucket: bool | None = None) -> list[np.ndarray]:
        """The choice scores of ``rows`` with ``prompt``, in row order: the ``plan_batches`` batches of
        these rows alone (``bucket``: None for ``scoring.bucket``), awaited together. ``kind``: where
        the workers' seconds count (``scoring``, or ``var`` for VAR's queries)."""
        if not rows:
            return []
        sc = self.config.scoring
        batches = plan_batches(rows, sc.batch_size, sc.bucket if bucket is None else bucket, sc.batch_tokens)
        parts = await together(*(self.score_batch([rows[i] for i in idx], prompt, kind) for idx in batches))
        scores: list = [None] * len(rows)
        for idx, part in zip(batches, parts):
            for i, s in zip(idx, part):
                scores[i] = s
        return scores

    async def score_batch(self, rows: list[EncodedExample], prompt: Any, kind: str) -> list[np.ndarray]:
        """One batch through the executor, once fewer than ``max_in_flight`` are out."""
        async with self.in_flight:
            done = await self.executor.score(rows, prompt)
        self.stages.worked(kind, done.seconds, done.model_s, len(rows))
        if len(done.value) != len(rows):
            raise RuntimeError(f"a scoring batch of {len(rows)} rows came back with {len(done.value)} results")
        self.observer.advance(len(rows))
        return done.value

    # -- writing and the unit cache ----------------------------------------------------------------
    def write_unit(self, target: Target, method: Method, unit: UnitResult, text: str, cached: bool = False,
                   known: dict | None = None, source: FileRef | None = None) -> None:
        unit = self.rundir.add(unit, text, known, source)
        self.counts["cached" if cached else "computed"] += 1
        if self.cache is not None and not cached and target.data.content_hash:
            with self.stages.timing("cache"):
                self._store(target, method, unit, text)
        if not cached:  # results.json after each computed unit; a cached one costs nothing to redo (and rewriting
            self.on_write()  # the whole file after each of them made a fully cached run quadratic in its units)
        self.observer.unit_done(unit)

    def _store(self, target: Target, method: Method, unit: UnitResult, text: str) -> None:
        """Put a computed unit into the unit cache (a cache that cannot be written is dropped)."""
        parts = self.key_parts(target, method)
        # n and accuracy are stored for people reading the entry; a reuse takes them from the records
        fields = unit.model_dump(include={"n", "accuracy", "skipped", "skipped_reasons", "truncated", "content_hash",
                                          "wall_s", "retrieval"})
        fields["figures"] = spread_fields(unit)  # its bootstrap, not drawn again on reuse if the records agree
        try:
            self.cache.put(unit_key(parts), parts, text.encode("utf-8"), fields)
        except OSError as exc:  # the unit cache is optional: a run goes on without it
            log.warning("unit cache %s: cannot be written (%s); the run goes on without caching its units "
                        "(free space there, or set cache.dir / ROSPR_UNIT_CACHE)",
                        exc.filename or self.cache.root, exc.strerror or exc)
            self.cache = None

    def key_parts(self, target: Target, method: Method) -> dict:
        """What a unit's records depend on (``rospr_harness.cache.key_parts``; its parts computed once)."""
        if self._scorer_part is None:
            self._scorer_part = scorer_part(self.backend.name, dict(self.backend.identity),
                                            self.config.model.name_or_path)
        rospr = None
        if method.retrieve:
            if self._rospr_part is None:
                self._rospr_part = rospr_part(self.ctx.library, retriever_name(self.config),
                                              self.ctx.rc, self.config.seed)
            rospr = self._rospr_part
        return key_parts(self._scorer_part, target.spec.task_name, target.spec.prompt, target.data.content_hash,
                         self.conv, method, rospr)


def build_records(examples: list[Example], encoded: list[EncodedExample], scores: list[np.ndarray],
                  convention) -> list[Record]:
    """A unit's records (one per example, in row order): scores, prediction, gold and metric."""
    return [Record.of(ex, enc, sc, convention) for ex, enc, sc in zip(examples, encoded, scores)]


class RetrievalGroups:
    """Retrievals asked in one turn of the event loop go to the executor together, at most ``size``
    a call (a unit's hits never depend on the units it shares a call with: ``RetrievalWorker``)."""

    def __init__(self, executor: Executor, size: int, stages: Stages) -> None:
        self.executor, self.size, self.stages = executor, size, stages
        self.waiting: list[tuple[RetrievalRequest, asyncio.Future]] = []
        self.calls: set[asyncio.Task] = set()  # held here: the loop keeps only weak references

    async def hits(self, request: RetrievalRequest) -> Hits:
        """The hits of one target's ``request``, retrieved with those asked in the same turn."""
        loop = asyncio.get_running_loop()
        if not self.waiting:
            loop.call_soon(self._send_waiting)  # after every target that is ready now has asked
        future = loop.create_future()
        self.waiting.append((request, future))
        return await future

    def _send_waiting(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting[: self.size], self.waiting[self.size:]
            call = asyncio.ensure_future(self._send(group))
            self.calls.add(call)
            call.add_done_callback(self.calls.discard)

    async def _send(self, group: list[tuple[RetrievalRequest, asyncio.Future]]) -> None:
        try:
            done = await self.executor.retrieve([request for request, _ in group])
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:  # each target waiting on this call raises it
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self.stages.worked("retrieval", done.seconds)
        for (_, future), hits in zip(group, done.value):
            if not future.done():  # a target cancelled meanwhile no longer waits
                future.set_result(hits)


# -- the event loop ------------------------------------------------------------------------------------
def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a new event loop; from inside a running one (a notebook), on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(main)
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rospr-driver") as pool:
        pool.submit(asyncio.run, main).result()


async def together(*aws: Awaitable) -> list:
    """The results of ``aws``, run at once; the first error cancels the others and is raised as it
    was (no ``ExceptionGroup``: callers tell our errors by their type)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()  # a no-op on those done


class Spawned:
    """Tasks started along one coroutine (``start``) and awaited when its ``async with`` block ends;
    an error in the block or in any task cancels the others and is raised as it was."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task] = []

    def start(self, work: Coroutine[Any, Any, Any]) -> None:
        self.tasks.append(asyncio.ensure_future(work))

    async def __aenter__(self) -> "Spawned":
        return self

    async def __aexit__(self, kind, exc, tb) -> None:
        try:
            if exc is None:
                await together(*self.tasks)
        finally:
            for task in self.tasks:
                task.cancel()
