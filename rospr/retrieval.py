"""Zero-shot retrieval: Q query instances of a target (task, prompt) -> top-N library hits each.

Queries are drawn deterministically from the target's evaluation examples (a seeded sample of Q
row positions, kept in row order) and stripped of labels and targets before anything else sees
them: retrieval and VAR never read a label. Each query's input text (formatted with the target's
hard prompt) is embedded by the retriever exactly as the library's keys were, and the N nearest
keys (inner product) are its hits.

Leave-one-out: the prompts trained on the target's own dataset can be excluded (``exclude_sources``)
so that, as in RoSPr's evaluation on unseen tasks, a target never retrieves its own source prompts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from rospr.canonical import derive_seed
from rospr.data import Example
from rospr.errors import SettingError
from rospr.library import Library
from rospr.retriever import Embedder


@dataclass
class Hits:
    """The queries' row indices and, per query, its top-N hits as (prompt id, similarity)."""

    query_indices: list[int]
    hits: list[list[tuple[str, float]]]
    excluded: list[str]  # prompt ids left out (leave-one-out)


def unlabelled(ex: Example) -> Example:
    """``ex`` without label, target scores or target text: all a query may carry."""
    return Example(task=ex.task, prompt=ex.prompt, index=ex.index, input_text=ex.input_text, choices=ex.choices)


def draw_queries(examples: Sequence[Example], q: int, seed: int, key: str) -> list[Example]:
    """``q`` unlabelled queries drawn from ``examples`` (all of them when there are fewer).

    The draw depends only on ``seed``, ``key`` (e.g. "task/prompt") and the number of examples.
    """
    if q < 1:
        raise SettingError("the number of queries Q must be >= 1")
    n = len(examples)
    if n <= q:
        picked = list(range(n))
    else:
        rng = random.Random(derive_seed("rospr-queries", seed, key))
        picked = sorted(rng.sample(range(n), q))
    return [unlabelled(examples[i]) for i in picked]


def retrieve(library: Library, embedder: Embedder, tokenizer, queries: Sequence[Example], top_n: int,
             exclude_sources: Sequence[str] = (), batch_size: int = 32) -> Hits:
    """The top-``top_n`` hits of each query, skipping prompts whose source is in ``exclude_sources``."""
    if top_n < 1:
        raise SettingError("top-N must be >= 1")
    excluded = [i for i, src in enumerate(library.sources) if src in set(exclude_sources)]
    vectors = library.embed(embedder, tokenizer, [q.input_text for q in queries], batch_size=batch_size)
    ids, sims = library.search(vectors, top_n, exclude=excluded)
    hits = [[(library.prompt_ids[int(i)], float(s)) for i, s in zip(row_ids, row_sims) if i >= 0]
            for row_ids, row_sims in zip(ids, sims)]
    return Hits([q.index for q in queries], hits, [library.prompt_ids[i] for i in excluded])
