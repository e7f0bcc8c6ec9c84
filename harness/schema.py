"""The results file's schema: one documented, versioned set of pydantic models, and their one serialiser.

The schema is the models below: ``ResultsFile`` (``results.json``: ``provenance``, ``config``,
``units``, ``tasks``, ``overall``, ``statistics``, ``execution``) with ``Provenance``, ``UnitResult``
(and its ``RetrievalLog``), ``TaskSummary``, ``Statistics``, ``Execution`` (and its ``RunTime``), and
``Record``, one line of a unit's records file; the comments on the fields say what the less obvious
ones hold and the schema version that added them. ``rospr schema`` prints the JSON schema.
``SCHEMA_VERSION`` is "MAJOR.MINOR": a reader refuses another major version and takes every 1.x file
(the keys added since are optional, and a resumed or verified run recomputes them from the records).

The serialiser: ``write_results`` / ``read_results`` for results.json, ``records_text`` /
``parse_records`` for a records file, each record checked on the way back (``record_scores``: the
stored metric agrees with the prediction). Every number written is finite (``write_results`` and
``records_text`` refuse NaN and infinities, naming the field). The figures derived from the records
(``n``, ``accuracy``, spreads, a task's summary) are ``rospr_harness.figures``; where a unit's records
file may lie, and how it is read back verified, is ``rospr_harness.runfiles``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

from rospr.artifacts import atomic_write_bytes, json_document, json_lines
from rospr.data import Example, credit
from rospr.errors import RosprError
from rospr_harness.stats import ALPHA, N_BOOT as STATS_N_BOOT

STATS_LEVEL = 1 - ALPHA

SCHEMA_VERSION = "1.4"

ExecutorName = Literal["in_process", "ray"]
VarRule = Literal["choices", "positions"]  # rospr.selection.choice_counts
RetryKind = Literal["score", "retrieve"]  # the call a Ray actor died under


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Sparse(Model):
    """A model whose ``OMITTED_WHEN_NONE`` keys are left out of its JSON when None (as they have been
    written since they were added: optional keys, not nulls)."""

    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler):
        data = handler(self)
        for key in self.OMITTED_WHEN_NONE:
            if data.get(key, 0) is None:
                del data[key]
        return data


class Record(Model):
    """One example of a unit's records file (one JSON object per line, fields in this order)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    index: int
    input: str
    choices: list[str]
    scores: list[float]  # summed log-probability per choice
    prediction: int
    gold: int | None  # the label's index; null for BIG-bench (target_scores) and unlabelled rows
    target_scores: list[int | float] | None  # BIG-bench, as the task file gives them
    tied: list[int] | None = None  # the choices tied at the top with the prediction, when several
    score: float  # the metric value of the prediction (``metric``)

    @classmethod
    def of(cls, example: Example, encoded, scores, convention) -> "Record":
        """The record of ``example`` (encoded as ``encoded``) given its choice ``scores``."""
        from rospr.scoring import rank_classify, tied_choices

        tied = tied_choices(scores, encoded, convention)  # [prediction] when there is no tie
        return cls(index=example.index, input=example.input_text, choices=list(example.choices),
                   scores=[float(x) for x in scores], prediction=rank_classify(scores, encoded, convention),
                   gold=example.label,
                   target_scores=list(example.target_scores) if example.target_scores is not None else None,
                   tied=tied if len(tied) > 1 else None, score=example.credit(tied))

    def metric(self) -> float:
        """The metric value of the prediction, recomputed (``rospr.data.credit``, as ``Example.score_of``).
        Refuses (``ValueError``) a prediction or a tie that is not a choice, and a record without gold."""
        n = len(self.choices)
        if not 0 <= self.prediction < n:
            raise ValueError(f"prediction {self.prediction!r} is not the index of one of {n} choices")
        if self.tied is not None and (len(self.tied) < 2 or self.prediction not in self.tied
                                      or len(set(self.tied)) != len(self.tied)
                                      or any(not 0 <= i < n for i in self.tied)):
            raise ValueError(f"field 'tied' {self.tied!r} is not a list of two or more choice indices with the "
                             "prediction")
        if self.target_scores is not None and len(self.target_scores) != n:
            raise ValueError(f"{len(self.target_scores)} target_scores for {n} choices")
        if self.gold is not None and not 0 <= self.gold < n:
            raise ValueError(f"gold {self.gold} is outside the {n} choices")
        return credit(self.tied or [self.prediction], self.gold, self.target_scores)

    def line(self) -> str:
        """The record's line of a records file (no newline): the one serialiser of records."""
        return json.dumps(self.model_dump(), ensure_ascii=False, allow_nan=False)


class LogCandidate(Sparse):
    """A candidate prompt in a unit's retrieval log, with its evidence (the VAR fields for +var only)."""

    OMITTED_WHEN_NONE = ("distribution", "variance", "var_score")

    id: str
    source: str | None
    frequency: int
    similarity: float  # summed over the queries' hits
    distribution: list[float] | None = None
    variance: float | None = None
    var_score: float | None = None


class RetrievalLog(Sparse):
    """Why a RoSPr unit got its soft prompt (``units[].retrieval``, schema 1.1)."""

    OMITTED_WHEN_NONE = ("note",)

    method: str
    queries: list[int]  # row indices of the Q queries
    hits: int
    excluded: list[str]  # prompt ids left out (leave-one-out)
    library: str  # the library's content hash
    candidates: list[LogCandidate]  # the most frequent
    n_candidates: int
    var_rule: VarRule | None  # +var: how the predictions were counted; else null
    chosen: list[str]
    weights: list[float]
    note: str | None = None  # e.g. no candidate: scored without a soft prompt


class UnitResult(Model):
    task: str
    prompt: str
    method: str
    n: int
    accuracy: float | None  # None when no example of the unit applies (n == 0)
    skipped: int = 0
    skipped_reasons: dict[str, int] = {}  # why rows were skipped: reason -> rows (optional key within 1.2)
    truncated: int = 0
    records: str
    content_hash: str = ""
    wall_s: float = 0.0
    retrieval: RetrievalLog | None = None  # RoSPr methods: the retrieval log (schema 1.1)
    sha256: str = ""  # of the records file (schema 1.2)
    cached: bool = False  # reused from the unit cache (schema 1.2)
    stderr: float | None = None  # of the accuracy: sample (ddof 1), lm-eval's acc_stderr (schema 1.3)
    ci_low: float | None = None  # bootstrap interval of the accuracy over rows (schema 1.3)
    ci_high: float | None = None


class TaskSummary(Model):
    task: str
    method: str
    n_prompts: int
    mean: float
    median: float
    min: float
    max: float
    stderr: float | None = None  # of the mean over prompts, linearised over rows (schema 1.3)
    ci_low: float | None = None  # bootstrap interval of the mean, rows resampled for all prompts (schema 1.3)
    ci_high: float | None = None


class Provenance(Model):
    git_revision: str | None
    git_dirty: bool | None
    package_versions: dict[str, str]
    config_hash: str
    model: dict[str, Any]
    backend: str
    seed: int
    host: dict[str, Any]
    started_at: str
    wall_s: float
    command: list[str] = []
    overrides: list[str] = []  # the --set overrides of the config, shortcuts (--tasks ...) as their --set (schema 1.3)
    model_revision: str | None = None
    retriever_revision: str | None = None
    # RoSPr runs: the retriever's identity as the library records it (name, config_hash, dim, the digest of
    # its weights; base for a weights file) (schema 1.4), with, where recorded, the device classes its
    # library's keys were embedded on (library_device) and its bank's prompts tuned on (bank_devices)
    retriever: dict[str, Any] | None = None


class StageSeconds(Model):
    """Seconds per driver stage (``rospr_harness.runner.stages``; disjoint, in this order)."""

    setup: float
    prepare: float
    executor: float
    load: float
    cache: float
    tokenise: float
    select: float
    wait: float
    write: float


class WorkSeconds(Model):
    """The workers' seconds (summed over actors on Ray); ``model``: inside the scorer's session calls."""

    retrieval: float
    var: float
    scoring: float
    model: float


class BatchCounts(Model):
    var: int
    scoring: int


class RunTime(Model):
    """``execution.time``: where the run's time went (``rospr_harness.runner.stages.Stages.summary``)."""

    wall_s: float  # run start to the last write
    scorers: int
    stages_s: StageSeconds
    other_s: float  # the wall time outside the stages: plan, run directory, driver loop
    work_s: WorkSeconds
    model_share: float | None  # model / (wall x scorers); None for a zero wall time
    scoring_examples: int
    batches: BatchCounts
    startup_s: float | None  # process start to run start (interpreter, imports); None where unknown
    first_batch_s: float | None  # process start to the first scored batch back; None: no batch


class NodeLoad(Model):
    ip: str | None
    batches: int


class Retry(Model):
    """A batch re-run after its actor died or its server went away (the first 100 of a run)."""

    kind: RetryKind
    actor: int | None
    server: str | None
    attempt: int
    reason: str


class Execution(Sparse):
    """``execution``: how the run was executed; it never changes a number of the results (schema 1.2).
    The keys after ``cached`` are written only where they apply (omitted, never null)."""

    OMITTED_WHEN_NONE = ("driver_s", "scorers", "started", "resubmitted", "actor_restarts", "actors_lost", "nodes",
                         "retried", "servers", "servers_lost", "time")

    executor: ExecutorName
    resumed: int = 0  # units kept from an interrupted run
    computed: int = 0
    cached: int = 0  # units reused from the unit cache
    driver_s: float | None = None  # the streaming itself (actors started, bank and library ready)
    scorers: int | None = None  # scoring workers (0: none was started)
    started: bool | None = None  # false: nothing to compute, no executor (or Ray) started
    resubmitted: int | None = None  # Ray: batches re-run after their actor died
    actor_restarts: int | None = None
    actors_lost: int | None = None
    nodes: dict[str, NodeLoad] | None = None  # Ray node id -> its ip and the batches it scored
    retried: list[Retry] | None = None
    servers: dict[str, int] | None = None  # Triton url -> batches it scored
    servers_lost: dict[str, str] | None = None  # Triton url -> why it was taken out
    time: RunTime | None = None

    def updated(self, **fields: Any) -> "Execution":
        """This execution with ``fields`` set (validated: an executor's ``stats()``, the driver's counts)."""
        return Execution.model_validate({**{k: v for k, v in self if v is not None}, **fields})


class Statistics(Model):
    """How ``stderr`` and ``ci_low``/``ci_high`` of units and tasks are computed (``rospr_harness.stats``)."""

    stderr: str = "sample"  # standard deviation with ddof 1 over sqrt(n): lm-eval's acc_stderr
    bootstrap_replicates: int = STATS_N_BOOT
    interval: float = STATS_LEVEL  # coverage of the percentile interval
    seed: str = "sha256 of the unit's task, prompt and method (a task's: task and method)"


class ResultsFile(Model):
    schema_version: str = SCHEMA_VERSION
    provenance: Provenance
    config: dict[str, Any]
    units: list[UnitResult]
    tasks: list[TaskSummary]
    overall: dict[str, float]
    execution: Execution | None = None  # schema 1.2
    statistics: Statistics | None = None  # schema 1.3


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so a reader sees the old file or the new one, never a part."""
    atomic_write_bytes(Path(path), text.encode("utf-8"))


def records_text(records: Sequence[Record], where: str = "a unit") -> str:
    """A records file's contents: one ``Record.line`` per line. Refuses (``RecordsError`` naming
    ``where``, the record and the field) a NaN or infinite number (a backend's non-finite
    log-probability): JSON has none, and the prediction of a NaN is arbitrary."""
    for i, r in enumerate(records):
        bad = non_finite(r.model_dump())
        if bad:
            raise RecordsError(f"{where}: record {i} (row {r.index}): field {bad} is not a finite number "
                               "(the backend returned NaN or an infinite log-probability), so the unit cannot be "
                               "scored; check the model and its export (dtype), or report it")
    return "".join(r.line() + "\n" for r in records)


def read_records(path: Path) -> list[Record]:
    """The records of a records file (``parse_records``)."""
    return parse_records(Path(path).read_bytes(), path)


def parse_records(data: bytes, where: str | Path) -> list[Record]:
    """The records of a records file's bytes. Refuses (``RecordsError``) a line that is not a record."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordsError(f"{where}: not UTF-8 text (byte {exc.start}); rerun the unit") from None
    records = []
    for i, obj in enumerate(json_lines(text, where, RecordsError, "rerun the unit")):
        try:
            records.append(Record.model_validate(obj))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(x) for x in first["loc"])
            raise RecordsError(f"{where}: record {i}: field {field!r}: {first['msg']}; rerun the unit") from None
    return records


class RecordsError(RosprError, ValueError):
    """A records file that cannot be trusted or used (the message names the file, the field and the fix)."""


class ResultsFileError(RosprError, ValueError):
    """A results.json that cannot be read as one of ours (missing, unreadable, another major schema
    version, or not following the schema); the message names the file and the fix."""


def record_scores(records: Sequence[Record], where: str | Path) -> list[float]:
    """Each record's metric value, recomputed (``Record.metric``); refuses (``RecordsError``) a record
    whose stored ``score`` disagrees, or that has no gold."""
    out = []
    for i, rec in enumerate(records):
        try:
            value = rec.metric()
        except ValueError as exc:
            raise RecordsError(f"{where}: record {i}: {exc}; rerun the unit") from None
        if not math.isclose(rec.score, value, rel_tol=0, abs_tol=1e-12):
            raise RecordsError(f"{where}: record {i}: field 'score' is {rec.score!r} but its prediction scores "
                               f"{value}; rerun the unit")
        out.append(value)
    return out


def non_finite(value: Any, where: str = "") -> str | None:
    """The dotted path of the first NaN or infinite number in ``value`` (dicts, lists, floats), or None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else where or "(value)"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for k, v in items:
        key = k if str(k).startswith("[") else (f".{k}" if where else str(k))
        found = non_finite(v, f"{where}{key}")
        if found:
            return found
    return None


def write_results(path: Path, results: ResultsFile) -> None:
    """Write a results file. Refuses (``ValueError`` naming the field) a NaN or infinite number: JSON has
    none, and a file our own readers would reject must never be written."""
    bad = non_finite(results.model_dump())
    if bad:
        raise ValueError(f"{path}: field {bad} is not a finite number, so the results file cannot be written; "
                         "this is a bug of rospr if the task files passed their checks: report it")
    atomic_write_text(path, results.model_dump_json(indent=2) + "\n")


def read_results(path: Path) -> ResultsFile:
    """Load and validate a results file. Refuses (``ResultsFileError`` naming the file) a missing or
    malformed file, another major schema version and a file that does not follow the schema."""

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFileError(f"{path}: no such file; is {path.parent} a run directory?") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsFileError(f"{path}: cannot read it ({exc}); restore it or rerun") from None
    data = json_document(text, path, ResultsFileError, "not a results file; restore it or rerun")
    version = str(data.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ResultsFileError(f"{path}: schema_version {version!r}; this rospr reads {SCHEMA_VERSION}")
    try:
        return ResultsFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        raise ResultsFileError(f"{path}: field {field}: {first['msg']} ({exc.error_count()} error(s)); restore the "
                         "file or rerun") from None
