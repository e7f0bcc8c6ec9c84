"""The driver: streams a run's work to an executor and writes each unit as soon as it is finished.

A target is one (task, prompt); its units are the methods of the config. For a target the driver
renders and tokenises the rows, then:

- ``t0``: scores every example without a soft prompt;
- RoSPr methods: asks for the target's retrieval (its Q queries go to the retrieval worker together
  with other targets' in one call), builds the frequency table, scores the queries with each +var
  candidate (VAR), selects and mixes (INTER) the prompt in the driver, where the bank is, puts it
  in the executor's store once, and scores every example with it.

Scoring is cut into length-bucketed batches by ``plan_batches`` on the target's own rows, so a batch
never depends on the executor, the number of actors or the other targets. At most ``max_in_flight``
batches are submitted and not yet back (backpressure), and at most ``max_active`` targets have their
rows in memory. Results come back in any order and are put back in example order per unit; a unit
whose batches are all back is written at once (``RunDirectory.add``), and stored in the unit cache.

Time: each step of the driver is charged to a stage of ``harness.runner.stages.Stages`` (load,
cache, tokenise, select, wait, write), and each result's ``Done`` adds the worker's own seconds
(retrieval, VAR, scoring, and the scorer's share), whichever executor ran it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from harness.backends import Backend
from harness.cache import UnitCache, key_parts, rospr_part, scorer_part, unit_key
from harness.config import RunConfig
from harness.method.prepare import RosprContext
from harness.method.unit import decide, retrieval_queries, var_candidates
from harness.results import ResultsFile, UnitResult
from harness.runner.executor import Done, Executor, RetrievalRequest
from harness.runner.plan import TargetSpec
from harness.runner.rundir import RunDirectory, records_path, records_text
from harness.runner.stages import Stages
from rospr.data import Example, UnitData
from rospr.retrieval import Hits
from rospr.scoring import EncodedExample, encode_examples, plan_batches, rank_classify, tied_choices
from rospr.selection import T0, Method, frequency_table

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


def build_records(examples: list[Example], encoded: list[EncodedExample], scores: list[np.ndarray],
                  convention) -> list[dict]:
    """A unit's records (one per example, in row order): scores, prediction, gold and metric."""
    records = []
    for ex, enc, sc in zip(examples, encoded, scores):
        pred = rank_classify(sc, enc, convention)
        tied = tied_choices(sc, enc, convention)  # a tie earns the mean of its choices' values
        records.append({
            "index": ex.index,
            "input": ex.input_text,
            "choices": list(ex.choices),
            "scores": [float(x) for x in sc],
            "prediction": pred,
            "gold": ex.label,
            "target_scores": list(ex.target_scores) if ex.target_scores is not None else None,
            "tied": tied if len(tied) > 1 else None,
            "score": ex.credit(tied) if len(tied) > 1 else ex.score_of(pred),
        })
    return records


@dataclass
class ScoreJob:
    """Rows scored with one prompt handle, cut into batches; ``on_done`` gets the scores in row order."""

    rows: list[EncodedExample]
    prompt: Any
    batches: list[list[int]]
    scores: list
    remaining: int
    on_done: Callable[[list[np.ndarray]], None]
    stage: str = "scoring"  # or "var": where the workers' seconds are counted


class Target:
    """The state of one (task, prompt) while its units are being computed."""

    def __init__(self, driver: "Driver", spec: TargetSpec, methods: list[Method]) -> None:
        self.d, self.spec, self.pending = driver, spec, list(methods)
        self.started = time.time()
        self.data: UnitData | None = None
        self.encoded: list[EncodedExample] = []
        self.queries: list[Example] = []
        self.hits: Hits | None = None
        self.table: list = []
        self.preds: dict[str, list[int]] = {}
        self.var_left = 0
        self.mixes: dict[tuple, Any] = {}

    @property
    def name(self) -> str:
        return f"{self.spec.task_name} / {self.spec.prompt}"

    def start(self) -> None:
        d = self.d
        with d.stages.timing("load"):
            self.data = data = self.spec.load()
        if not data.examples:
            log.warning("%s: no example applies (%d skipped)", self.name, data.skipped)
        if d.cache is not None:
            for method in list(self.pending):
                with d.stages.timing("cache"):
                    hit = d.cache_lookup(self, method)
                if hit is not None:
                    d.finish_cached(self, method, hit)
        if not self.pending:
            return
        with d.stages.timing("tokenise"):
            self.encoded = encode_examples(d.tokenizer, data.examples, d.conv)
        if T0 in self.pending:
            d.enqueue(self.encoded, None, lambda scores: self.finish(T0, scores, None))
        rospr = [m for m in self.pending if m.retrieve]
        if rospr and not data.examples:
            for method in rospr:
                self.finish(method, [], None)
        elif rospr:
            with d.stages.timing("select"):
                self.queries, exclude = retrieval_queries(d.ctx, d.config.seed, self.spec.task_name,
                                                          self.spec.prompt, data.examples)
            d.request_retrieval(self, RetrievalRequest(tuple(self.queries), d.ctx.rc.top_n, tuple(exclude)))

    def on_hits(self, hits: Hits) -> None:
        d = self.d
        self.hits = hits
        with d.stages.timing("select"):
            self.table = frequency_table(hits.hits) if self.queries else []
        rospr = [m for m in self.pending if m.retrieve]
        for method in rospr:
            if not method.var or not self.table:
                self.score_with_selection(method)
        if any(m.var for m in rospr) and self.table:
            with d.stages.timing("select"):
                candidates = var_candidates(d.ctx, self.table)
            with d.stages.timing("tokenise"):
                encoded_queries = encode_examples(d.tokenizer, self.queries, d.conv)
            self.var_left = len(candidates)
            for cand in candidates:
                # bucket=True: the queries' batches do not depend on scoring.bucket
                d.enqueue(encoded_queries, d.bank_handle(cand.prompt_id),
                          lambda scores, pid=cand.prompt_id: self.on_var(pid, scores, encoded_queries), bucket=True,
                          stage="var")

    def on_var(self, prompt_id: str, scores: list[np.ndarray], encoded_queries: list[EncodedExample]) -> None:
        with self.d.stages.timing("select"):
            self.preds[prompt_id] = [rank_classify(s, e, self.d.conv) for s, e in zip(scores, encoded_queries)]
        self.var_left -= 1
        if self.var_left == 0:
            for method in [m for m in self.pending if m.var]:
                self.score_with_selection(method)

    def score_with_selection(self, method: Method) -> None:
        d = self.d
        with d.stages.timing("select"):
            sel, values, retrieval = decide(d.ctx, method, self.queries, self.hits, self.table, self.preds)
        if not sel.prompt_ids:
            handle = None
        elif len(sel.prompt_ids) == 1:
            handle = d.bank_handle(sel.prompt_ids[0])
        else:  # a mix: stored once per target, whichever methods choose it
            key = (tuple(sel.prompt_ids), tuple(sel.weights))
            if key not in self.mixes:
                self.mixes[key] = d.executor.put(values)
            handle = self.mixes[key]
        d.enqueue(self.encoded, handle, lambda scores: self.finish(method, scores, retrieval))

    def finish(self, method: Method, scores: list[np.ndarray], retrieval: dict | None) -> None:
        with self.d.stages.timing("write"):
            self._finish(method, scores, retrieval)

    def _finish(self, method: Method, scores: list[np.ndarray], retrieval: dict | None) -> None:
        d = self.d
        data = self.data
        records = build_records(data.examples, self.encoded, scores, d.conv)
        # n and accuracy: set from the records text by RunDirectory.add (one derivation of every figure)
        unit = UnitResult(task=self.spec.task_name, prompt=self.spec.prompt, method=method.name, n=len(records),
                          accuracy=None, skipped=data.skipped, skipped_reasons=dict(data.skip_reasons),
                          truncated=sum(e.truncated for e in self.encoded),
                          records=records_path(self.spec.task_name, self.spec.prompt, method.name),
                          content_hash=data.content_hash, wall_s=time.time() - self.started, retrieval=retrieval)
        d.write_unit(self, method, unit, records_text(records, f"{self.name} / {method.name}"))

    def done_with(self, method: Method) -> None:
        self.pending.remove(method)
        if not self.pending:
            self.d.target_done(self)


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
        self.todo = deque((spec, todo[spec.order]) for spec in specs if todo.get(spec.order))
        self.active: list[Target] = []
        self.queue: deque[tuple[int, int]] = deque()  # (job id, batch index) ready to submit
        self.jobs: dict[int, ScoreJob] = {}
        self.next_id = 0
        self.waiting: list[tuple[Target, RetrievalRequest]] = []
        self.groups: dict[int, list[Target]] = {}
        self.bank_handles: OrderedDict[str, Any] = OrderedDict()
        self.counts = {"computed": 0, "cached": 0}
        self._scorer_part: dict | None = None
        self._rospr_part: dict | None = None

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        while self.todo or self.active:
            self._admit()
            self._flush_retrievals()
            self._submit()
            if self.executor.pending() == 0:
                if self.queue or self.waiting or (self.todo and len(self.active) < self.max_active):
                    continue
                if self.todo or self.active:
                    stuck = ", ".join(t.name for t in self.active[:3])
                    raise RuntimeError(f"runner stalled with nothing in flight (targets: {stuck}); this is a bug")
                break
            with self.stages.timing("wait"):
                finished = self.executor.wait()
            for tag, done in finished:
                self._route(tag, done)

    def _admit(self) -> None:
        while self.todo and len(self.active) < self.max_active and len(self.queue) < self.max_in_flight:
            spec, methods = self.todo.popleft()
            target = Target(self, spec, methods)
            self.active.append(target)
            target.start()

    def _flush_retrievals(self) -> None:
        while self.waiting:
            group, self.waiting = self.waiting[: self.retrieval_group], self.waiting[self.retrieval_group:]
            gid = self._new_id()
            self.groups[gid] = [t for t, _ in group]
            self.executor.retrieve(("retrieve", gid), [r for _, r in group])

    def _submit(self) -> None:
        while self.queue and self.executor.capacity() > 0:
            jid, bi = self.queue.popleft()
            job = self.jobs[jid]
            self.executor.score(("score", jid, bi), [job.rows[i] for i in job.batches[bi]], job.prompt)

    def _route(self, tag: tuple, done: Done) -> None:
        result = done.value
        if tag[0] == "retrieve":
            self.stages.worked("retrieval", done.seconds)
            for target, hits in zip(self.groups.pop(tag[1]), result):
                target.on_hits(hits)
            return
        _, jid, bi = tag
        job = self.jobs[jid]
        idx = job.batches[bi]
        self.stages.worked(job.stage, done.seconds, done.model_s, len(idx))
        if len(result) != len(idx):
            raise RuntimeError(f"a scoring batch of {len(idx)} rows came back with {len(result)} results")
        for i, sc in zip(idx, result):
            job.scores[i] = sc
        job.remaining -= 1
        self.observer.advance(len(idx))
        if job.remaining == 0:
            del self.jobs[jid]
            job.on_done(job.scores)

    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # -- what targets ask for ------------------------------------------------------------------------
    def enqueue(self, rows: list[EncodedExample], prompt: Any, on_done: Callable[[list[np.ndarray]], None],
                bucket: bool | None = None, stage: str = "scoring") -> None:
        """Score ``rows`` with ``prompt`` (a handle); ``on_done(scores)`` when every batch is back.
        ``stage``: where the workers' seconds count (``scoring``, or ``var`` for VAR's queries)."""
        if not rows:
            on_done([])
            return
        sc = self.config.scoring
        batches = plan_batches(rows, sc.batch_size, sc.bucket if bucket is None else bucket)
        jid = self._new_id()
        self.jobs[jid] = ScoreJob(rows, prompt, batches, [None] * len(rows), len(batches), on_done, stage)
        self.queue.extend((jid, bi) for bi in range(len(batches)))

    def request_retrieval(self, target: Target, request: RetrievalRequest) -> None:
        self.waiting.append((target, request))

    def bank_handle(self, prompt_id: str) -> Any:
        """The store handle of a bank prompt: put once, kept while recently used."""
        if prompt_id in self.bank_handles:
            self.bank_handles.move_to_end(prompt_id)
        else:
            self.bank_handles[prompt_id] = self.executor.put(self.ctx.bank.get(prompt_id).values)
            if len(self.bank_handles) > BANK_HANDLES:
                self.bank_handles.popitem(last=False)  # batches in flight keep their own reference
        return self.bank_handles[prompt_id]

    def write_unit(self, target: Target, method: Method, unit: UnitResult, text: str, cached: bool = False) -> None:
        unit = self.rundir.add(unit, text)
        self.counts["cached" if cached else "computed"] += 1
        if self.cache is not None and not cached and target.data.content_hash:
            with self.stages.timing("cache"):
                self._store(target, method, unit, text)
        self.on_write()
        self.observer.unit_done(unit)
        target.done_with(method)

    def _store(self, target: Target, method: Method, unit: UnitResult, text: str) -> None:
        """Put a computed unit into the unit cache (a cache that cannot be written is dropped)."""
        parts = self.key_parts(target, method)
        # n and accuracy are stored for people reading the entry; a reuse takes them from the records
        fields = unit.model_dump(include={"n", "accuracy", "skipped", "skipped_reasons", "truncated", "content_hash",
                                          "wall_s", "retrieval"})
        try:
            self.cache.put(unit_key(parts), parts, text.encode("utf-8"), fields)
        except OSError as exc:  # the unit cache is optional: a run goes on without it
            log.warning("unit cache %s: cannot be written (%s); the run goes on without caching its units "
                        "(free space there, or set cache.dir / ROSPR_UNIT_CACHE)",
                        exc.filename or self.cache.root, exc.strerror or exc)
            self.cache = None

    def target_done(self, target: Target) -> None:
        self.active.remove(target)

    # -- the unit cache ------------------------------------------------------------------------------
    def key_parts(self, target: Target, method: Method) -> dict:
        """What a unit's records depend on (``harness.cache.key_parts``; its parts computed once)."""
        if self._scorer_part is None:
            self._scorer_part = scorer_part(self.backend.name, dict(self.backend.identity),
                                            self.config.model.name_or_path)
        rospr = None
        if method.retrieve:
            if self._rospr_part is None:
                self._rospr_part = rospr_part(self.ctx.library, self.ctx.rc.retriever or self.config.model.name_or_path,
                                              self.ctx.rc, self.config.seed)
            rospr = self._rospr_part
        return key_parts(self._scorer_part, target.spec.task_name, target.spec.prompt, target.data.content_hash,
                         self.conv, method, rospr)

    def cache_lookup(self, target: Target, method: Method):
        if not target.data.content_hash:
            return None
        return self.cache.get(unit_key(self.key_parts(target, method)))

    def finish_cached(self, target: Target, method: Method, hit) -> None:
        with self.stages.timing("write"):
            self._finish_cached(target, method, hit)

    def _finish_cached(self, target: Target, method: Method, hit) -> None:
        f = hit.fields
        # n and accuracy from the verified records (RunDirectory.add), never from the entry's metadata
        unit = UnitResult(task=target.spec.task_name, prompt=target.spec.prompt, method=method.name, n=0,
                          accuracy=None, skipped=f.get("skipped", 0), skipped_reasons=f.get("skipped_reasons") or {},
                          truncated=f.get("truncated", 0),
                          records=records_path(target.spec.task_name, target.spec.prompt, method.name),
                          content_hash=f.get("content_hash", ""), wall_s=0.0, retrieval=f.get("retrieval"),
                          cached=True)
        log.info("%s / %s: reused from the unit cache (%s)", target.name, method.name, hit.key[:12])
        self.write_unit(target, method, unit, hit.records.decode("utf-8"), cached=True)


def drive(config: RunConfig, specs: list[TargetSpec], todo: dict[int, list[Method]], rundir: RunDirectory,
          backend: Backend, ctx: RosprContext | None, executor: Executor | None, observer: Observer,
          cache: UnitCache | None, stamp: Callable[[], Any], execution: dict[str, Any],
          stages: Stages | None = None) -> ResultsFile:
    """The drive step: stream the ``todo`` methods of every target through ``executor`` (None:
    nothing to compute), writing results.json (``stamp()``: the provenance) after every unit and
    once at the end, whatever happens; the executor is closed. ``stages`` (default: from now) counts
    where the time went; its summary is ``execution["time"]``. Returns the final results."""
    stages = stages or Stages()
    remaining = sum(len(v) for v in todo.values())
    observer.start(remaining)
    try:
        if executor is not None:
            in_process = executor.name == "in_process"
            in_flight = 1 if in_process else executor.max_in_flight
            max_active = 2 if in_process else (config.ray.max_active_units or 2 * in_flight)
            driver = Driver(config, specs, todo, rundir, backend, ctx, executor, observer, cache,
                            max_in_flight=in_flight, max_active=max_active, retrieval_group=config.ray.retrieval_group,
                            on_write=lambda: rundir.write(stamp(), {**execution, **driver.counts}), stages=stages)
            t_driver = time.time()
            try:
                driver.run()
            finally:  # driver_s: the streaming itself (actors started, bank and library ready)
                execution.update(driver.counts, driver_s=round(time.time() - t_driver, 3))
    finally:
        if executor is not None:
            execution.update(executor.stats())
            executor.close()
        execution["time"] = stages.summary(scorers=int(execution.get("scorers") or 1))
        final = rundir.write(stamp(), execution)
    return final
