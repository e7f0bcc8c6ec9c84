"""Before any unit: the prompt bank and the library a run's RoSPr methods need, and the retriever.

``prepare`` resolves the source tasks into source prompts (one per (source dataset, hard prompt)),
tunes the prompts the bank lacks, and builds the library unless one built from exactly the same
inputs is already there (``build_key``). Artifacts that were edited on disk are refused (delete them
to rebuild), never silently replaced; so are a bank tuned on other weights than the model's and a
library built with another retriever (weights or config) than the run's: those folders are the
user's, and another model's prompts are not stale, they are wrong. ``tune_sources`` and
``build_library_from_bank`` are ``rospr tune`` and ``rospr library build``.

Keys without rendering. A prompt's ``train_key`` and the library's ``build_key`` are digests of the
rendered training rows, and rendering every template of the T0 mixture on every run costs more than a
cached run does. So each source prompt also has a ``source_key``: the digest of what its rows are
rendered from (``Task.training_identity``: the template's text, split, limit, the sha256 of the rows
file), the code that renders them (``RENDER_CODE``: the task modules, the dataset catalog, the tuner's
target rule, jinja2's version), the training settings and the backbone's architecture fields. Tuning
records it in the prompt's bank entry (``origin.source_key``) and building the library records the
library's (``source_key`` of the manifest, over its prompts' keys and its settings). A run renders
only the prompts whose recorded key differs, or that have none (an older bank, rows from the hub):
those get the full check as before (``train_key``, ``build_key``), and the key is recorded when that
check passes, so the next run renders nothing. The same inputs give the same rendered rows, so equal
source keys imply equal train and build keys; any change to rows, template, settings or rendering
code changes the source key and brings back the full check.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rospr_harness.backends import Backend, create_embedder
from rospr_harness.config import (IndexConfig, RetrieverWeights, RosprConfig, RunConfig, TuneConfig, checkpoint_revision,
                                   retriever_name)
from rospr_harness.method.tune_pool import trainer
from rospr_harness.tasks import expand, get_task
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr.artifacts import ArtifactError, FileDigests, default_memo
from rospr.canonical import digest_chunks, digest_json
from rospr.errors import SettingError
from rospr.identity import retriever_identity
from rospr.library import (Library, LibraryEntry, build_key, build_library, key_texts, library_source_key,
                           load_library, read_source_key, record_source_key)
from rospr.retriever import weights_checkpoint
from rospr.softprompt import IDENTITY_KEYS, PromptBank, prompt_id
from rospr.tuning import TuneJob, TuneSettings, tune_bank

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


@functools.lru_cache(maxsize=1)
def render_code() -> str:
    """sha256 of the code and data that turn a source's rows into training pairs: the task modules
    (templates, row sources, catalog, generated tasks), the dataset catalog, ``rospr.data`` and
    ``rospr.tuning`` (the target rule) and jinja2's version. An edit to any of them makes every
    source key new: the prompts are rendered and checked in full once."""
    import jinja2

    import rospr.data
    import rospr.tuning
    import rospr_harness.tasks as tasks_pkg

    tasks = Path(tasks_pkg.__file__).parent
    files = [*sorted(tasks.glob("*.py")), tasks.parent / "data" / "datasets.yaml", Path(rospr.data.__file__),
             Path(rospr.tuning.__file__)]
    def chunks():  # one file in memory at a time
        yield f"jinja2 {jinja2.__version__}"
        for f in files:
            yield f"\0{f.name}\0"
            yield f.read_bytes()

    return digest_chunks(chunks())


@dataclass
class SourcePrompt:
    """One (source, template) a prompt is trained on, before its rows are rendered: ``identity`` is
    ``Task.training_identity`` with the rows file replaced by its sha256 (None: no cheap identity),
    ``job`` renders them (None: no labelled rows)."""

    task: Any
    source: str
    template: str
    split: str
    rows: int | None
    identity: dict | None = None
    _job: Any = field(default=False, repr=False)

    @property
    def id(self) -> str:
        return prompt_id(self.source, self.template)

    def source_key(self, settings: TuneSettings, backbone: dict) -> str | None:
        """The key of everything this prompt's training rows and training depend on, or None when the
        rows have no cheap identity (see the module docstring)."""
        if self.identity is None:
            return None
        return digest_json({"id": self.id, "rows": self.identity, "code": render_code(),
                            "settings": settings.training_fields(),
                            "backbone": {k: backbone.get(k) for k in IDENTITY_KEYS}})

    def job(self, source_key: str | None = None) -> TuneJob | None:
        """The tuning job: the training split rendered with the template, labelled rows only (the
        template's answer choices recorded when all rows share them); None, with a warning, when no
        row is labelled. ``source_key`` is recorded in the job's origin. Rendered once."""
        if self._job is False:
            data = self.task.load(self.template, split=self.split, limit=self.rows, training=True)
            examples = tuple(ex for ex in data.examples if ex.labelled or ex.target_text)
            if not examples:
                log.warning("source %s / %s: no labelled %s rows; no prompt trained", self.source, self.template,
                            self.split)
                self._job = None
            else:
                shared = examples[0].choices if all(ex.choices == examples[0].choices for ex in examples) else ()
                origin = {"split": self.split, "rows": self.rows, **({"source_key": source_key} if source_key else {})}
                self._job = TuneJob(self.source, self.template, tuple(shared), examples, origin)
        return self._job


def source_prompts(rc: RosprConfig, settings: DataSettings) -> list[SourcePrompt]:
    """Every (source, template) of ``rospr.sources``, in order, with its rows' identity; nothing is
    rendered (the rows files are hashed, remembered by stat in ``rospr.artifacts.default_memo``).
    Refuses (``TaskError``, naming ``rospr.sources``) an unknown source."""
    out = []
    digests = FileDigests(default_memo())
    for name in source_names(rc):
        try:
            task = get_task(name, settings)
        except TaskError as exc:
            raise TaskError(f"rospr.sources: {exc}") from None
        # every template trains a prompt (generation ones too: the loss is the target text's)
        for template in task.training_prompts():
            sp = SourcePrompt(task, name, template, rc.tune.source_split, rc.tune.source_rows)
            sp.identity = _rows_identity(task.training_identity(template, sp.split, sp.rows), digests)
            out.append(sp)
    digests.save()
    return out


def _rows_identity(identity: dict | None, digests: FileDigests) -> dict | None:
    """``identity`` with its ``rows_file`` replaced by that file's sha256 (None when it cannot be read)."""
    if identity is None or "rows_file" not in identity:
        return identity
    out = dict(identity)
    try:
        out["rows_sha256"] = digests.sha256(out.pop("rows_file"))
    except OSError:
        return None  # rendering will say what is wrong with the file
    return out


def tuning_jobs(rc: RosprConfig, settings: DataSettings, backbone: dict | None = None) -> list[TuneJob]:
    """One job per (source, template) (``SourcePrompt.job``), every one rendered; with ``backbone``
    (its identity) each job's origin records its source key. Refuses (``TaskError``, naming
    ``rospr.sources``) an unknown source and sources without rows."""
    tune = rc.tune.settings()
    prompts = source_prompts(rc, settings)
    jobs = [j for p in prompts if (j := p.job(p.source_key(tune, backbone) if backbone else None))]
    if not jobs:
        raise TaskError("rospr.sources: no source prompt has training rows")
    return jobs


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


def library_inputs(config: RunConfig, jobs: list[TuneJob], bank: PromptBank) -> tuple[list[LibraryEntry], dict, str, str]:
    """What the library of ``jobs``' prompts is built from: its entries (``job_key_texts`` of each
    job), the retriever's identity, the bank's hash of those prompts and the ``build_key`` (``rospr
    plan`` reads the same key to say whether the library is reused)."""
    rc = config.rospr
    identity = _retriever(config)
    entries = [LibraryEntry(job.id, job.source, job_key_texts(job, rc, config.seed)) for job in jobs]
    bank_hash = bank.content_hash([job.id for job in jobs])
    key = build_key(entries, bank_hash, identity, rc.index.settings(), rc.normalize, config.scoring.max_input_tokens,
                    rc.pooling)
    return entries, identity, bank_hash, key


def _retriever(config: RunConfig) -> dict:
    """The identity of the run's retriever (``rospr.identity.retriever_identity``): a weights file's is its digest."""
    name, r = retriever_name(config), config.rospr.retriever
    return retriever_identity(name, checkpoint_revision(config, name),
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


@dataclass
class _Sources:
    """The run's source prompts against its bank: the source key of each (None: no cheap identity),
    and which of them the bank holds under that key (``fresh``: nothing to render)."""

    prompts: list[SourcePrompt]
    keys: dict[str, str | None]
    fresh: set[str]

    def jobs(self, ids: Iterable[str] | None = None) -> list[TuneJob]:
        """The rendered jobs of ``ids`` (all by default), in source order; a prompt without labelled rows has none."""
        wanted = None if ids is None else set(ids)
        return [j for p in self.prompts if (wanted is None or p.id in wanted) and (j := p.job(self.keys[p.id]))]


def _sources(rc: RosprConfig, data_settings: DataSettings, bank_dir: str, backbone: dict) -> _Sources:
    """The source prompts and which of them ``bank_dir`` holds under their source key (or imported)."""
    tune = rc.tune.settings()
    prompts = source_prompts(rc, data_settings)
    keys = {p.id: p.source_key(tune, backbone) for p in prompts}
    fresh: set[str] = set()
    if (Path(bank_dir) / "manifest.json").exists():
        bank = PromptBank.open(bank_dir, backbone)  # refuses a bank of another backbone
        for p in prompts:
            entry = bank.entry(p.id)
            if entry is not None and (entry.get("imported_from") or
                                      (keys[p.id] and (entry.get("origin") or {}).get("source_key") == keys[p.id])):
                fresh.add(p.id)
    return _Sources(prompts, keys, fresh)


def _bank(config: RunConfig, backend: Backend, sources: _Sources) -> tuple[PromptBank, list[str]]:
    """The bank with every source prompt that has rows: the fresh ones as they are, the others rendered
    and given to ``tune_bank`` (trained when their ``train_key`` differs). Returns the bank (every
    prompt's file checked) and the ids of the run's prompts, in source order."""
    rc = config.rospr
    identity = backend.identity
    todo = sources.jobs([p.id for p in sources.prompts if p.id not in sources.fresh])
    if todo:
        tokenizer = backend.tokenizer if backend.model is not None else None
        train = trainer(rc.tune, config.model.name_or_path, backend.model, tokenizer, config.model.device,
                        config.model.revision)
        tune_bank(todo, rc.prompt_bank, rc.tune.settings(), identity, train)
    rendered = {job.id for job in todo}
    ids = [p.id for p in sources.prompts if p.id in sources.fresh or p.id in rendered]
    if not ids:
        raise TaskError("rospr.sources: no source prompt has training rows")
    bank = PromptBank.load(rc.prompt_bank, identity, ids=ids)  # every prompt's file checked
    stale = {job.id: dict(job.origin or {}) for job in todo
             if (job.origin or {}).get("source_key") and (bank.entry(job.id).get("origin") or {}) != job.origin}
    if stale:  # passed the full check (reused under its train_key): record the key, so the next run renders nothing
        bank.record_origins(stale)
        log.info("%s: recorded the source key of %d prompts", rc.prompt_bank, len(stale))
    return bank, ids


def _library(config: RunConfig, sources: _Sources, bank: PromptBank, ids: list[str], embedder, rtok,
             checkpoint: str) -> Library:
    """The library of the prompts ``ids``: reused when its recorded source key matches (nothing
    rendered) or else its ``build_key`` does (then the source key is recorded), else (re)built with
    the retriever ``embedder`` (loaded from ``checkpoint``).
    Refuses (``ArtifactError``) a library edited on disk and one built with another retriever."""
    rc = config.rospr
    identity = _retriever(config)
    index = rc.index.settings()
    bank_hash = bank.content_hash(ids)
    skey = library_source_key([(pid, bank.entry(pid)["source"], sources.keys.get(pid)) for pid in ids], rc.library_n,
                              bank_hash, identity, index, rc.normalize, config.scoring.max_input_tokens, rc.pooling,
                              rc.library_sample, config.seed)
    library = None
    if (Path(rc.library) / "manifest.json").exists():
        try:
            library = load_library(rc.library, identity)
        except ArtifactError as exc:
            raise ArtifactError(f"{exc} (rospr.library={rc.library!r}; delete it to rebuild)") from None
    if library is not None and skey is not None and read_source_key(library) == skey:
        log.info("reusing the library %s", rc.library)
        return library
    jobs = sources.jobs(ids)
    entries, identity, bank_hash, key = library_inputs(config, jobs, bank)
    if library is not None and library.build_key == key:
        log.info("reusing the library %s", rc.library)
        return record_source_key(library, skey) if skey is not None else library
    log.info("building the library %s (%d prompts)", rc.library, len(entries))
    library = build_library(rc.library, entries, _key_embedder(config, embedder, checkpoint), rtok, identity, bank_hash, index,
                            rc.normalize, config.scoring.max_input_tokens, config.scoring.batch_size, rc.pooling)
    return record_source_key(library, skey) if skey is not None else library


def _key_embedder(config: RunConfig, embedder, checkpoint: str):
    """The embedder of the library's keys: the run's, or for the padded pooling (the states at pad
    positions, which only PyTorch gives) the retriever ``checkpoint`` in PyTorch."""
    from rospr.retriever import TorchEmbedder

    if config.rospr.pooling != "padded" or isinstance(embedder, TorchEmbedder):
        return embedder
    from rospr.retriever import load_encoder  # torch: only when padded keys are embedded

    encoder, _ = load_encoder(checkpoint, revision=checkpoint_revision(config, checkpoint))
    return TorchEmbedder(encoder, device=config.model.device)


def prepare(config: RunConfig, backend: Backend, data_settings: DataSettings) -> RosprContext:
    """Tune the missing prompts, build (or reuse) the library, load the retriever on ``backend``'s
    kind; rendering only the source prompts whose source key the bank or library does not hold.
    Returns the context the run's units use."""
    rc = config.rospr
    checkpoint = retriever_checkpoint(config)  # a missing or wrong weights file is refused before any tuning
    sources = _sources(rc, data_settings, rc.prompt_bank, backend.identity)
    bank, ids = _bank(config, backend, sources)
    embedder, rtok = create_embedder(config, checkpoint)
    return RosprContext(rc, bank, _library(config, sources, bank, ids, embedder, rtok, checkpoint), embedder, rtok)


def tune_sources(model: str, sources: list[str] | str, out: str, tune: TuneConfig | None = None,
                 data_settings: DataSettings | None = None, on_done=None) -> PromptBank:
    """``rospr tune``: one soft prompt per (source, template) of ``sources`` into the bank ``out``,
    training only what the bank lacks. Returns the bank."""
    rc = RosprConfig(sources=sources, prompt_bank=out, tune=tune or TuneConfig())
    from rospr.backbone import load_backbone  # torch: only when prompts are tuned

    model_, tokenizer, identity = load_backbone(model)
    jobs = tuning_jobs(rc, data_settings or DataSettings(), identity.as_dict())
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
