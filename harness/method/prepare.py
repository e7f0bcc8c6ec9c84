"""Before any unit: the prompt bank and the library a run's RoSPr methods need, and the retriever.

``prepare`` resolves the source tasks into tuning jobs (one per (source dataset, hard prompt), its
training split rendered with that prompt), tunes the prompts the bank lacks, and builds the library
unless one built from exactly the same inputs is already there (``build_key``). Artifacts that were
edited on disk are refused (delete them to rebuild), never silently replaced; so are a bank tuned on
other weights than the model's and a library built with another retriever (weights or config) than
the run's: those folders are the user's, and another model's prompts are not stale, they are wrong. ``tune_sources`` and
``build_library_from_bank`` are ``rospr tune`` and ``rospr library build``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rospr_harness.backends import Backend, create_embedder
from rospr_harness.config import IndexConfig, RosprConfig, RunConfig, TuneConfig, checkpoint_revision
from rospr_harness.method.tune_pool import trainer
from rospr_harness.tasks import expand, get_task
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr.artifacts import ArtifactError
from rospr.identity import retriever_identity
from rospr.library import Library, LibraryEntry, build_key, build_library, load_library
from rospr.softprompt import PromptBank
from rospr.tuning import TuneJob, tune_bank

log = logging.getLogger(__name__)


@dataclass
class RosprContext:
    """What the RoSPr methods need during a run: their settings, the bank, the library, the retriever."""

    rc: RosprConfig
    bank: PromptBank
    library: Library
    embedder: Any
    retriever_tokenizer: Any


def source_names(rc: RosprConfig) -> list[str]:
    """The source task names: group names (``t0_train``, ``builtin``, ...) replaced by their members."""
    try:
        return expand(rc.sources)
    except TaskError as exc:
        raise TaskError(f"rospr.sources: {exc}") from None


def tuning_jobs(rc: RosprConfig, settings: DataSettings) -> list[TuneJob]:
    """One job per (source, template): the source's training split rendered with the template,
    labelled rows only. The template's answer choices are recorded when all rows share them.
    Refuses (``TaskError``, naming ``rospr.sources``) an unknown source and sources without rows."""
    jobs = []
    for name in source_names(rc):
        try:
            task = get_task(name, settings)
        except TaskError as exc:
            raise TaskError(f"rospr.sources: {exc}") from None
        # every template trains a prompt (generation ones too: the loss is the target text's)
        for prompt in task.training_prompts():
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


def library_inputs(config: RunConfig, jobs: list[TuneJob], bank: PromptBank) -> tuple[list[LibraryEntry], dict, str, str]:
    """What the library of ``jobs``' prompts is built from: its entries (the first ``rospr.library_n``
    training inputs of each job), the retriever's identity, the bank's hash of those prompts and
    the ``build_key`` (``rospr plan`` reads the same key to say whether the library is reused)."""
    rc = config.rospr
    retriever = rc.retriever or config.model.name_or_path
    identity = retriever_identity(retriever, checkpoint_revision(config, retriever))
    entries = [LibraryEntry(job.id, job.source, tuple(ex.input_text for ex in job.examples[: rc.library_n]))
               for job in jobs]
    bank_hash = bank.content_hash([job.id for job in jobs])
    key = build_key(entries, bank_hash, identity, rc.index.settings(), rc.normalize, config.scoring.max_input_tokens)
    return entries, identity, bank_hash, key


def _library(config: RunConfig, jobs: list[TuneJob], bank: PromptBank, embedder, rtok) -> Library:
    """The library of ``jobs``' prompts: reused when its ``build_key`` matches, else (re)built.
    Refuses (``ArtifactError``) a library edited on disk and one built with another retriever."""
    rc = config.rospr
    entries, identity, bank_hash, key = library_inputs(config, jobs, bank)
    index = rc.index.settings()
    library = None
    if (Path(rc.library) / "manifest.json").exists():
        try:
            library = load_library(rc.library, identity)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} (rospr.library={rc.library!r}; delete it to rebuild)") from None
    if library is not None and library.build_key == key:
        log.info("reusing the library %s", rc.library)
        return library
    log.info("building the library %s (%d prompts)", rc.library, len(entries))
    return build_library(rc.library, entries, embedder, rtok, identity, bank_hash, index, rc.normalize,
                         config.scoring.max_input_tokens, config.scoring.batch_size)


def prepare(config: RunConfig, backend: Backend, data_settings: DataSettings) -> RosprContext:
    """Tune the missing prompts, build (or reuse) the library, load the retriever on ``backend``'s
    kind. Returns the context the run's units use."""
    rc = config.rospr
    jobs = tuning_jobs(rc, data_settings)
    tokenizer = backend.tokenizer if backend.model is not None else None
    train = trainer(rc.tune, config.model.name_or_path, backend.model, tokenizer, config.model.device,
                    config.model.revision)
    bank = tune_bank(jobs, rc.prompt_bank, rc.tune.settings(), backend.identity, train)
    embedder, rtok = create_embedder(config, rc.retriever or config.model.name_or_path)
    return RosprContext(rc, bank, _library(config, jobs, bank, embedder, rtok), embedder, rtok)


def tune_sources(model: str, sources: list[str] | str, out: str, tune: TuneConfig | None = None,
                 data_settings: DataSettings | None = None, on_done=None) -> PromptBank:
    """``rospr tune``: one soft prompt per (source, template) of ``sources`` into the bank ``out``,
    training only what the bank lacks. Returns the bank."""
    rc = RosprConfig(sources=sources, prompt_bank=out, tune=tune or TuneConfig())
    jobs = tuning_jobs(rc, data_settings or DataSettings())
    from rospr.backbone import load_backbone  # torch: only when prompts are tuned

    model_, tokenizer, identity = load_backbone(model)
    return tune_bank(jobs, out, rc.tune.settings(), identity.as_dict(), trainer(rc.tune, model, model_, tokenizer),
                     on_done=on_done)


def build_library_from_bank(prompts: str, retriever: str, out: str, n: int = 100,
                            index: IndexConfig | None = None, normalize: bool = True, max_tokens: int = 1024,
                            data_settings: DataSettings | None = None, device: str = "cpu") -> Library:
    """``rospr library build``: embed the first ``n`` training inputs of every prompt of the bank
    ``prompts`` with the retriever (PyTorch, in process) and write the library ``out``."""
    bank = PromptBank.load(prompts)
    entries = library_entries(bank, data_settings or DataSettings(), n)
    from rospr.retriever import TorchEmbedder, load_encoder  # torch: only when a library is built

    encoder, tokenizer = load_encoder(retriever)
    return build_library(out, entries, TorchEmbedder(encoder, device=device), tokenizer, retriever_identity(retriever),
                         bank.content_hash(), (index or IndexConfig()).settings(), normalize, max_tokens)
