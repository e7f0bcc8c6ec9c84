"""One (task, prompt) unit's RoSPr decision, given its retrieval: what the driver asks the method.

The driver (``harness/runner/driver.py``) does the work in this order, on its executor: draw the
unit's queries (``retrieval_queries``), retrieve them, count the frequency table, score the queries
with each VAR candidate (``var_candidates``) when a +var method is asked for, then ``decide`` per
method: the selection, the soft prompt (one bank prompt or the INTER mix) and the retrieval log that
goes into the unit's entry of results.json (``retrieval_log``).

A target that is also a source: with ``rospr.leave_one_out`` (the default) the prompts trained on
the target's own dataset are excluded from its retrieval, as RoSPr is evaluated on unseen tasks.
"""

from __future__ import annotations

import numpy as np

from rospr_harness.method.prepare import RosprContext
from rospr_harness.schema import LogCandidate, RetrievalLog
from rospr_harness.tasks import dataset_of
from rospr.data import Example
from rospr.library import Library
from rospr.retrieval import Hits, draw_queries
from rospr.selection import Candidate, Method, Selection, VarCandidate, select, var_rank
from rospr.softprompt import mix

LOG_CANDIDATES = 20  # candidates listed in a unit's log (the table can hold every prompt of the library)


def retrieval_queries(ctx: RosprContext, seed: int, task: str, prompt: str,
                      examples: list[Example]) -> tuple[list[Example], list[str]]:
    """The unit's Q unlabelled queries (drawn with ``seed``) and the sources its retrieval must
    exclude (leave-one-out)."""
    queries = draw_queries(examples, ctx.rc.queries, seed, f"{task}/{prompt}")
    if not ctx.rc.leave_one_out:
        return queries, []
    own = dataset_of(task)  # `rte` and a source `super_glue/rte` are one dataset
    return queries, sorted(s for s in set(ctx.library.sources) if dataset_of(s) == own)  # per source, not per key


def var_candidates(ctx: RosprContext, table: list[Candidate]) -> list[Candidate]:
    """The candidates +var scores on the queries: the most frequent ``rospr.var_candidates``."""
    return list(table[: ctx.rc.var_candidates])


def decide(ctx: RosprContext, method: Method, queries: list[Example], hits: Hits, table: list[Candidate],
           predictions: dict[str, list[int]] | None = None) -> tuple[Selection, np.ndarray | None, RetrievalLog]:
    """Selection for one RoSPr ``method`` from the unit's retrieval (and, for +var, the candidates'
    predicted choices on the queries): the selection, the soft prompt to score with (None: no
    candidate; INTER: the weighted mix) and the retrieval log."""
    var_ranked, rule = None, None
    if method.var:  # no candidate at all: an empty ranking, and select() scores without a prompt
        var_ranked, rule = (var_rank(var_candidates(ctx, table), predictions or {}, [q.choices for q in queries])
                            if table else ([], None))
    sel = select(method, table, ctx.rc.n_inter, var_ranked)
    values = None
    if sel.prompt_ids:
        prompts = [ctx.bank.get(pid) for pid in sel.prompt_ids]
        values = prompts[0].values if len(prompts) == 1 else mix(prompts, sel.weights)
    return sel, values, retrieval_log(sel, table, hits, var_ranked, rule, ctx.library)


def retrieval_log(sel: Selection, table: list[Candidate], hits: Hits, var_ranked: list[VarCandidate] | None,
                  rule: str | None, library: Library) -> RetrievalLog:
    """Why the unit got its prompt: queries, exclusions, the candidates with their evidence, the choice."""
    source = dict(zip(library.prompt_ids, library.sources))
    var = {v.prompt_id: v for v in var_ranked or []}
    candidates = []
    for c in table[:LOG_CANDIDATES]:
        v = var.get(c.prompt_id)
        candidates.append(LogCandidate(
            id=c.prompt_id, source=source.get(c.prompt_id), frequency=c.frequency, similarity=round(c.similarity, 6),
            distribution=[round(x, 6) for x in v.distribution] if v else None, variance=v.variance if v else None,
            var_score=v.score if v else None))
    return RetrievalLog(method=sel.method, queries=hits.query_indices, hits=sum(len(h) for h in hits.hits),
                        excluded=hits.excluded, library=library.content_hash, candidates=candidates,
                        n_candidates=len(table), var_rule=rule, chosen=sel.prompt_ids,
                        weights=[round(w, 6) for w in sel.weights], note=sel.note)
