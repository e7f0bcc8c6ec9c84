"""Choosing the soft prompt of a target (task, prompt) from its retrieval hits.

Given the Q x N hits of the queries (``rospr.retrieval``), every method starts from the
**frequency table**: how often each prompt id appears among the hits, ties broken by the summed
similarity of its hits (then by id, so the order is total and deterministic). Which hits vote is a
setting (``VOTES``): all Q x N (ours), or each query's top-1 (the lab's code; docs/method.md).

- ``rospr``: the most frequent prompt.
- ``rospr+inter``: the weighted sum of the top N' (default 3) prompts, weights frequency / sum of
  their frequencies.
- ``rospr+var``: the top ``var_candidates`` prompts by frequency are each scored on the Q queries by
  rank classification; a prompt's **answer-choice distribution** is the share of queries predicted
  as each choice; its VAR score is frequency / variance of that distribution. A prompt that sends
  every query to one answer has a large variance and is penalised.
- ``rospr+var+inter``: the top N' by VAR score, weights VAR score / sum of their VAR scores.

Zero variance. The variance of Q queries' counts n_1..n_C over C choices is
``(C * sum(n_i**2) - Q**2) / (C**2 * Q**2)``, computed exactly from the integer counts. Only a
perfectly balanced distribution has variance 0 (reachable only when C divides Q); its score uses
instead the smallest non-zero variance reachable for (Q, C) (``smallest_variance``), so every
non-zero variance is ranked by frequency / variance exactly as defined, and a balanced prompt ranks
as if it had the least reachable imbalance: never below an imbalanced prompt of the same or a lower
frequency. ``rospr+var+inter``'s weights are these same scores.

Choices that differ per example: when every query has the same answer choices (same texts, same
order), the distribution is over those choices. Otherwise (e.g. COPA, HellaSwag, BIG-bench items
with their own options) it is over choice *positions* 0..C-1, C the largest number of choices of a
query, each query counting for the position it picks: the positional bias of a prompt is what VAR
can measure there.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

import numpy as np

from rospr.errors import SettingError


@dataclass(frozen=True)
class Method:
    """How a unit is scored: ``t0`` (the hard prompt alone, ``retrieve`` False) or a RoSPr method,
    with VAR ranking (``var``) and/or interpolation (``inter``). A config names one by its ``name``;
    ``Method.parse`` is the one place such a name is read."""

    retrieve: bool = True
    var: bool = False
    inter: bool = False

    def __post_init__(self) -> None:
        if not self.retrieve and (self.var or self.inter):
            raise SettingError("the t0 baseline retrieves nothing: it has neither +var nor +inter")

    @property
    def name(self) -> str:
        if not self.retrieve:
            return "t0"
        return "rospr" + ("+var" if self.var else "") + ("+inter" if self.inter else "")

    def __str__(self) -> str:
        return self.name

    @classmethod
    def parse(cls, text: "str | Method") -> "Method":
        """The method named ``text`` (one of ``METHODS``' names); refuses (``ValueError``) any other."""
        if isinstance(text, Method):
            return text
        by_name = {m.name: m for m in METHODS}
        if text not in by_name:
            raise SettingError(f"{text!r} is not one of {list(by_name)}")
        return by_name[text]


T0 = Method(retrieve=False)
# every method, in the order reports list them
METHODS = (T0, Method(), Method(inter=True), Method(var=True), Method(var=True, inter=True))


@dataclass(frozen=True)
class Candidate:
    """A retrieved prompt: how often it was hit and the sum of its hits' similarities."""

    prompt_id: str
    frequency: int
    similarity: float


@dataclass(frozen=True)
class VarCandidate:
    """A candidate with its answer-choice distribution over the queries and its VAR score."""

    prompt_id: str
    frequency: int
    similarity: float
    distribution: tuple[float, ...]
    variance: float
    score: float


@dataclass
class Selection:
    """The prompt(s) a method chose and their weights (one prompt: weight 1); ``note`` says why there
    is none."""

    method: str
    prompt_ids: list[str]
    weights: list[float]
    note: str | None = None


VOTES = ("all", "top1")


def frequency_table(hits: Sequence[Sequence[tuple[str, float]]], votes: str = "all") -> list[Candidate]:
    """Count prompt ids over the queries' hits; most frequent first, ties by summed similarity
    (higher first), then by id. ``votes``: ``"all"`` counts every hit (Q x N), ``"top1"`` only each
    query's first (one vote per query, as the lab's code counts). Refuses any other ``votes``."""
    if votes not in VOTES:
        raise SettingError(f"votes {votes!r}: choose one of {list(VOTES)}")
    freq: dict[str, int] = defaultdict(int)
    sims: dict[str, float] = defaultdict(float)
    for query_hits in hits:
        for pid, sim in (query_hits[:1] if votes == "top1" else query_hits):
            freq[pid] += 1
            sims[pid] += float(sim)
    table = [Candidate(pid, freq[pid], sims[pid]) for pid in freq]
    table.sort(key=lambda c: (-c.frequency, -c.similarity, c.prompt_id))
    return table


def choice_counts(predictions: Sequence[int], choices: Sequence[Sequence[str]]) -> tuple[np.ndarray, str]:
    """How many queries were predicted as each choice (int64 [C]), and the rule used (``"choices"``
    when every query has the same choices, else ``"positions"``; see the module docstring)."""
    if not predictions or len(predictions) != len(choices):
        raise ValueError(f"{len(predictions)} predictions for {len(choices)} queries")
    shared = all(tuple(c) == tuple(choices[0]) for c in choices)
    n = len(choices[0]) if shared else max(len(c) for c in choices)
    return np.bincount(np.asarray(predictions, dtype=np.int64), minlength=n), "choices" if shared else "positions"


def variance(counts: Sequence[int]) -> Fraction:
    """The population variance of the distribution ``counts / Q`` (Q their sum), exactly:
    ``(C * sum(n**2) - Q**2) / (C**2 * Q**2)``."""
    c, q = len(counts), int(sum(counts))
    return Fraction(c * sum(int(n) ** 2 for n in counts) - q * q, c * c * q * q)


def smallest_variance(n_queries: int, n_choices: int) -> Fraction:
    """The smallest non-zero ``variance`` that Q queries over C choices can reach, exactly. With
    Q = kC + r: r > 0 gives r(C - r) / (C**2 Q**2) (r choices get k + 1 queries, the others k); r = 0
    gives 2 / (C Q**2) (one query moved off balance). (C = 1 reaches no non-zero variance; the r = 0
    value stands in.)"""
    q, c = max(n_queries, 1), max(n_choices, 1)
    r = q % c
    return Fraction(r * (c - r), c * c * q * q) if r else Fraction(2, c * q * q)


def var_score(frequency: int, counts: Sequence[int]) -> tuple[float, float]:
    """(variance, VAR score) of a candidate hit ``frequency`` times whose queries' predictions fall
    ``counts`` times on each choice: frequency / variance, a zero variance replaced by
    ``smallest_variance`` (see the module docstring)."""
    v = variance(counts)
    return float(v), float(frequency / (v or smallest_variance(int(sum(counts)), len(counts))))


def var_rank(candidates: Sequence[Candidate], predictions: Mapping[str, Sequence[int]],
             choices: Sequence[Sequence[str]]) -> tuple[list[VarCandidate], str]:
    """VAR-score the candidates that have predictions; highest score first (ties: frequency,
    similarity, id). Returns the ranking and the distribution rule."""
    ranked, rule = [], "choices"
    for c in candidates:
        if c.prompt_id not in predictions:
            continue
        counts, rule = choice_counts(predictions[c.prompt_id], choices)
        v, score = var_score(c.frequency, counts)
        ranked.append(VarCandidate(c.prompt_id, c.frequency, c.similarity,
                                   tuple(float(n) / float(counts.sum()) for n in counts), v, score))
    ranked.sort(key=lambda v: (-v.score, -v.frequency, -v.similarity, v.prompt_id))
    return ranked, rule


def top_weights(items: Sequence[tuple[str, float]], n: int) -> tuple[list[str], list[float]]:
    """The first ``n`` (id, value) items and weights proportional to their values."""
    top = list(items[:n])
    total = sum(v for _, v in top)
    if total <= 0:
        return [i for i, _ in top], [1.0 / len(top)] * len(top)
    return [i for i, _ in top], [v / total for _, v in top]


def select(method: Method | str, candidates: Sequence[Candidate], n_inter: int = 3,
           var_ranked: Sequence[VarCandidate] | None = None) -> Selection:
    """The prompt(s) and weights a RoSPr ``method`` (a ``Method`` or its name) chooses. With no
    candidate, no prompt (the T0 input). Refuses (``ValueError``) t0, ``n_inter`` < 1, and a VAR
    method without its ranking."""
    method = Method.parse(method)
    if not method.retrieve:
        raise ValueError("method 't0' selects no soft prompt")
    if n_inter < 1:
        raise ValueError("n_inter must be >= 1")
    if method.var and var_ranked is None:
        raise ValueError(f"method {method.name!r} needs the VAR ranking")
    if not candidates or (method.var and not var_ranked):
        return Selection(method.name, [], [], "no candidate prompt: scored without a soft prompt")
    items = ([(v.prompt_id, v.score) for v in var_ranked] if method.var  # type: ignore[union-attr]
             else [(c.prompt_id, float(c.frequency)) for c in candidates])
    ids, weights = top_weights(items, n_inter if method.inter else 1)
    return Selection(method.name, ids, weights)
