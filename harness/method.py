"""RoSPr in a run: build what is missing (prompt bank, library), then choose each unit's soft prompt.

``prepare`` resolves the source tasks into tuning jobs (one per (source dataset, hard prompt), its
training split rendered with that prompt), tunes the prompts the bank lacks, and builds the library
unless one built from exactly the same inputs is already there (``build_key``). ``choose`` then runs
retrieval and selection for one (task, prompt) unit and returns the prompt to score with and the
retrieval log that goes into the unit's entry of results.json.

A target that is also a source: with ``rospr.leave_one_out`` (the default) the prompts trained on
the target's own dataset are excluded from its retrieval, as RoSPr is evaluated on unseen tasks.
Artifacts that were edited on disk are refused (delete them to rebuild), never silently replaced.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.backends import Backend
from harness.config import IndexConfig, RosprConfig, RunConfig, TuneConfig
from harness.tasks import PromptsourceTask, dataset_of, expand, get_task
from harness.tasks.base import DataSettings, TaskError
from rospr.artifacts import ArtifactError
from rospr.data import Example
from rospr.library import IndexSettings, Library, LibraryEntry, build_key, build_library, load_library, retriever_identity
from rospr.retrieval import Hits, draw_queries, retrieve
from rospr.selection import Candidate, Selection, VarCandidate, frequency_table, predict_choices, select, var_rank
from rospr.softprompt import PromptBank, mix
from rospr.tuning import TuneJob, TuneSettings, tune_bank

log = logging.getLogger(__name__)

def source_names(rc: RosprConfig) -> list[str]:
    """The source task names: group names (``t0_train``, ``builtin``, ...) replaced by their members."""
    try:
        return expand(rc.sources)
    except TaskError as exc:
        raise TaskError(f"rospr.sources: {exc}") from None


def tune_settings(rc: RosprConfig) -> TuneSettings:
    t = rc.tune
    return TuneSettings(prompt_length=t.prompt_length, steps=t.steps, batch_size=t.batch_size, lr=t.lr,
                        optimizer=t.optimizer, weight_decay=t.weight_decay, init=t.init,
                        init_vocab_top=t.init_vocab_top, seed=t.seed, max_input_tokens=t.max_input_tokens,
                        threads=t.threads)


def index_settings(ic: IndexConfig) -> IndexSettings:
    return IndexSettings(type=ic.type, nlist=ic.nlist, nprobe=ic.nprobe, hnsw_m=ic.hnsw_m,
                         hnsw_ef_search=ic.hnsw_ef_search, gpu=ic.gpu)


def tuning_jobs(rc: RosprConfig, settings: DataSettings) -> list[TuneJob]:
    """One job per (source, template): the source's training split rendered with the template,
    labelled rows only. The template's answer choices are recorded when all rows share them."""
    jobs = []
    for name in source_names(rc):
        try:
            task = get_task(name, settings)
        except TaskError as exc:
            raise TaskError(f"rospr.sources: {exc}") from None
        # every template trains a prompt (generation ones too: the loss is the target text's)
        prompts = task.training_prompts() if isinstance(task, PromptsourceTask) else task.prompts()
        for prompt in prompts:
            data = task.load(prompt, split=rc.tune.source_split, limit=rc.tune.source_rows, training=True)
            examples = tuple(ex for ex in data.examples if ex.labelled or ex.target_text)
            if not examples:
                log.warning("source %s / %s: no labelled %s rows; no prompt trained", name, prompt, rc.tune.source_split)
                continue
            shared = examples[0].choices if all(ex.choices == examples[0].choices for ex in examples) else ()
            jobs.append(TuneJob(name, prompt, tuple(shared), examples,
                                {"split": rc.tune.source_split, "rows": rc.tune.source_rows}))
    if not jobs:
        raise TaskError("rospr.sources: no source prompt has training rows")
    return jobs


def library_entries(bank: PromptBank, settings: DataSettings, n: int) -> list[LibraryEntry]:
    """The library entries of every prompt of ``bank``: the first ``n`` training inputs of each,
    re-rendered from its source task with the split and rows recorded when it was tuned."""
    entries = []
    for entry in bank.entries:
        origin = entry.get("origin") or {}
        task = get_task(entry["source"], settings)
        data = task.load(entry["template"], split=origin.get("split", "train"), limit=origin.get("rows"),
                         training=True)
        texts = [ex.input_text for ex in data.examples if ex.labelled or ex.target_text][:n]
        entries.append(LibraryEntry(entry["id"], entry["source"], tuple(texts)))
    return entries


@dataclass
class RosprContext:
    """What the RoSPr methods need during a run, and the per-unit caches shared by the methods."""

    rc: RosprConfig
    bank: PromptBank
    library: Library
    embedder: Any
    retriever_tokenizer: Any
    hits: dict = field(default_factory=dict)  # (task, prompt) -> (queries, Hits)
    predictions: dict = field(default_factory=dict)  # (task, prompt, prompt id) -> [choice index]


def _embedder(config: RunConfig, retriever: str):
    try:
        from harness.backends import create_embedder
    except ImportError:  # a harness without backend embedders: the PyTorch reference
        from rospr.retriever import TorchEmbedder, load_encoder

        encoder, tokenizer = load_encoder(retriever)
        return TorchEmbedder(encoder, device=config.model.device), tokenizer
    return create_embedder(config, retriever)


def prepare(config: RunConfig, backend: Backend, data_settings: DataSettings) -> RosprContext:
    """Tune the missing prompts, build (or reuse) the library, load the retriever."""
    rc = config.rospr
    jobs = tuning_jobs(rc, data_settings)
    settings = tune_settings(rc)
    tokenizer = backend.tokenizer if backend.model is not None else None
    bank = tune_bank(jobs, rc.prompt_bank, settings, backend.identity, config.model.name_or_path,
                     model=backend.model, tokenizer=tokenizer, parallel=rc.tune.parallel, num_cpus=rc.tune.num_cpus)
    retriever = rc.retriever or config.model.name_or_path
    identity = retriever_identity(retriever)
    entries = [LibraryEntry(job.id, job.source, tuple(ex.input_text for ex in job.examples[: rc.library_n]))
               for job in jobs]
    index = index_settings(rc.index)
    bank_hash = bank.content_hash([job.id for job in jobs])
    key = build_key(entries, bank_hash, identity, index, rc.normalize, config.scoring.max_input_tokens)
    embedder, rtok = _embedder(config, retriever)
    library = None
    if (Path(rc.library) / "manifest.json").exists():
        try:  # the retriever is part of build_key: another retriever makes it stale, not invalid
            library = load_library(rc.library)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} (rospr.library={rc.library!r}; delete it to rebuild)") from None
    if library is None or library.build_key != key:
        log.info("building the library %s (%d prompts)", rc.library, len(entries))
        library = build_library(rc.library, entries, embedder, rtok, identity, bank_hash, index, rc.normalize,
                                config.scoring.max_input_tokens, config.scoring.batch_size)
    else:
        log.info("reusing the library %s", rc.library)
    return RosprContext(rc, bank, library, embedder, rtok)


def retrieval_queries(ctx: RosprContext, config: RunConfig, task: str, prompt: str,
                      examples: list[Example]) -> tuple[list[Example], list[str]]:
    """The unit's Q unlabelled queries and the sources its retrieval must exclude (leave-one-out)."""
    queries = draw_queries(examples, ctx.rc.queries, config.seed, f"{task}/{prompt}")
    if not ctx.rc.leave_one_out:
        return queries, []
    own = dataset_of(task)  # `rte` and a source `super_glue/rte` are one dataset
    return queries, sorted({s for s in ctx.library.sources if dataset_of(s) == own})


def var_candidates(ctx: RosprContext, table: list[Candidate]) -> list[Candidate]:
    """The candidates +var scores on the queries: the most frequent ``rospr.var_candidates``."""
    return list(table[: ctx.rc.var_candidates])


def decide(ctx: RosprContext, method: str, queries: list[Example], hits: Hits, table: list[Candidate],
           predictions: dict[str, list[int]] | None = None) -> tuple[Selection, np.ndarray | None, dict]:
    """Selection for one method from the unit's retrieval (and, for +var, the candidates' predicted
    choices on the queries): the selection, the soft prompt to score with (None: no candidate;
    INTER: the weighted mix) and the retrieval log. Shared by ``choose`` and the runner."""
    rc = ctx.rc
    var_ranked, rule = None, None
    if "+var" in method:  # no candidate at all: an empty ranking, and select() scores without a prompt
        var_ranked, rule = (var_rank(var_candidates(ctx, table), predictions or {}, [q.choices for q in queries])
                            if table else ([], None))
    sel = select(method, table, rc.n_inter, var_ranked)
    values = None
    if sel.prompt_ids:
        prompts = [ctx.bank.get(pid) for pid in sel.prompt_ids]
        values = prompts[0].values if len(prompts) == 1 else mix(prompts, sel.weights)
    return sel, values, retrieval_log(sel, table, hits, var_ranked, rule, ctx.library)


def _hits(ctx: RosprContext, config: RunConfig, task: str, prompt: str, examples: list[Example]):
    key = (task, prompt)
    if key not in ctx.hits:
        queries, exclude = retrieval_queries(ctx, config, task, prompt, examples)
        hits = retrieve(ctx.library, ctx.embedder, ctx.retriever_tokenizer, queries, ctx.rc.top_n,
                        exclude_sources=exclude)
        ctx.hits[key] = (queries, hits)
    return ctx.hits[key]


def choose(ctx: RosprContext, config: RunConfig, backend: Backend, task: str, prompt: str,
           examples: list[Example], method: str) -> tuple[np.ndarray | None, dict]:
    """The soft prompt ``method`` uses for the unit (None: no candidate) and its retrieval log, in
    process (a notebook's entry point; the runner does the same steps on its executor)."""
    queries, hits = _hits(ctx, config, task, prompt, examples)
    table = frequency_table(hits.hits) if queries else []
    preds = {}
    if "+var" in method and table:
        for cand in var_candidates(ctx, table):
            pkey = (task, prompt, cand.prompt_id)
            if pkey not in ctx.predictions:
                ctx.predictions[pkey] = predict_choices(backend.scorer, backend.tokenizer, queries,
                                                        ctx.bank.get(cand.prompt_id).values,
                                                        config.scoring.convention(), config.scoring.batch_size)
            preds[cand.prompt_id] = ctx.predictions[pkey]
    _, values, log_ = decide(ctx, method, queries, hits, table, preds)
    return values, log_


LOG_CANDIDATES = 20  # candidates listed in a unit's log (the table can hold every prompt of the library)


def retrieval_log(sel: Selection, table: list[Candidate], hits: Hits, var_ranked: list[VarCandidate] | None,
                  rule: str | None, library: Library) -> dict:
    """Why the unit got its prompt: queries, exclusions, the candidates with their evidence, the choice."""
    source = dict(zip(library.prompt_ids, library.sources))
    var = {v.prompt_id: v for v in var_ranked or []}
    candidates = []
    for c in table[:LOG_CANDIDATES]:
        item: dict[str, Any] = {"id": c.prompt_id, "source": source.get(c.prompt_id), "frequency": c.frequency,
                                "similarity": round(c.similarity, 6)}
        if c.prompt_id in var:
            v = var[c.prompt_id]
            item.update(distribution=[round(x, 6) for x in v.distribution], variance=v.variance, var_score=v.score)
        candidates.append(item)
    return {
        "method": sel.method,
        "queries": hits.query_indices,
        "hits": sum(len(h) for h in hits.hits),
        "excluded": hits.excluded,
        "library": library.content_hash,
        "candidates": candidates,
        "n_candidates": len(table),
        "var_rule": rule,
        "chosen": sel.prompt_ids,
        "weights": [round(w, 6) for w in sel.weights],
        **sel.log,
    }


def tune_sources(model: str, sources: list[str] | str, out: str, tune: TuneConfig | None = None,
                 data_settings: DataSettings | None = None, on_done=None) -> PromptBank:
    """``rospr tune``: one soft prompt per (source, template) of ``sources`` into the bank ``out``,
    training only what the bank lacks. Returns the bank."""
    from rospr.backbone import load_backbone

    rc = RosprConfig(sources=sources, prompt_bank=out, tune=tune or TuneConfig())
    jobs = tuning_jobs(rc, data_settings or DataSettings())
    model_, tokenizer, identity = load_backbone(model)
    return tune_bank(jobs, out, tune_settings(rc), identity.as_dict(), model, model=model_, tokenizer=tokenizer,
                     parallel=rc.tune.parallel, num_cpus=rc.tune.num_cpus, on_done=on_done)


def build_library_from_bank(prompts: str, retriever: str, out: str, n: int = 100,
                            index: IndexConfig | None = None, normalize: bool = True, max_tokens: int = 1024,
                            data_settings: DataSettings | None = None, device: str = "cpu") -> Library:
    """``rospr library build``: embed the first ``n`` training inputs of every prompt of the bank
    ``prompts`` with the retriever (PyTorch, in process) and write the library ``out``."""
    from rospr.retriever import TorchEmbedder, load_encoder

    bank = PromptBank.load(prompts)
    entries = library_entries(bank, data_settings or DataSettings(), n)
    settings = index_settings(index or IndexConfig())
    encoder, tokenizer = load_encoder(retriever)
    return build_library(out, entries, TorchEmbedder(encoder, device=device), tokenizer, retriever_identity(retriever),
                         bank.content_hash(), settings, normalize, max_tokens)
