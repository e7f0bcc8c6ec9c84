"""Where the work of a run executes: the ``Executor`` interface, its workers, the in-process executor.

The driver (``harness.runner.driver``) hands an executor two kinds of work and gets results back
tagged, in whatever order they finish:

- ``score(tag, rows, prompt)``: one length-bucketed batch of one unit (its encoded examples, in
  the order ``plan_batches`` gave them) with one soft prompt (a handle from ``put``, or None for
  the T0 baseline); the result is one array of choice scores per row (``ScoringWorker``);
- ``retrieve(tag, requests)``: the queries of several units in one call; the result is their
  ``Hits``, in order (``RetrievalWorker``).

Every result comes back as a ``Done``: the worker's value and the seconds it took (for scoring,
also the seconds inside the scorer's own calls), so the driver accounts the work the same way
whichever executor ran it (``harness.runner.stages``).

``InProcessExecutor`` runs the workers in the driver's process, one item at a time (the reference);
``harness.runner.ray_executor.RayExecutor`` runs the same worker classes as Ray actors. What a
batch contains never depends on the executor, so every executor gives the same numbers.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Protocol, Sequence

import numpy as np

from rospr.data import Example
from rospr.retrieval import Hits, retrieve
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

    name: str

    def capacity(self) -> int:
        """Scoring batches that may be submitted now (backpressure)."""
        ...

    def put(self, values: np.ndarray | None) -> Any:
        """A handle of a soft prompt that batches then pass by reference (stored once)."""
        ...

    def score(self, tag: Hashable, rows: Sequence[EncodedExample], prompt: Any) -> None: ...

    def retrieve(self, tag: Hashable, requests: Sequence[RetrievalRequest]) -> None: ...

    def pending(self) -> int:
        """Items submitted and not yet returned by ``wait``."""
        ...

    def wait(self) -> list[tuple[Hashable, Done]]:
        """Block until at least one item is done; return the finished (tag, ``Done``) pairs. Raises the
        error of an item that failed for good."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Runs each item in the driver's process when the driver waits for it: the reference executor."""

    name = "in_process"

    def __init__(self, scoring: ScoringWorker, retrieval: RetrievalWorker | None = None) -> None:
        self.scoring, self.retrieval = scoring, retrieval
        self.todo: deque[tuple[Hashable, Callable[[], Any]]] = deque()

    def capacity(self) -> int:
        return 0 if self.todo else 1

    def put(self, values: np.ndarray | None) -> Any:
        return values

    def score(self, tag: Hashable, rows: Sequence[EncodedExample], prompt: Any) -> None:
        self.todo.append((tag, lambda: self.scoring.score(rows, prompt)))

    def retrieve(self, tag: Hashable, requests: Sequence[RetrievalRequest]) -> None:
        if self.retrieval is None:
            raise RuntimeError("this run has no retrieval worker (no RoSPr method)")
        self.todo.append((tag, lambda: self.retrieval.retrieve(requests)))

    def pending(self) -> int:
        return len(self.todo)

    def wait(self) -> list[tuple[Hashable, Done]]:
        tag, work = self.todo.popleft()
        return [(tag, work())]

    def stats(self) -> dict[str, Any]:
        return {"executor": self.name, "scorers": 1}

    def close(self) -> None:
        self.todo.clear()
