"""The driver: each (task, prompt) target of a run is one coroutine, and each unit is written as soon
as it is finished.

``drive(run)`` streams the targets of ``run`` (a ``DriveSettings``) on an event loop: they are started
in plan order, at most ``Limits.max_active`` at once (their rows are in memory), and the first error
ends the run. Every target shares one ``Context``: the executor, the stores (the executor's store of
soft prompts, ``BankHandles``; the run directory and the unit cache behind one ``UnitSink``) and the
limits. A target's units are the methods of the config, and ``run_target(ctx, target)`` does its
work from top to bottom:

1. **load**: the target's rows, rendered with its template (``TargetSpec.load``);
2. **cache**: a unit found in the unit cache is written at once and needs nothing more (``UnitSink.reuse``);
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
9. **score** every example with it, then **write** the unit (``UnitSink.add``: the run directory, then
   the unit cache). Methods of one target that chose the same prompt (the same bank prompt ids and
   weights, so the same tensor; or none, as t0) share one scoring pass (``Loaded.scored``), and
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
from typing import Any, Awaitable, Callable, Coroutine

import numpy as np

from rospr_harness.backends import Backend
from rospr_harness.cache import UnitCache
from rospr_harness.config import RunConfig
from rospr_harness.method.prepare import RosprContext
from rospr_harness.method.unit import decide, retrieval_queries, var_candidates
from rospr_harness.runner.executor import Executor, RetrievalRequest
from rospr_harness.runner.plan import TargetSpec
from rospr_harness.runner.rundir import RunDirectory, records_path
from rospr_harness.runner.sink import Observer, UnitKeys, UnitSink
from rospr_harness.runner.stages import Stages
from rospr_harness.schema import Execution, Provenance, Record, ResultsFile, RetrievalLog, UnitResult, records_text
from rospr.data import Example, UnitData
from rospr.retrieval import Hits
from rospr.scoring import Convention, EncodedExample, encode_examples, plan_batches, rank_classify
from rospr.selection import T0, Candidate, Method, frequency_table

log = logging.getLogger(__name__)

BANK_HANDLES = 64  # bank prompts kept in the executor's store at once (least recently used dropped)


@dataclass(frozen=True)
class DriveSettings:
    """What ``drive`` runs: the ``todo`` methods (plan order -> methods) of the targets ``specs``, into
    ``rundir`` (results.json stamped with ``stamp()``, its ``execution`` built on ``execution``), with
    ``backend`` (its tokenizer and identity), RoSPr's bank and library (``rospr``; None when no unit
    retrieves), ``executor`` (None: nothing to compute), the unit ``cache`` (None: disabled) and
    ``observer``; ``stages`` counts where the time went."""

    config: RunConfig
    specs: list[TargetSpec]
    todo: dict[int, list[Method]]
    rundir: RunDirectory
    backend: Backend
    rospr: RosprContext | None
    executor: Executor | None
    cache: UnitCache | None
    observer: Observer
    stamp: Callable[[], Provenance]
    execution: Execution
    stages: Stages = field(default_factory=Stages)


def drive(run: DriveSettings) -> ResultsFile:
    """The drive step: stream the ``todo`` methods of every target through the executor, writing
    results.json after every computed unit and once at the end, whatever happens; the executor is
    closed. ``run.stages``' summary is ``execution.time``. Returns the final results."""
    stages, execution = run.stages, run.execution
    run.observer.start(sum(len(v) for v in run.todo.values()))
    try:
        if run.executor is not None:
            sink = UnitSink(run.rundir, run.cache, None, run.observer, stages, run.stamp, run.execution)
            t_driver = time.time()
            try:
                targets = [Target(spec, tuple(run.todo[spec.order])) for spec in run.specs if run.todo.get(spec.order)]
                with stages.timing("wait"):  # the stages run inside the loop pause it (Stages.timing)
                    run_loop(run_all(run, sink, targets))
            finally:  # driver_s: the streaming itself (actors started, bank and library ready)
                execution = execution.updated(**sink.counts, driver_s=round(time.time() - t_driver, 3))
    finally:
        if run.executor is not None:
            execution = execution.updated(**run.executor.stats())
            run.executor.close()
        execution = execution.updated(time=stages.summary(scorers=int(execution.scorers or 1)))
        final = run.rundir.write(run.stamp(), execution)
    return final


@dataclass(frozen=True)
class Limits:
    """How much the driver keeps out at once: scoring batches awaited (``max_in_flight``, backpressure),
    targets loaded (``max_active``: their rows are in memory) and targets per retrieval call."""

    max_in_flight: int = 1
    max_active: int = 2
    retrieval_group: int = 16

    @classmethod
    def of(cls, config: RunConfig, executor: Executor) -> "Limits":
        """The executor's ``max_in_flight``; in process two targets at once, on Ray ``ray.max_active_units``
        (default twice the batches in flight)."""
        in_flight = executor.max_in_flight
        active = 2 if executor.name == "in_process" else (config.ray.max_active_units or 2 * in_flight)
        return cls(in_flight, active, config.ray.retrieval_group)


@dataclass(frozen=True)
class Context:
    """What every target of a run shares: the executor and its store of soft prompts (``prompts``),
    the run directory and unit cache (``sink``), the limits (with ``in_flight``, the semaphore of
    ``max_in_flight``, and the grouped ``retrievals``), and what a target reads: the run's config (its
    scoring settings and seed), the tokenizer and convention, RoSPr's bank and library (``rospr``)."""

    executor: Executor
    prompts: BankHandles
    sink: UnitSink
    limits: Limits
    in_flight: asyncio.Semaphore
    retrievals: RetrievalGroups
    config: RunConfig
    tokenizer: Any
    convention: Convention
    rospr: RosprContext | None
    stages: Stages
    observer: Observer


async def run_all(run: DriveSettings, sink: UnitSink, targets: list[Target]) -> None:
    """``targets`` in plan order over one ``Context``, at most ``max_active`` at once; the first error
    cancels the others. The unit cache's keys are computed here, once (the ``cache`` stage)."""
    if run.cache is not None:
        with run.stages.timing("cache"):
            sink.keys = UnitKeys.of(run.config, run.backend, run.rospr)
    limits = Limits.of(run.config, run.executor)
    ctx = Context(executor=run.executor, prompts=BankHandles(run.executor, run.rospr), sink=sink, limits=limits,
                  in_flight=asyncio.Semaphore(limits.max_in_flight),
                  retrievals=RetrievalGroups(run.executor, limits.retrieval_group, run.stages), config=run.config,
                  tokenizer=run.backend.tokenizer, convention=run.config.scoring.convention(), rospr=run.rospr,
                  stages=run.stages, observer=run.observer)
    active = asyncio.Semaphore(limits.max_active)

    async def admitted(target: Target) -> None:
        async with active:
            await run_target(ctx, target)

    await together(*(admitted(target) for target in targets))


@dataclass(frozen=True)
class Prompt:
    """The soft prompt a unit is scored with: its store ``handle`` (None: no prompt) and ``key``, what
    makes the tensor (the bank prompt ids and their weights; None for no prompt)."""

    handle: Any
    key: tuple | None


NO_PROMPT = Prompt(None, None)


@dataclass(frozen=True)
class Target:
    """One (task, prompt) of the plan and the methods to compute for it."""

    spec: TargetSpec
    methods: tuple[Method, ...]


@dataclass
class Loaded:
    """A target while its units are computed: its rows as loaded and, once encoded, as the scorer
    reads them; ``started``: when it was admitted (a unit's ``wall_s`` counts from then)."""

    spec: TargetSpec
    data: UnitData
    started: float
    encoded: list[EncodedExample] = field(default_factory=list)
    # one scoring pass per prompt: (prompt ids, weights) of the selection, None for no prompt
    scored: dict[tuple | None, asyncio.Future] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.spec.task_name} / {self.spec.prompt}"


async def run_target(ctx: Context, target: Target) -> None:
    """One (task, prompt) from top to bottom (the steps of the module docstring); returns when every
    unit of ``target.methods`` is written."""
    started = time.time()
    with ctx.stages.timing("load"):
        t = Loaded(target.spec, target.spec.load(), started)
    if not t.data.examples:
        log.warning("%s: no example applies (%d skipped)", t.name, t.data.skipped)
    methods = [m for m in target.methods if not ctx.sink.reuse(t.spec, t.data, m)]  # a cached unit is written now
    if not methods:
        return
    with ctx.stages.timing("tokenise"):
        t.encoded = encode_examples(ctx.tokenizer, t.data.examples, ctx.convention)
    rospr = [m for m in methods if m.retrieve]
    async with Spawned() as units:  # each unit scored and written as a task of its own, awaited here
        if T0 in methods:
            units.start(score_unit(ctx, t, T0, NO_PROMPT, None))  # alongside the retrieval
        if not rospr:
            return
        if not t.data.examples:  # nothing to retrieve for: the units are written empty
            for method in rospr:
                units.start(score_unit(ctx, t, method, NO_PROMPT, None))
            return
        with ctx.stages.timing("select"):
            queries, exclude = retrieval_queries(ctx.rospr, ctx.config.seed, t.spec.task_name, t.spec.prompt,
                                                 t.data.examples)
        hits = await ctx.retrievals.hits(RetrievalRequest(tuple(queries), ctx.rospr.rc.top_n, tuple(exclude)))
        with ctx.stages.timing("select"):
            table = frequency_table(hits.hits, ctx.rospr.rc.votes) if queries else []
        mixes: dict[tuple, Any] = {}  # an INTER mix is put once per target, whichever methods choose it
        for method in [m for m in rospr if not (m.var and table)]:  # no VAR needed: scored at once
            prompt, retrieval = select(ctx, method, queries, hits, table, {}, mixes)
            units.start(score_unit(ctx, t, method, prompt, retrieval))
        var_methods = [m for m in rospr if m.var and table]
        if var_methods:
            predictions = await var_predictions(ctx, queries, table)
            for method in var_methods:
                prompt, retrieval = select(ctx, method, queries, hits, table, predictions, mixes)
                units.start(score_unit(ctx, t, method, prompt, retrieval))


# -- the steps of a target, in the order run_target takes them -----------------------------------
async def var_predictions(ctx: Context, queries: list[Example], table: list[Candidate]) -> dict[str, list[int]]:
    """VAR's evidence: each candidate's predicted choice on each query (candidates scored at once)."""
    with ctx.stages.timing("select"):
        candidates = var_candidates(ctx.rospr, table)
    with ctx.stages.timing("tokenise"):
        encoded = encode_examples(ctx.tokenizer, queries, ctx.convention)
    # bucket=True: the queries' batches do not depend on scoring.bucket
    scores = await together(*(score_rows(ctx, encoded, ctx.prompts.get(c.prompt_id), "var", bucket=True)
                              for c in candidates))
    with ctx.stages.timing("select"):
        return {c.prompt_id: [rank_classify(s, e, ctx.convention) for s, e in zip(sc, encoded)]
                for c, sc in zip(candidates, scores)}


def select(ctx: Context, method: Method, queries: list[Example], hits: Hits, table: list[Candidate],
           predictions: dict[str, list[int]], mixes: dict[tuple, Any]) -> tuple[Prompt, RetrievalLog]:
    """``method``'s prompt (store handle and key) and its retrieval log; an INTER mix is put into the
    executor's store once per target (``mixes``)."""
    with ctx.stages.timing("select"):
        sel, values, retrieval = decide(ctx.rospr, method, queries, hits, table, predictions)
    if not sel.prompt_ids:
        return NO_PROMPT, retrieval
    key = (tuple(sel.prompt_ids), tuple(sel.weights))
    if len(sel.prompt_ids) == 1:
        return Prompt(ctx.prompts.get(sel.prompt_ids[0]), key), retrieval
    if key not in mixes:
        mixes[key] = ctx.executor.put(values)
    return Prompt(mixes[key], key), retrieval


async def score_unit(ctx: Context, t: Loaded, method: Method, prompt: Prompt, retrieval: RetrievalLog | None) -> None:
    """Score every example of ``t`` with ``prompt``, once per prompt of the target (a second method
    with the same prompt awaits the same pass), then write the unit (``UnitSink.add``)."""
    if prompt.key not in t.scored:
        t.scored[prompt.key] = asyncio.ensure_future(score_rows(ctx, t.encoded, prompt.handle, "scoring"))
    scores = await t.scored[prompt.key]
    with ctx.stages.timing("write"):
        records = build_records(t.data.examples, t.encoded, scores, ctx.convention)
        # n and accuracy: set from the records text by RunDirectory.add (one derivation of every figure)
        unit = UnitResult(task=t.spec.task_name, prompt=t.spec.prompt, method=method.name, n=len(records),
                          accuracy=None, skipped=t.data.skipped, skipped_reasons=dict(t.data.skip_reasons),
                          truncated=sum(e.truncated for e in t.encoded),
                          records=records_path(t.spec.task_name, t.spec.prompt, method.name),
                          content_hash=t.data.content_hash, wall_s=time.time() - t.started, retrieval=retrieval)
        ctx.sink.add(t.spec, t.data, method, unit, records_text(records, f"{t.name} / {method.name}"))


# -- scoring -------------------------------------------------------------------------------------
async def score_rows(ctx: Context, rows: list[EncodedExample], prompt: Any, kind: str,
                     bucket: bool | None = None) -> list[np.ndarray]:
    """The choice scores of ``rows`` with ``prompt``, in row order: the ``plan_batches`` batches of
    these rows alone (``bucket``: None for ``scoring.bucket``), awaited together. ``kind``: where
    the workers' seconds count (``scoring``, or ``var`` for VAR's queries)."""
    if not rows:
        return []
    sc = ctx.config.scoring
    batches = plan_batches(rows, sc.batch_size, sc.bucket if bucket is None else bucket, sc.batch_tokens)
    parts = await together(*(score_batch(ctx, [rows[i] for i in idx], prompt, kind) for idx in batches))
    scores: list = [None] * len(rows)
    for idx, part in zip(batches, parts):
        for i, s in zip(idx, part):
            scores[i] = s
    return scores


async def score_batch(ctx: Context, rows: list[EncodedExample], prompt: Any, kind: str) -> list[np.ndarray]:
    """One batch through the executor, once fewer than ``max_in_flight`` are out."""
    async with ctx.in_flight:
        done = await ctx.executor.score(rows, prompt)
    ctx.stages.worked(kind, done.seconds, done.model_s, len(rows))
    if len(done.value) != len(rows):
        raise RuntimeError(f"a scoring batch of {len(rows)} rows came back with {len(done.value)} results")
    ctx.observer.advance(len(rows))
    return done.value


class BankHandles:
    """Bank prompts in the executor's store: each put once, kept while recently used (at most
    ``BANK_HANDLES``; batches in flight keep their own reference to one dropped)."""

    def __init__(self, executor: Executor, rospr: RosprContext | None) -> None:
        self.executor, self.rospr = executor, rospr
        self.handles: OrderedDict[str, Any] = OrderedDict()

    def get(self, prompt_id: str) -> Any:
        """The store handle of bank prompt ``prompt_id``."""
        if prompt_id in self.handles:
            self.handles.move_to_end(prompt_id)
        else:
            self.handles[prompt_id] = self.executor.put(self.rospr.bank.get(prompt_id).values)
            if len(self.handles) > BANK_HANDLES:
                self.handles.popitem(last=False)
        return self.handles[prompt_id]


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
