"""What a run of a config would do and cost, worked out without running it (``rospr plan``).

``estimate_run(config)`` reads the config, the prompt bank, the library, the ONNX export cache and
the unit cache, and computes, tunes, exports, starts and writes nothing. It goes through the
runner's own steps so that its counts are the run's:

- the units: ``plan.plan_run`` (every (task, prompt) target and the methods), each target's rows
  rendered by its task and tokenised by ``rospr.scoring.encode_examples`` under the run's convention;
- the tuning jobs: ``method.bank.tuning_jobs``, each keyed by ``TuneJob.train_key`` against the bank
  (``PromptBank.has_valid``), their training pairs tokenised by the tuner's own encoder;
- the library: reused when its ``build_key`` equals ``method.library.library_inputs``' key;
- a unit cache hit: ``rospr_harness.cache.unit_key`` of the parts the driver keys units by, looked up
  with ``UnitCache.get`` (verified, read-only);
- the queries of a RoSPr target: ``unit.retrieval_queries``, leave-one-out included.

FLOPs come from ``rospr.flops`` (per matmul, from the model config; real tokens, padding left
out). VAR's scoring is an upper bound: it scores at most ``rospr.var_candidates`` prompts per
target, fewer when the retrieval finds fewer distinct prompts. Tuning is counted from the rows' own
lengths (``length_source`` "rows"): the tuner's batches replayed with each prompt's seed
(``rospr.tuning.step_batches``, ``group_by_length`` included), each micro-batch's encoder padded to
its longest input as the tuner pads it, the decoder on real target tokens (it runs packed). With
``lengths="maximum"`` every row counts at ``max_input_tokens`` / ``max_target_tokens`` instead: the
upper bound, what a row-less estimate would give.

The only file that may change is the digest memo of checkpoint weights (``rospr_export.digests``),
which every run keeps: hashing the weights to key the export is what a run does first.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rospr_harness.cache import key_parts, rospr_part, scorer_part, unit_key
from rospr_harness.config import RunConfig, retriever_name
from rospr_harness.method.bank import tuning_jobs
from rospr_harness.method.library import job_key_texts, library_inputs
from rospr_harness.method.prepare import RosprContext
from rospr_harness.method.unit import retrieval_queries
from rospr_harness.runner.plan import data_settings, plan_run
from rospr_harness.runner.session import unit_cache
from rospr.artifacts import ArtifactError
from rospr.errors import SettingError
from rospr.flops import Flops, ModelShape, encoder_forward, score_row, train_step
from rospr.retriever import PADDED_WIDTH
from rospr.scoring import encode_examples
from rospr.softprompt import PromptBank

log = logging.getLogger(__name__)

ESTIMATE_FORMAT = "rospr-plan"
ESTIMATE_VERSION = 1


@dataclass
class UnitEstimate:
    """One (task, prompt, method) unit: what it scores, its forward FLOPs, and whether the unit
    cache holds it (None: cannot be known before the run, e.g. the export or library is missing)."""

    task: str
    prompt: str
    method: str
    examples: int
    choices: int
    choice_tokens: int
    input_tokens: int
    prompt_tokens: int
    flops: float
    cached: bool | None


@dataclass
class TuningEstimate:
    """The source prompts: every job, those the bank holds (valid per ``train_key``) and those it lacks."""

    bank: str
    jobs: int
    reused: list[str]
    to_train: list[str]
    steps: int
    batch_size: int
    examples: int  # training examples of the jobs to train (before sampling)
    flops: Flops  # of the jobs to train
    flops_all: Flops  # of every job, as if the bank were empty
    checkpointing: bool
    micro_batch: int  # examples per forward/backward (each padded to its longest input)
    length_source: str = "rows"  # "rows": the rows' token lengths; "maximum": every row at the maximum
    group_by_length: bool = False
    input_tokens: int = 0  # of every job's steps: the rows' real input tokens ...
    padded_input_tokens: int = 0  # ... and with each micro-batch's padding (the encoder's work, P left out)


@dataclass
class TuningCost:
    """What one prompt's tuning computes (``tuning_cost``)."""

    flops: Flops
    input_tokens: int
    padded_input_tokens: int


@dataclass
class RetrievalEstimate:
    """The retriever's work: embedding the library's keys (only when it is built) and each RoSPr
    target's queries; VAR's scoring of the queries with its candidates (an upper bound)."""

    library: str
    library_status: str  # "reused", "built: <why>"
    library_keys: int  # keys to embed (0 when reused)
    key_flops: float
    targets: int  # targets with a RoSPr unit to compute
    queries: int
    query_flops: float
    var_targets: int
    var_candidates_max: int  # summed over targets
    var_rows_max: int
    var_flops_max: float


@dataclass
class Throughput:
    """FLOP/s used for the wall-time estimate, and where the figure came from."""

    tflops: float
    source: str


@dataclass
class RunEstimate:
    """What ``rospr run`` of a config would compute, reuse and cost (see the module docstring)."""

    config_hash: str
    model: str
    backend: str
    shape: ModelShape
    retriever_shape: ModelShape | None
    units: list[UnitEstimate]
    tuning: TuningEstimate | None
    retrieval: RetrievalEstimate | None
    onnx_export: str  # "not used", "reused <folder>", "exported on first use <folder>", ...
    unit_cache: str  # "disabled" or the folder
    throughput: Throughput
    notes: list[str] = field(default_factory=list)

    # -- totals -----------------------------------------------------------------------------
    @property
    def todo(self) -> list[UnitEstimate]:
        """The units the run computes (not found in the unit cache)."""
        return [u for u in self.units if not u.cached]

    @property
    def prepares(self) -> bool:
        """Whether the run tunes and builds the library: only with a unit to compute (as ``runner.compute``)."""
        return bool(self.todo) and self.tuning is not None

    def flops(self) -> dict[str, Flops]:
        """FLOPs per stage of what the run will compute (reused work left out)."""
        r = self.retrieval
        return {
            "tuning": self.tuning.flops if self.prepares else Flops(),
            "library": Flops(r.key_flops) if r and self.prepares else Flops(),
            "retrieval": Flops(r.query_flops) if r else Flops(),
            "var": Flops(r.var_flops_max) if r else Flops(),
            "scoring": Flops(sum(u.flops for u in self.todo)),
        }

    def seconds(self) -> dict[str, float]:
        """Wall seconds per stage at ``throughput`` (FLOPs / FLOP/s; no overheads)."""
        rate = self.throughput.tflops * 1e12
        return {stage: f.total / rate for stage, f in self.flops().items()}

    def totals(self) -> dict[str, Any]:
        todo = self.todo
        return {
            "units": len(self.units), "units_cached": sum(1 for u in self.units if u.cached),
            "units_to_compute": len(todo),
            "examples": sum(u.examples for u in self.units), "choices": sum(u.choices for u in self.units),
            "choice_tokens": sum(u.choice_tokens for u in self.units),
            "examples_to_score": sum(u.examples for u in todo),
            "flops": sum(f.total for f in self.flops().values()),
            "seconds": sum(self.seconds().values()),
        }

    def as_dict(self) -> dict[str, Any]:
        """The estimate as plain JSON (``rospr plan --json``)."""
        out = asdict(self)
        out["units"] = [asdict(u) for u in self.units]
        for name in ("flops", "flops_all"):
            if self.tuning:
                f = getattr(self.tuning, name)
                out["tuning"][name] = {"forward": f.forward, "backward": f.backward, "total": f.total}
        out["stages"] = {stage: {"forward": f.forward, "backward": f.backward, "total": f.total,
                                 "seconds": self.seconds()[stage]} for stage, f in self.flops().items()}
        out["totals"] = self.totals()
        return {"format": ESTIMATE_FORMAT, "version": ESTIMATE_VERSION, **out}


# -- what a checkpoint is, without its weights ---------------------------------------------------
def model_config(name_or_path: str, field_name: str) -> dict:
    """A checkpoint's config as ``PretrainedConfig.to_dict()`` (config.json only, no weights).
    Refuses (``ValueError`` naming ``field_name``) one that cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(name_or_path)).to_dict()
    except (OSError, ValueError) as exc:
        raise SettingError(f"{field_name}={name_or_path!r}: cannot read its config.json ({str(exc).splitlines()[0]}); "
                           "give a local checkpoint directory or a hub name reachable from here") from None


def weightless_identity(name_or_path: str) -> dict:
    """``ModelIdentity.as_dict()`` of a checkpoint as ``load_backbone`` would give it, from the
    config alone: the model is built on torch's meta device (shapes, no memory, no weights read)."""
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from rospr.identity import backbone_identity, read_config

    with torch.device("meta"):
        model = AutoModelForSeq2SeqLM.from_config(AutoConfig.from_pretrained(str(name_or_path)))
        head, shared = getattr(model, "lm_head", None), getattr(model, "shared", None)
        if (head is not None and shared is not None and head.weight is shared.weight
                and read_config(name_or_path).get("tie_word_embeddings") is False):
            # transformers 5 ties T5's head at construction; loading T0 keeps its own head: count it
            head.weight = torch.nn.Parameter(torch.empty_like(shared.weight))
    return backbone_identity(model, str(name_or_path)).as_dict()


def _export_folder(config: RunConfig, model: str | None, retriever: str | None):
    """(the on-demand export folder the run uses for ``model`` or ``retriever``, the ``export_sources``
    it checks that folder's manifest against): keyed and checked as
    ``rospr_harness.backends.onnxruntime_backend.ensure_export`` does, at the configured revisions, so the
    plan says "reused" only for an export the run will reuse."""
    from rospr_export.identity import cache_key, export_sources

    from rospr_harness.cache import cache_root
    from rospr_harness.config import checkpoint_revision

    revision = None if model is None else config.model.revision
    rrevision = None if retriever is None else checkpoint_revision(config, retriever)
    dtype = config.model.dtype if model is not None else "float32"
    sources = export_sources(model, retriever, revision, rrevision)
    key = cache_key(model, retriever, dtype, None, revision, rrevision, sources=sources)
    return cache_root("onnx", config.onnxruntime.cache_dir) / key, sources


def _export_status(config: RunConfig, retriever: str) -> str:
    """What the run does with the retriever's on-demand export: reuse it, or export it (again)."""
    from rospr_export.manifest import find_manifest, verify_export

    try:
        folder, sources = _export_folder(config, None, retriever)
    except ValueError as exc:  # e.g. a checkpoint folder without weights
        return f"retriever unknown ({exc})"
    if find_manifest(folder) is None:
        return f"retriever exported on first use into {folder}"
    try:
        verify_export(folder, sources=sources)
    except ArtifactError as exc:
        return f"retriever exported again on first use (the cached one fails its check: {exc})"
    return f"retriever reused {folder}"


def _scorer_identity(config: RunConfig) -> tuple[dict | None, str]:
    """(the backend's identity as the run will have it, or None when only the run can know it; what
    the ONNX export cache holds for it)."""
    name = config.model.name_or_path
    if config.backend == "torch":
        return weightless_identity(name), "not used (backend torch)"
    if config.backend == "triton":
        return None, ("not used (backend triton: the served model is asked for its identity, and checked against "
                      "model.name_or_path, at run time)")
    from rospr_export.manifest import find_manifest, verify_export

    from rospr_harness.backends.onnxruntime_backend import onnx_identity

    try:
        folder, sources = _export_folder(config, name, None)
    except ValueError as exc:  # e.g. a checkpoint folder without weights
        return None, f"unknown ({exc})"
    manifest = find_manifest(folder)
    if manifest is None:
        return None, f"exported on first use into {folder}"
    try:
        verify_export(folder, sources=sources)  # as the run's ensure_export checks it
    except ArtifactError as exc:
        return None, f"exported again on first use (the cached one fails its check: {exc})"
    return onnx_identity(config.model, config.onnxruntime, folder, manifest), f"reused {folder}"


# -- the parts ----------------------------------------------------------------------------------
def tuning_cost(shape: ModelShape, pairs: list, settings, seed: int) -> TuningCost:
    """What ``rospr.tuning.tune_prompt`` computes on the tokenised ``pairs`` with ``seed``: its own
    batches (``step_batches``), each micro-batch's encoder over its longest input plus P, the decoder
    over each row's own target (packed)."""
    from rospr.tuning import step_batches

    rows: Counter = Counter()  # (padded input, target) -> rows trained at that shape
    real = 0
    batches = step_batches(pairs, settings, seed)
    for _ in range(settings.steps):
        idx = next(batches)
        for start in range(0, len(idx), settings.micro_batch):
            part = idx[start: start + settings.micro_batch]
            width = max(len(pairs[i][0]) for i in part)
            rows.update((width, len(pairs[i][1])) for i in part)
            real += sum(len(pairs[i][0]) for i in part)
    flops = sum((train_step(shape, s, settings.prompt_length, t, settings.gradient_checkpointing) * n
                 for (s, t), n in rows.items()), Flops())
    return TuningCost(flops, real, sum(s * n for (s, _t), n in rows.items()))


def maximum_cost(shape: ModelShape, settings) -> TuningCost:
    """``tuning_cost`` with every row at ``max_input_tokens`` / ``max_target_tokens`` (the upper bound)."""
    rows = settings.steps * settings.batch_size
    step = train_step(shape, settings.max_input_tokens, settings.prompt_length, settings.max_target_tokens,
                      settings.gradient_checkpointing)
    return TuningCost(step * rows, rows * settings.max_input_tokens, rows * settings.max_input_tokens)


def _tuning(config: RunConfig, shape: ModelShape, tokenizer, identity: dict,
            lengths: str = "rows") -> tuple[TuningEstimate, list, PromptBank]:
    from rospr.tuning import _encode_pairs, prompt_seed  # the tuner's own tokenisation (truncation, target EOS)

    rc = config.rospr
    settings = rc.tune.settings()
    jobs = tuning_jobs(rc, data_settings(config.data), identity)  # with source keys: the library key a run computes
    bank = PromptBank.open(rc.prompt_bank, identity)  # reads the manifest if there is one; writes nothing
    reused, to_train, todo_flops, examples = [], [], Flops(), 0
    every = TuningCost(Flops(), 0, 0)
    for job in jobs:
        cost = (maximum_cost(shape, settings) if lengths == "maximum" else
                tuning_cost(shape, _encode_pairs(tokenizer, job.examples, settings), settings,
                            prompt_seed(settings, job.id)))
        every = TuningCost(every.flops + cost.flops, every.input_tokens + cost.input_tokens,
                           every.padded_input_tokens + cost.padded_input_tokens)
        if bank.has_valid(job.id, job.train_key(settings, identity)):
            reused.append(job.id)
        else:
            to_train.append(job.id)
            todo_flops = todo_flops + cost.flops
            examples += len(job.examples)
    est = TuningEstimate(rc.prompt_bank, len(jobs), reused, to_train, settings.steps, settings.batch_size, examples,
                         todo_flops, every.flops, settings.gradient_checkpointing, settings.micro_batch, lengths,
                         settings.group_by_length, every.input_tokens, every.padded_input_tokens)
    return est, jobs, bank


def _library_status(config: RunConfig, jobs: list, bank: PromptBank, to_train: list[str]):
    """(loaded library or None when it will be built, why). Refuses (``ArtifactError``) what the run
    refuses (``rospr_harness.method.library.ensure_library``): a library edited on disk, or built by another
    retriever (its config or weights)."""
    from rospr.library import load_library

    path = Path(config.rospr.library)
    if not (path / "manifest.json").exists():
        return None, "built: none at this path"
    _entries, identity, _bank_hash, key = library_inputs(config, jobs, bank)
    try:
        library = load_library(path, identity)
    except ArtifactError as exc:
        raise ArtifactError(f"{exc} (rospr.library={config.rospr.library!r}; delete it to rebuild)") from None
    if to_train:
        return None, f"built: {len(to_train)} bank prompts are trained first"
    if library.build_key != key:
        return None, "built: stale for this bank, retriever or its settings"
    return library, "reused"


def _retriever_tokens(tokenizer, texts: list[str], max_tokens: int) -> list[int]:
    """Token counts of the retriever's inputs, truncated as ``rospr.retriever.embed_texts`` does."""
    if not texts:
        return []
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [min(len(x), max_tokens) or 1 for x in ids]


def _row_flops(shape: ModelShape, encoded, prompt_tokens: int) -> float:
    return sum(score_row(shape, len(e.input_ids), prompt_tokens, [len(c) for c in e.choice_ids]) for e in encoded)


def measure_tflops(shape: ModelShape, tokens: int = 2048, seconds: float = 1.0) -> Throughput:
    """A GEMM of the model's feed-forward shape ([tokens, d_model] x [d_model, d_ff], float32, on
    this machine's CPU with torch) timed for about ``seconds``: the FLOP/s a dense layer gets here."""
    import torch

    a = torch.randn(tokens, shape.d_model)
    b = torch.randn(shape.d_model, shape.d_ff)
    torch.mm(a, b)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        n += 1
    rate = 2 * tokens * shape.d_model * shape.d_ff * n / (time.perf_counter() - start)
    return Throughput(rate / 1e12, f"measured here: float32 GEMM [{tokens}x{shape.d_model}]x[{shape.d_model}x"
                                   f"{shape.d_ff}] on the CPU ({torch.get_num_threads()} threads), {n} runs")


# -- the estimate -------------------------------------------------------------------------------
@dataclass
class _RosprPlan:
    """What the RoSPr methods of a plan bring to the estimate: tuning, the retrieval counts so far,
    the driver's context (for its queries and leave-one-out), the units' cache part and the retriever."""

    tuning: TuningEstimate
    retrieval: RetrievalEstimate
    ctx: RosprContext
    rospr: dict | None
    shape: ModelShape
    tokenizer: Any
    export: str


def _rospr_plan(config: RunConfig, shape: ModelShape, tokenizer, identity: dict | None,
                scorer: dict | None, lengths: str = "rows") -> _RosprPlan:
    """The bank's tuning jobs, the library's status and key FLOPs, and the retriever of a RoSPr run."""
    from rospr.tokenizer import load_tokenizer

    rc, name = config.rospr, config.model.name_or_path
    tuning, jobs, bank = _tuning(config, shape, tokenizer, identity or weightless_identity(name), lengths)
    library, status = _library_status(config, jobs, bank, tuning.to_train)
    retriever = retriever_name(config)
    retriever_shape = ModelShape.from_config(model_config(retriever, "rospr.retriever"), f"{retriever}/config.json")
    rtok = load_tokenizer(retriever)
    keys = [] if library is not None else [t for job in jobs for t in job_key_texts(job, rc, config.seed)]
    key_tokens = ([PADDED_WIDTH] * len(keys) if rc.pooling == "padded"
                  else _retriever_tokens(rtok, keys, config.scoring.max_input_tokens))
    key_flops = sum(encoder_forward(retriever_shape, n) for n in key_tokens)
    # the queries and leave-one-out of the driver, on the sources the library is built from
    view = SimpleNamespace(sources=[job.source for job in jobs])
    ctx = RosprContext(rc, bank, view, None, rtok)  # type: ignore[arg-type]
    retrieval = RetrievalEstimate(rc.library, status, len(keys), key_flops, 0, 0, 0.0, 0, 0, 0, 0.0)
    rospr = rospr_part(library, retriever, rc, config.seed) if library is not None and scorer is not None else None
    export = "; " + _export_status(config, retriever) if config.backend == "onnxruntime" else ""
    return _RosprPlan(tuning, retrieval, ctx, rospr, retriever_shape, rtok, export)


def _target_units(config: RunConfig, spec, data, encoded, shape: ModelShape, methods, cache, scorer: dict | None,
                  rp: _RosprPlan | None) -> tuple[list[UnitEstimate], list]:
    """One target's unit estimates (with their cache status where it can be known) and the methods
    it still has to compute."""
    conv = config.scoring.convention()
    counts = dict(examples=len(encoded), choices=sum(len(e.choice_ids) for e in encoded),
                  choice_tokens=sum(len(c) for e in encoded for c in e.choice_ids),
                  input_tokens=sum(len(e.input_ids) for e in encoded))
    units, todo = [], []
    rospr = rp.rospr if rp is not None else None
    for method in methods:
        p = config.rospr.tune.prompt_length if method.retrieve else 0
        cached = None
        if cache is not None and data.content_hash and scorer is not None and (rospr or not method.retrieve):
            key = unit_key(key_parts(scorer, spec.task_name, spec.prompt, data.content_hash, conv, method,
                                     rospr if method.retrieve else None))
            cached = cache.get(key) is not None
        elif cache is not None and method.retrieve and rp is not None and rp.retrieval.library_status != "reused":
            cached = False  # a new library: new keys
        units.append(UnitEstimate(spec.task_name, spec.prompt, method.name, prompt_tokens=p,
                                  flops=_row_flops(shape, encoded, p), cached=cached, **counts))
        if not cached:
            todo.append(method)
    return units, todo


def _count_retrieval(config: RunConfig, spec, data, todo, shape: ModelShape, tokenizer, rp: _RosprPlan) -> None:
    """Add one target's queries, and its VAR candidates and rows at most, to ``rp.retrieval``."""
    retrieval, rc = rp.retrieval, config.rospr
    queries, exclude = retrieval_queries(rp.ctx, config.seed, spec.task_name, spec.prompt, data.examples)
    retrieval.targets += 1
    retrieval.queries += len(queries)
    retrieval.query_flops += sum(encoder_forward(rp.shape, n) for n in
                                 _retriever_tokens(rp.tokenizer, [q.input_text for q in queries],
                                                   config.scoring.max_input_tokens))
    if any(m.var for m in todo):
        eligible = sum(1 for s in rp.ctx.library.sources if s not in set(exclude))
        k = min(rc.var_candidates, eligible, len(queries) * rc.top_n)
        retrieval.var_targets += 1
        retrieval.var_candidates_max += k
        retrieval.var_rows_max += k * len(queries)
        retrieval.var_flops_max += k * _row_flops(shape, encode_examples(tokenizer, queries, config.scoring.convention()),
                                                  rc.tune.prompt_length)


LENGTH_SOURCES = ("rows", "maximum")


def estimate_run(config: RunConfig, tflops: float | None = None, measure_s: float = 1.0,
                 lengths: str = "rows") -> RunEstimate:
    """What ``rospr run`` of ``config`` would compute, reuse and cost, running none of it.

    ``tflops``: the throughput (TFLOP/s) for the time estimate; None measures one here
    (``measure_tflops``, about ``measure_s`` seconds). ``lengths``: the tuning rows' token lengths
    ("rows") or every row at the maximum ("maximum"). Refuses what the run refuses before any work
    (unknown tasks or prompts, sources without rows, an edited bank or library: their errors), and
    (``SettingError``) a model whose config cannot be read, a non-positive ``tflops`` or another ``lengths``.
    """
    if tflops is not None and not tflops > 0:
        raise SettingError(f"--tflops {tflops}: give a positive throughput in TFLOP/s")
    if lengths not in LENGTH_SOURCES:
        raise SettingError(f"--lengths {lengths!r}: choose {' or '.join(LENGTH_SOURCES)}")
    from rospr.tokenizer import load_tokenizer

    name = config.model.name_or_path
    shape = ModelShape.from_config(model_config(name, "model.name_or_path"), f"{name}/config.json")
    tokenizer = load_tokenizer(name)
    plan = plan_run(config)
    identity, export = _scorer_identity(config)
    cache = unit_cache(config.cache)
    scorer = scorer_part(config.backend, dict(identity), name) if cache is not None and identity else None
    rp = _rospr_plan(config, shape, tokenizer, identity, scorer, lengths) if plan.retrieves else None
    units: list[UnitEstimate] = []
    for spec in plan.specs:
        data = spec.load()
        encoded = encode_examples(tokenizer, data.examples, config.scoring.convention())
        target_units, todo = _target_units(config, spec, data, encoded, shape, plan.methods, cache, scorer, rp)
        units += target_units
        if rp is not None and data.examples and any(m.retrieve for m in todo):
            _count_retrieval(config, spec, data, todo, shape, tokenizer, rp)
    notes = []
    if cache is not None and scorer is None:
        notes.append("unit cache hits cannot be known before the run: the scorer's identity needs "
                     + ("the ONNX export" if config.backend == "onnxruntime" else "the Triton server"))
    throughput = Throughput(tflops, "given (--tflops)") if tflops is not None else measure_tflops(shape, seconds=measure_s)
    return RunEstimate(config.content_hash(), name, config.backend, shape, rp.shape if rp else None, units,
                       rp.tuning if rp else None, rp.retrieval if rp else None, export + (rp.export if rp else ""),
                       str(cache.root) if cache is not None else "disabled", throughput, notes)
