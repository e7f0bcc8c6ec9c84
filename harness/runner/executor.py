"""Where the work of a run executes: the ``Executor`` interface, its workers, the in-process executor.

The driver (``rospr_harness.runner.driver``) asks an executor for two kinds of work, each call an awaitable
that resolves to the worker's ``Done``:

- ``await score(rows, prompt)``: one length-bucketed batch of one unit (its encoded examples, in
  the order ``plan_batches`` gave them) with one soft prompt (a handle from ``put``, or None for
  the T0 baseline); the value is one array of choice scores per row (``ScoringWorker``);
- ``await retrieve(requests)``: the queries of several units in one call; the value is their
  ``Hits``, in order (``RetrievalWorker``).

A ``Done`` carries the worker's value and the seconds it took (for scoring, also the seconds inside
the scorer's own calls), so the driver accounts the work the same way whichever executor ran it
(``rospr_harness.runner.stages``). The driver awaits at most ``max_in_flight`` scoring calls at once.

``InProcessExecutor`` runs the workers in the driver's process: a call runs when it is awaited and
is done when the await returns (the reference, one item at a time);
``rospr_harness.runner.ray_executor.RayExecutor`` runs the same worker classes as Ray actors, and a call
resolves when an actor's result is back (after any resubmission). What a batch contains never
depends on the executor, so every executor gives the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Protocol, Sequence

import numpy as np

from rospr_harness.schema import ExecutorName
from rospr.data import Example
from rospr.retrieval import retrieve
from rospr.scoring import EncodedExample, score_batch


@dataclass(frozen=True)
class RetrievalRequest:
    """One unit's retrieval: its unlabelled queries, N, and the sources left out."""

    queries: tuple[Example, ...]
    top_n: int
    exclude_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Done:
    """A worker's result: ``value``, the ``seconds`` the worker spent on it and, of those, ``model_s``
    inside the scorer's own calls (0 for retrieval)."""

    value: Any
    seconds: float
    model_s: float = 0.0


class _ClockedScorer:
    """A scorer that adds the seconds of each ``score`` call to ``seconds`` (the model's share)."""

    def __init__(self, scorer) -> None:
        self.scorer, self.prompt_dim, self.seconds = scorer, scorer.prompt_dim, 0.0

    def score(self, batch):
        t0 = time.perf_counter()
        try:
            return self.scorer.score(batch)
        finally:
            self.seconds += time.perf_counter() - t0


class ScoringWorker:
    """Scores batches with a backend's scorer. The unit of a scoring actor."""

    def __init__(self, scorer, pad_id: int = 0) -> None:
        self.scorer = scorer
        self.pad_id = pad_id

    def score(self, rows: Sequence[EncodedExample], prompt: np.ndarray | None) -> Done:
        """Choice scores of each row of one batch (``Done.value``: one array per row), all rows with
        soft prompt ``prompt`` [P, D] (or none), with the seconds taken and those inside the scorer."""
        t0, clocked = time.perf_counter(), _ClockedScorer(self.scorer)
        scores = score_batch(clocked, rows, [prompt] * len(rows), self.pad_id)
        return Done(scores, time.perf_counter() - t0, clocked.seconds)


class RetrievalWorker:
    """Holds the retriever (embedder + tokenizer) and the library's index. The retrieval actor."""

    def __init__(self, library, embedder, tokenizer) -> None:
        self.library, self.embedder, self.tokenizer = library, embedder, tokenizer

    def retrieve(self, requests: Sequence[RetrievalRequest]) -> Done:
        """The hits of each request (``Done.value``, in order) and the seconds taken. Each unit's
        queries are embedded and searched as a batch of their own, exactly as ``rospr.retrieval.retrieve``
        does for one unit, so a unit's hits never depend on which units share the call (nor on a
        resume or the cache changing them)."""
        t0 = time.perf_counter()
        hits = [retrieve(self.library, self.embedder, self.tokenizer, list(r.queries), r.top_n, r.exclude_sources)
                for r in requests]
        return Done(hits, time.perf_counter() - t0)


class Executor(Protocol):
    """What the driver needs from an executor (see the module docstring)."""

    name: ExecutorName  # results.json's execution.executor
    max_in_flight: int  # scoring calls the driver may await at once (backpressure)

    def put(self, values: np.ndarray | None) -> Any:
        """A handle of a soft prompt that batches then pass by reference (stored once)."""
        ...

    def score(self, rows: Sequence[EncodedExample], prompt: Any) -> Awaitable[Done]:
        """One batch's choice scores (``Done.value``: one array per row) with ``prompt`` (a handle of
        ``put``, or None). Raises the error of a batch that failed for good."""
        ...

    def retrieve(self, requests: Sequence[RetrievalRequest]) -> Awaitable[Done]:
        """The ``Hits`` of each request (``Done.value``, in order). Raises as ``score`` does."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Runs each call in the driver's process when it is awaited: the reference executor."""

    name = "in_process"
    max_in_flight = 1

    def __init__(self, scoring: ScoringWorker, retrieval: RetrievalWorker | None = None) -> None:
        self.scoring, self.retrieval = scoring, retrieval

    def put(self, values: np.ndarray | None) -> Any:
        return values

    async def score(self, rows: Sequence[EncodedExample], prompt: Any) -> Done:
        return self.scoring.score(rows, prompt)

    async def retrieve(self, requests: Sequence[RetrievalRequest]) -> Done:
        if self.retrieval is None:
            raise RuntimeError("this run has no retrieval worker (no RoSPr method)")
        return self.retrieval.retrieve(requests)

    def stats(self) -> dict[str, Any]:
        return {"executor": self.name, "scorers": 1}

    def close(self) -> None:
        pass
