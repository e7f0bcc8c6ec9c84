"""The prompt bank of a run: its source prompts, their keys, and ``ensure_bank``.

``bank_spec`` resolves the source tasks into source prompts (one per (source dataset, hard prompt))
without rendering them; ``ensure_bank`` opens the bank, reuses every prompt it holds under the right
key and tunes the others. A bank tuned on other weights than the model's is refused (another model's
prompts are not stale, they are wrong), and so is an edited prompt file. ``tune_sources`` is
``rospr tune``.

Keys without rendering. A prompt's one key is its ``train_key``: the digest of the rendered training
rows and the settings. Rendering every template of the T0 mixture on every run costs more than a
cached run does, so each source prompt also has a ``source_key``: the digest of what its rows are
rendered from (``Task.training_identity``: the template's text, split, limit, the sha256 of the rows
file), the code that renders them (``render_code``: the task modules, the dataset catalog, the tuner's
target rule, jinja2's version), the training settings and the backbone's architecture fields. Tuning
records it in the prompt's entry (``origin.source_key``). A run renders only the prompts whose
recorded key differs, or that have none (an older bank, rows from the hub): those get the full check
(``train_key``), and the key is recorded when that check passes, so the next run renders nothing. The
same inputs give the same rendered rows, so equal source keys imply equal train keys; any change to
rows, template, settings or rendering code changes the source key and brings back the full check.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from rospr_harness.backends import Backend
from rospr_harness.config import RosprConfig, RunConfig, TuneConfig
from rospr_harness.method.tune_pool import trainer
from rospr_harness.tasks import expand, get_task
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr.artifacts import FileDigests, default_memo
from rospr.canonical import digest_chunks, digest_json
from rospr.softprompt import IDENTITY_KEYS, PromptBank, prompt_id
from rospr.tuning import Trainer, TuneJob, TuneSettings, tune_bank

log = logging.getLogger(__name__)


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


@dataclass
class Sources:
    """The run's source prompts against its bank: the source key of each (None: no cheap identity),
    and which of them the bank holds under that key (``fresh``: nothing to render)."""

    prompts: list[SourcePrompt]
    keys: dict[str, str | None]
    fresh: set[str]

    def jobs(self, ids: Iterable[str] | None = None) -> list[TuneJob]:
        """The rendered jobs of ``ids`` (all by default), in source order; a prompt without labelled rows has none."""
        wanted = None if ids is None else set(ids)
        return [j for p in self.prompts if (wanted is None or p.id in wanted) and (j := p.job(self.keys[p.id]))]


@dataclass
class BankSpec:
    """What ``ensure_bank`` needs: the bank folder, the backbone's identity, the training settings, the
    source prompts with their source keys, and the ``Trainer`` of the prompts to train (made only then)."""

    root: str
    backbone: dict
    settings: TuneSettings
    sources: Sources
    trainer: Callable[[], Trainer]


def bank_spec(config: RunConfig, backend: Backend, data_settings: DataSettings) -> BankSpec:
    """The run's ``BankSpec``: its source prompts (nothing rendered) and which of them ``rospr.prompt_bank``
    holds under their source key (or imported). Refuses a bank of another backbone."""
    rc, backbone = config.rospr, backend.identity
    tune = rc.tune.settings()
    prompts = source_prompts(rc, data_settings)
    keys = {p.id: p.source_key(tune, backbone) for p in prompts}
    bank = PromptBank.open(rc.prompt_bank, backbone)  # refuses a bank of another backbone; writes nothing
    fresh = {p.id for p in prompts if (entry := bank.entry(p.id)) is not None and (
        entry.get("imported_from") or (keys[p.id] and (entry.get("origin") or {}).get("source_key") == keys[p.id]))}

    def make_trainer() -> Trainer:
        tokenizer = backend.tokenizer if backend.model is not None else None
        return trainer(rc.tune, config.model.name_or_path, backend.model, tokenizer, config.model.device,
                       config.model.revision, config.ray)

    return BankSpec(rc.prompt_bank, backbone, tune, Sources(prompts, keys, fresh), make_trainer)


def ensure_bank(spec: BankSpec) -> tuple[PromptBank, list[str]]:
    """The bank with every source prompt that has rows: the fresh ones as they are, the others rendered
    and given to ``tune_bank`` (trained when their ``train_key`` differs). Returns the bank (every
    prompt's file checked) and the ids of the run's prompts, in source order."""
    sources = spec.sources
    todo = sources.jobs([p.id for p in sources.prompts if p.id not in sources.fresh])
    if todo:
        tune_bank(todo, spec.root, spec.settings, spec.backbone, spec.trainer())
    rendered = {job.id for job in todo}
    ids = [p.id for p in sources.prompts if p.id in sources.fresh or p.id in rendered]
    if not ids:
        raise TaskError("rospr.sources: no source prompt has training rows")
    bank = PromptBank.load(spec.root, spec.backbone, ids=ids)  # every prompt's file checked
    stale = {job.id: dict(job.origin or {}) for job in todo
             if (job.origin or {}).get("source_key") and (bank.entry(job.id).get("origin") or {}) != job.origin}
    if stale:  # passed the full check (reused under its train_key): record the key, so the next run renders nothing
        bank.record_origins(stale)
        log.info("%s: recorded the source key of %d prompts", spec.root, len(stale))
    return bank, ids


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
