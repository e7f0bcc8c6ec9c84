"""The library of a run: its one key, and ``ensure_library``.

``library_spec`` names everything the library of the run's prompts is built from and computes its one
key (``rospr.library.build_key``) once: the prompts, the bank's hash of them, the retriever's identity
and the settings. A prompt's texts enter the key as their ``texts_key`` when its source key is known
(``rospr_harness.method.bank``: what its rows are rendered from) with the count and draw of its texts,
so an unchanged run renders nothing; else as the digest of its rendered texts. ``ensure_library``
opens the library at ``rospr.library`` and reuses it when its key is the spec's, else builds and
publishes it (``rospr.library.build_library``). A library edited on disk or built with another
retriever (weights or config) is refused, never silently replaced. ``build_library_from_bank`` is
``rospr library build``.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from rospr_harness.config import IndexConfig, RetrieverWeights, RosprConfig, RunConfig, checkpoint_revision, retriever_name
from rospr_harness.provenance import hub_revision
from rospr_harness.tasks import get_task
from rospr_harness.tasks.base import DataSettings
from rospr.artifacts import ArtifactError
from rospr.canonical import digest_json
from rospr.errors import SettingError
from rospr.identity import retriever_identity
from rospr.library import IndexSettings, Library, LibraryEntry, build_key, build_library, key_texts, load_library
from rospr.retriever import Embedder, weights_checkpoint
from rospr.softprompt import PromptBank
from rospr.tuning import TuneJob

log = logging.getLogger(__name__)


def texts_key(source_key: str | None, rc: RosprConfig, seed: int) -> str | None:
    """What a prompt's library texts are, told without them: its source key with how many are kept and
    how they are drawn (``key_texts``); None without a source key (the texts' digest stands instead)."""
    if source_key is None:
        return None
    return digest_json({"source_key": source_key, "n": rc.library_n, "sample": rc.library_sample, "seed": seed})


def job_entries(jobs: Sequence[TuneJob], rc: RosprConfig, seed: int) -> list[LibraryEntry]:
    """The library entries of rendered ``jobs``: their key texts, and their ``texts_key`` when the job's
    origin records a source key."""
    return [LibraryEntry(job.id, job.source, job_key_texts(job, rc, seed),
                         texts_key((job.origin or {}).get("source_key"), rc, seed)) for job in jobs]


@dataclass(frozen=True)
class LibrarySpec:
    """What ``ensure_library`` needs: the folder, the entries (texts not rendered where ``texts_key``
    stands for them), the bank's hash, the retriever's identity, the settings, ``key`` (computed once),
    ``render`` (the entries with their texts) and ``key_embedder`` (the embedder of the keys)."""

    root: str
    entries: tuple[LibraryEntry, ...]
    bank_hash: str
    retriever: dict
    index: IndexSettings
    normalize: bool
    max_tokens: int
    pooling: str
    batch_size: int
    render: Callable[[], list[LibraryEntry]]
    key_embedder: Callable[[Embedder], Embedder]
    key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", build_key(self.entries, self.bank_hash, self.retriever, self.index,
                                                  self.normalize, self.max_tokens, self.pooling))


def library_spec(config: RunConfig, bank: PromptBank, ids: list[str], source_keys: dict[str, str | None],
                 jobs: Callable[[list[str]], list[TuneJob]], checkpoint: str) -> LibrarySpec:
    """The ``LibrarySpec`` of the run's prompts ``ids`` of ``bank``: ``source_keys`` their source keys
    (None: rendered now, their texts' digest in the key), ``jobs`` renders them, ``checkpoint`` the
    retriever's (for the keys of the padded pooling)."""
    rc, seed = config.rospr, config.seed
    entries = [LibraryEntry(pid, bank.entry(pid)["source"], texts_key=texts_key(source_keys.get(pid), rc, seed))
               for pid in ids]
    if any(e.texts_key is None for e in entries):
        entries = job_entries(jobs(ids), rc, seed)
    return LibrarySpec(rc.library, tuple(entries), bank.content_hash(ids), retriever_of(config), rc.index.settings(),
                       rc.normalize, config.scoring.max_input_tokens, rc.pooling, config.scoring.batch_size,
                       lambda: job_entries(jobs(ids), rc, seed), functools.partial(_key_embedder, config, checkpoint))


def library_inputs(config: RunConfig, jobs: list[TuneJob], bank: PromptBank) -> tuple[list[LibraryEntry], dict, str, str]:
    """What the library of ``jobs``' prompts is built from: its entries, the retriever's identity, the
    bank's hash of those prompts and the one key (``rospr plan`` reads it to say whether the library
    is reused)."""
    rc = config.rospr
    entries = job_entries(jobs, rc, config.seed)
    identity, bank_hash = retriever_of(config), bank.content_hash([job.id for job in jobs])
    key = build_key(entries, bank_hash, identity, rc.index.settings(), rc.normalize, config.scoring.max_input_tokens,
                    rc.pooling)
    return entries, identity, bank_hash, key


def ensure_library(spec: LibrarySpec, embedder: Embedder, tokenizer) -> Library:
    """The library of ``spec``: the one at ``spec.root`` when its key is ``spec.key``, else built (the
    texts rendered, keys embedded by ``spec.key_embedder(embedder)``) and published there. Refuses
    (``ArtifactError``) a library edited on disk and one built with another retriever."""
    library = None
    if (Path(spec.root) / "manifest.json").exists():
        try:
            library = load_library(spec.root, spec.retriever)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} (rospr.library={spec.root!r}; delete it to rebuild)") from None
    if library is not None and library.build_key == spec.key:
        log.info("reusing the library %s", spec.root)
        return library
    entries = spec.render()
    log.info("building the library %s (%d prompts)", spec.root, len(entries))
    return build_library(spec.root, entries, spec.key_embedder(embedder), tokenizer, spec.retriever, spec.bank_hash,
                         spec.index, spec.normalize, spec.max_tokens, spec.batch_size, spec.pooling)


def retriever_of(config: RunConfig) -> dict:
    """The identity of the run's retriever (``rospr.identity.retriever_identity``): a weights file's is its digest;
    a revision only where one applies (``provenance.hub_revision``: a local folder has none)."""
    name, r = retriever_name(config), config.rospr.retriever
    return retriever_identity(name, hub_revision(name, checkpoint_revision(config, name)),
                              weights=_weights_file(r) if isinstance(r, RetrieverWeights) else None)


def _weights_file(r: RetrieverWeights) -> Path:
    """``rospr.retriever.weights`` as a path. Refuses (``SettingError``, one line) a file that is not
    there, saying where the authors publish T0-small and how to use the backbone's encoder instead."""
    if not Path(r.weights).is_file():
        raise SettingError(f"rospr.retriever.weights={r.weights!r}: no such file. T0-small is the authors' own "
                           "retriever, not a hub model: the paper publishes its checkpoints at "
                           "github.com/seonghyeonye/RoSPr (their lab's code reads rospr/T0_small.pt; docs/method.md, "
                           "'Retriever'); give its path, or set rospr.retriever: null to retrieve with the backbone's "
                           "own encoder")
    return Path(r.weights)


def retriever_checkpoint(config: RunConfig) -> str:
    """The checkpoint the run's retriever is loaded (and exported) from: ``rospr.retriever``, the
    backbone when it is null, or for a weights file its encoder written as a checkpoint folder under
    the user cache (``rospr.retriever.weights_checkpoint``; once, reused). Refuses (``SettingError``) a
    missing weights file (``_weights_file``) and one that is not the base's encoder."""
    r = config.rospr.retriever
    if not isinstance(r, RetrieverWeights):
        return retriever_name(config)
    return str(weights_checkpoint(r.base, _weights_file(r), config.rospr.retriever_revision))


def _key_embedder(config: RunConfig, checkpoint: str, embedder: Embedder) -> Embedder:
    """The embedder of the library's keys: the run's, or for the padded pooling (the states at pad
    positions, which only PyTorch gives) the retriever ``checkpoint`` in PyTorch."""
    from rospr.retriever import TorchEmbedder

    if config.rospr.pooling != "padded" or isinstance(embedder, TorchEmbedder):
        return embedder
    from rospr.retriever import load_encoder  # torch: only when padded keys are embedded

    encoder, _ = load_encoder(checkpoint, revision=checkpoint_revision(config, checkpoint))
    return TorchEmbedder(encoder, device=config.model.device)


def library_entries(bank: PromptBank, settings: DataSettings, n: int, sample: str = "first",
                    seed: int = 0) -> list[LibraryEntry]:
    """The library entries of every prompt of ``bank``: ``n`` training inputs of each (``key_texts``),
    re-rendered from its source task with the split and rows recorded when it was tuned."""
    entries = []
    for entry in bank.entries:
        origin = entry.get("origin") or {}
        task = get_task(entry["source"], settings)
        data = task.load(entry["template"], split=origin.get("split", "train"), limit=origin.get("rows"),
                         training=True)
        texts = [ex.input_text for ex in data.examples if ex.labelled or ex.target_text]
        entries.append(LibraryEntry(entry["id"], entry["source"], key_texts(texts, n, sample, seed, entry["source"])))
    return entries


def job_key_texts(job: TuneJob, rc: RosprConfig, seed: int) -> tuple[str, ...]:
    """The library's key texts of a tuning job: ``rospr.library_n`` of its inputs, ``rospr.library_sample``'s way."""
    return key_texts([ex.input_text for ex in job.examples], rc.library_n, rc.library_sample, seed, job.source)


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
