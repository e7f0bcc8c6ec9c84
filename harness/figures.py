"""A run's figures, derived from its records only: a unit's ``n``, ``accuracy`` and spread, and the
per-task summaries.

A unit's ``n``, ``accuracy`` and spreads (and so ``tasks`` and ``overall``) are always derived from its
records (``unit_figures``), and only from a file whose sha256 is the one listed
(``rospr_harness.runfiles.verified_records``): a number read back from results.json or a cache
entry is never used, but for one shortcut: a unit reused from the unit cache takes the entry's stderr
and interval when its records give the entry's n and accuracy under the same ``Statistics``
(``UnitFigures.known_spread``), rather than drawing the bootstrap again. The statistics themselves
are ``rospr_harness.stats``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from statistics import mean, median
from typing import Any, Callable, Sequence

from rospr_harness.schema import Record, Statistics, TaskSummary, UnitResult, record_scores


@dataclass(frozen=True)
class Spread:
    """The uncertainty of an accuracy over rows: ``stderr`` and the bootstrap interval (None when undefined)."""

    stderr: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    def fields(self) -> dict[str, float | None]:
        return {"stderr": self.stderr, "ci_low": self.ci_low, "ci_high": self.ci_high}


def spread(units: list[dict[int, float]], seed_names: Sequence[str]) -> Spread:
    """The ``Spread`` of the mean over ``units`` (row index -> metric value: one unit, or a task's prompts,
    rows resampled jointly), its interval seeded by ``seed_names`` (``rospr_harness.stats``)."""
    from rospr_harness.stats import accuracy_interval, mean_stderr, score_matrix, task_stderr

    rows = sorted(set().union(*units)) if units else []
    if not rows:
        return Spread()
    interval = accuracy_interval(units, seed_names)
    # one unit: lm-eval's formula itself (the linearisation equals it, but for the last bit)
    stderr = mean_stderr(list(units[0].values())) if len(units) == 1 else task_stderr(score_matrix(units, rows))
    return Spread(stderr, *(interval or (None, None)))


TaskSpread = Callable[[str, str, list[UnitResult]], Spread]


def summarise(units: list[UnitResult], task_spread: TaskSpread | None = None
              ) -> tuple[list[TaskSummary], dict[str, float]]:
    """Per (task, method) mean/median over prompts; per method the mean over tasks. ``task_spread(task,
    method, units)`` gives each task's ``Spread`` (None: left out, as for results without records)."""
    groups: dict[tuple[str, str], list[UnitResult]] = {}
    for u in units:
        if u.n > 0 and u.accuracy is not None:
            groups.setdefault((u.task, u.method), []).append(u)
    tasks = []
    for (t, m), us in groups.items():
        a = [u.accuracy for u in us]
        extra = task_spread(t, m, us).fields() if task_spread else {}
        tasks.append(TaskSummary(task=t, method=m, n_prompts=len(a), mean=mean(a), median=median(a), min=min(a),
                                 max=max(a), **extra))
    per_method: dict[str, list[float]] = {}
    for s in tasks:
        per_method.setdefault(s.method, []).append(s.mean)
    return tasks, {m: mean(v) for m, v in per_method.items()}


@dataclass
class UnitFigures:
    """What a unit's records say: ``n``, ``accuracy`` (mean metric; None when empty), each row's metric
    value (``scores``: row index -> value, for a task's figures and ``rospr compare``) and, computed
    when first asked for, its ``spread`` (the bootstrap seeded by ``unit``: task, prompt, method)."""

    n: int
    accuracy: float | None
    scores: dict[int, float]
    unit: tuple[str, str, str]

    @functools.cached_property
    def spread(self) -> Spread:
        return spread([self.scores], ("unit", *self.unit)) if self.n else Spread()

    def fields(self) -> dict[str, Any]:
        """The ``UnitResult`` fields these figures set."""
        return {"n": self.n, "accuracy": self.accuracy, **self.spread.fields()}

    def known_spread(self, known: dict[str, Any] | None) -> None:
        """Take the spread from ``known`` (``spread_fields`` of a unit with these records, e.g. a unit
        cache entry's) instead of drawing its bootstrap again: only when ``known`` was computed by the
        same statistics (``Statistics``) for the same ``n`` and ``accuracy``; otherwise it is drawn as usual."""
        if not known or known.get("statistics") != Statistics().model_dump() or \
                (known.get("n"), known.get("accuracy")) != (self.n, self.accuracy):
            return
        self.__dict__["spread"] = Spread(known.get("stderr"), known.get("ci_low"), known.get("ci_high"))


def spread_fields(unit: UnitResult) -> dict[str, Any]:
    """What ``UnitFigures.known_spread`` takes again: ``unit``'s n, accuracy and spread, with the statistics
    that computed them."""
    return {**unit.model_dump(include={"n", "accuracy", "stderr", "ci_low", "ci_high"}),
            "statistics": Statistics().model_dump()}


def unit_figures(records: Sequence[Record], where: str | Path, unit: tuple[str, str, str] = ("", "", "")
                 ) -> UnitFigures:
    """A unit's figures, from its records only (each record's metric recomputed: ``record_scores``);
    ``unit`` (task, prompt, method) seeds its bootstrap. The one derivation of a unit's numbers: for
    writing, resume, cache reuse, ``verify`` and ``compare``. Refuses (``RecordsError``) a bad record."""
    scores = record_scores(records, where)
    accuracy = float(sum(scores) / len(scores)) if scores else None
    return UnitFigures(len(scores), accuracy, {r.index: s for r, s in zip(records, scores)}, tuple(unit))
