"""The run configuration users write (YAML), validated by pydantic.

Every model refuses unknown keys, so a typo is an error naming the key's path, with a suggestion.
``--set key.path=value`` overrides are applied to the YAML before validation (values parsed as YAML).

Settings of the method itself (``rospr.tuning.TuneSettings``, ``rospr.library.IndexSettings``,
``rospr.scoring.Convention``) are defined once, as those dataclasses: their fields and defaults
become config keys here (``settings_model``) and each dataclass's ``__post_init__`` is the check,
so a bad value is refused with the same message wherever it comes from. The dataclasses stay in
``rospr`` (which imports nothing of the harness and no pydantic) and the harness adds only its own
keys (batching, threads, source rows, parallelism) beside them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, create_model,
                      field_validator, model_validator)

from rospr_harness.tasks.base import DataSettings
from rospr.canonical import digest_json
from rospr.errors import RosprError
from rospr.library import IndexSettings
from rospr.parsing import BudgetLoader, read_text
from rospr.parsing import load_yaml as parse_yaml
from rospr.scoring import Convention
from rospr.selection import METHODS, T0, Method
from rospr.tuning import TuneSettings

BACKENDS = ("onnxruntime", "torch", "triton")
# Upper bounds of settings whose size is work or memory: past them a run hangs or thrashes, not helps.
MAX_THREADS = 1024  # intra-op threads (onnxruntime spawns them all at session start)
MAX_CPUS = 65536  # CPUs of a Ray cluster
MAX_BATCH = 65536  # rows of one scoring batch / request


class ConfigError(RosprError, ValueError):
    """A config that cannot be used. The message names the file, the key path and the reason."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info) -> Any:
        # pydantic's lax mode reads true/false as 1/0 for a number; YAML makes them from a bare yes/no/on/off
        if isinstance(v, bool) and _takes_number(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"{str(v).lower()} is a boolean, not a number; give a number")
        return v


def _takes_number(annotation: Any) -> bool:
    """Whether a field's type is a number (``int``, ``float``, optionally ``None``), not also a ``bool``."""
    args = typing.get_args(annotation) or (annotation,)
    return bool not in args and any(a in (int, float) for a in args)


class SettingsModel(Strict):
    """A config section wrapping one ``rospr`` settings dataclass (``settings_model``)."""

    _settings: typing.ClassVar[type]

    @model_validator(mode="after")
    def _check(self) -> "SettingsModel":
        self.settings()  # the dataclass's __post_init__ refuses bad values (ValueError -> a config error)
        return self

    def settings(self):
        """The ``rospr`` settings dataclass of this section (its fields, the harness keys left out)."""
        return self._settings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self._settings)})


def settings_model(name: str, settings: type, doc: str,
                   base: type[SettingsModel] = SettingsModel) -> type[SettingsModel]:
    """A pydantic base model whose fields are the fields of the dataclass ``settings``, with its
    types, defaults and ``metadata["help"]`` as description: the one definition stays the dataclass.
    ``base``: a ``SettingsModel`` whose own keys come first. A ``Path`` field is a text key, kept as
    written (the config's hash and results.json show it so); the dataclass makes it a ``Path``."""
    hints = typing.get_type_hints(settings)
    fields = {f.name: (_key_type(hints[f.name]), Field(f.default, description=f.metadata.get("help")))
              for f in dataclasses.fields(settings)}
    model = create_model(name, __base__=base, __doc__=doc, **fields)
    model._settings = settings
    return model


def _key_type(hint: Any) -> Any:
    """A dataclass field's type as a config key: ``Path`` read as ``str``."""
    args = typing.get_args(hint)
    if Path in args:
        return typing.Union[tuple(str if a is Path else a for a in args)]
    return str if hint is Path else hint


def _method(value: Any) -> Method:
    try:
        return Method.parse(value)
    except (ValueError, TypeError):
        raise ValueError(f"{value!r} is not one of {[m.name for m in METHODS]}") from None


# A method in a config: its name in YAML and in every dump (the config hash), a ``Method`` in code.
MethodName = Annotated[Method, PlainValidator(_method), PlainSerializer(lambda m: Method.parse(m).name, return_type=str)]


class ModelConfig(Strict):
    name_or_path: str = Field("build/tiny-t0", description="hub name or local checkpoint directory")
    revision: str | None = Field(None, description=(
        "hub commit (a sha; a branch or tag moves) of a hub name_or_path: every from_pretrained of the backbone, "
        "its tokenizer and its export cache key uses it, and the retriever's when rospr.retriever is null; "
        "recorded in results.json provenance (model_revision). A local directory ignores it"))
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    device: str = "cpu"


class _DataRoot(SettingsModel):
    data_dir: str | None = None  # the harness's own key, first (DataSettings.from_env reads the layout)


class DataConfig(settings_model("DataConfig", DataSettings, "", base=_DataRoot)):
    """Where task content lives (harness/tasks/base.py ``DataSettings``). ``data_dir`` is a data root
    (``promptsource/templates``, ``bigbench``, ``rows``, ``hub``, ``manual``, each used when present;
    docs/data.md); the specific keys override it. Unset: templates and BIG-bench from the
    data cache (``rospr data fetch``: pinned releases, every file checked by sha256), rows from the hub."""


class TaskConfig(Strict):
    name: str
    prompts: list[str] | None = Field(None, description="prompt names; all of the task's when omitted")
    split: str | None = None
    limit: int | None = Field(None, ge=1, le=10**9, description="first N rows of the split")


class ScoringConfig(settings_model("_ConventionKeys", Convention, "the scoring convention (rospr/scoring.py)")):
    """Rank classification: the convention (``rospr.scoring.Convention``'s fields) and batching."""

    batch_size: int = Field(16, ge=1, le=MAX_BATCH)
    # 2048: on ~670-token inputs (small model, benchmarks/README.md "Token-budget batches") the peak RSS
    # is 1.5 GB against 3.5 GB at 16 rows, at no lower MFU; short inputs still fill batch_size rows
    batch_tokens: int | None = Field(2048, ge=1, le=1 << 30,
                                     description="padded tokens per batch, B x (S + C x T) (rospr.scoring.plan_batches); "
                                                 "null: batch_size rows whatever their length")
    bucket: bool = True
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, description="intra-op threads of the backend")

    def convention(self) -> Convention:
        return self.settings()


class OnnxRuntimeConfig(Strict):
    """The in-process onnxruntime backend (the default). The graphs are exported on demand into a
    content-addressed cache and reused; see harness/backends/onnxruntime_backend.py."""

    threads: int | None = Field(None, ge=1, le=MAX_THREADS,
                                description="intra-op threads; default scoring.threads, else one per core")
    graph_optimization: Literal["disabled", "basic", "extended", "all"] = "all"
    providers: list[str] | None = Field(None, description="default: CUDA when model.device is cuda and available, else CPU")
    cache_dir: str | None = Field(None, description="export cache; default $ROSPR_ONNX_CACHE, else onnx/ under the "
                                                    "user cache root ($ROSPR_HOME, else $XDG_CACHE_HOME/rospr, "
                                                    "else ~/.cache/rospr)")
    io_binding: bool = Field(True, description="on CUDA: bind inputs/outputs on the device")


class TritonConfig(Strict):
    """A Triton server (`rospr serve` here, the NGC image elsewhere)."""

    url: str = "127.0.0.1:8001"
    protocol: Literal["grpc", "http"] = "grpc"
    model: str = "t0_scorer"
    retriever_model: str = "retriever"
    concurrency: int = Field(4, ge=1, le=1024, description="requests in flight at once")
    max_request_batch: int | None = Field(None, ge=1, le=MAX_BATCH,
                                          description="rows per request; default the model's max_batch_size")
    timeout_s: float = Field(60.0, gt=0, le=86400, description="per request (and the bound on connecting, at most 10 s)")
    retries: int = Field(3, ge=0, le=20, description="retries of an unavailable / overloaded / timed-out request")
    backoff_s: float = Field(0.5, ge=0, le=600, description="first retry delay, doubled each retry")
    wire_dtype: Literal["float32", "float16"] = Field("float32", description="prompt_embeds on the wire")
    shared_memory: bool = Field(False, description="send inputs through system shared memory (local server only)")


class TuneConfig(settings_model("_TuneKeys", TuneSettings, "prompt tuning (rospr/tuning.py)")):
    """Prompt tuning of the source prompts: ``rospr.tuning.TuneSettings``' fields (defaults: Lester et
    al.'s prompt tuning, as docs/method.md says: vocabulary init, Adafactor, lr 0.3, P=100; steps and batch are ours)
    and where the training rows come from and how the prompts are spread over workers."""

    source_split: str = Field("train", description="the split of each source dataset trained on")
    source_rows: int | None = Field(None, ge=1, description="first rows of each source's split (all when null)")
    parallel: Literal["auto", "ray", "off"] = Field("auto", description="auto: Ray actors when Ray is installed")
    num_cpus: int | None = Field(None, ge=1, description="CPUs given to Ray (default: all)")
    num_gpus_per_worker: float = Field(0, ge=0, description="GPUs each Ray tuning actor reserves (Ray makes them its "
                                                             "only visible devices; rospr.tune.device then defaults to cuda)")

    @field_validator("parallel", mode="before")
    @classmethod
    def _yaml_booleans(cls, v: Any) -> Any:
        # YAML reads a bare off/on as a boolean
        return {False: "off", True: "ray"}.get(v, v) if isinstance(v, bool) else v


IndexConfig = settings_model("IndexConfig", IndexSettings, "The library's FAISS index (rospr/library.py).")


# The four choices the paper leaves open, as ours and as the lab's code (joeljang/ELM) makes them;
# docs/method.md gives the source of each. ``rospr.preset`` picks a column; a key set explicitly wins.
PRESETS: dict[str, dict[str, Any]] = {
    "ours": {"library_sample": "first", "normalize": True, "votes": "all", "pooling": "masked"},
    "lab_code": {"library_sample": "random", "normalize": False, "votes": "top1", "pooling": "padded"},
}


class RetrieverWeights(Strict):
    """A retriever published as a weights file for a public architecture, as the authors publish
    T0-small (``T0_small.pt`` for ``google/t5-small-lm-adapt``); its encoder is used."""

    base: str = Field(..., description="hub name or folder of the checkpoint whose config and tokenizer the "
                                       "weights are for (e.g. google/t5-small-lm-adapt)")
    weights: str = Field(..., description="the weights file: a Lightning checkpoint (state_dict, model.-prefixed "
                                          "keys) or a plain PyTorch state dict")


class RosprConfig(Strict):
    """RoSPr (docs/method.md): the sources, where the prompt bank and library live, retrieval
    and selection settings. Used when ``method`` lists anything but t0; the run tunes the bank and
    builds the library when they are missing or stale, and reuses them otherwise. ``preset`` gives
    ``library_sample``, ``normalize``, ``votes`` and ``pooling`` the values of ``PRESETS`` unless
    the config sets them."""

    sources: list[str] | str = Field("builtin", description="task names, or a named list: builtin, t0_train")
    prompt_bank: str = Field("build/rospr/prompt_bank", description="directory of the soft prompts")
    library: str = Field("build/rospr/library", description="directory of the Source Prompt Library")
    retriever: str | RetrieverWeights | None = Field(None, description=(
        "the dense retriever's encoder: a hub name or folder of a checkpoint (its encoder is used), or {base, "
        "weights}: a weights file for base's architecture (the paper's T0-small, T0_small.pt on "
        "google/t5-small-lm-adapt; docs/method.md). null: the backbone's own encoder, which runs with one "
        "checkpoint but is not the paper's retrieval space"))
    retriever_revision: str | None = Field(None, description=(
        "hub commit of a hub rospr.retriever, or of a weights file's base (a checkpoint of its own, so "
        "model.revision cannot name it); with rospr.retriever null the backbone's model.revision applies"))
    tune: TuneConfig = TuneConfig()
    preset: Literal["ours", "lab_code"] = Field("ours", description=(
        "where library_sample, normalize, votes and pooling come from when the config does not set them: ours, "
        "or lab_code (as the authors' lab's code does them; docs/method.md)"))
    library_n: int = Field(100, ge=1, le=10**6, description="n, training instances per prompt in the library")
    library_sample: Literal["first", "random"] = Field("first", description=(
        "which n training instances of a prompt become keys: the first, or n drawn at random with the run's seed "
        "(the same rows for every prompt of a dataset)"))
    normalize: bool = Field(True, description="L2-normalise keys and queries (cosine); false: the raw dot product")
    pooling: Literal["masked", "padded"] = Field("masked", description=(
        "masked: the mean over real tokens, no EOS; padded: EOS appended, keys padded to 256 tokens and averaged "
        "over every position (embedded in PyTorch), queries averaged over their tokens"))
    index: IndexConfig = IndexConfig()
    queries: int = Field(32, ge=1, le=10**5, description="Q, query instances per target (task, prompt)")
    top_n: int = Field(10, ge=1, le=10**4, description="N, hits per query")
    votes: Literal["all", "top1"] = Field("all", description=(
        "which hits vote in the frequency table: all Q x N, or each query's top-1"))
    n_inter: int = Field(3, ge=1, le=10**4, description="N', prompts interpolated by +inter")
    var_candidates: int = Field(10, ge=1, le=10**4, description="most frequent candidates scored by +var")
    leave_one_out: bool = Field(True, description="a target never retrieves prompts of its own dataset")

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset", "ours") in PRESETS:  # another name: the field refuses it
            return {**PRESETS[data.get("preset", "ours")], **data}
        return data


class RayConfig(Strict):
    """Ray execution of a run (harness/runner/ray_executor.py): a retrieval actor
    and a pool of scoring actors. ``enabled``: true, false, or ``auto`` (the shipped configs), which
    chooses by ``rospr_harness.ray_session.ray_choice``: Ray when a cluster is named (``ray.address``,
    ``$RAY_ADDRESS``, a Ray job), GPUs are reserved or several are present, or the work is large enough
    on enough cores to pay for Ray's start; else in process. A config with no ``ray:`` section runs in
    process: that executor is the reference (tests, notebooks), gives the same numbers and needs no
    cluster start. When Ray is not installed, a Ray run falls back to one process with a warning."""

    enabled: bool | Literal["auto"] = Field(False, description="true, false, or auto (in process on a small "
                                                               "machine; Ray for a cluster, GPUs or a large run)")
    address: str | None = Field(None, description="null: $RAY_ADDRESS, else the job's cluster inside `ray job submit` "
                                                 "($RAY_JOB_ID), else a local Ray on loopback; 'auto', host:port or "
                                                 "ray://host:10001: that cluster")
    num_cpus: int | None = Field(None, ge=1, le=MAX_CPUS, description="local Ray only: CPUs it may use (default: all cores)")
    scorers: int = Field(2, ge=1, le=1024, description="scoring actors")
    num_cpus_per_scorer: float | None = Field(None, gt=0, le=MAX_THREADS, description="default: the cluster's CPUs / scorers; "
                                                                      "onnxruntime threads = its floor (at least 1)")
    num_gpus_per_scorer: float = Field(0, ge=0, le=64)
    retrieval_num_cpus: float = Field(0, ge=0, le=MAX_CPUS, description="CPUs reserved for the retrieval actor (it mostly waits)")
    max_in_flight: int | None = Field(None, ge=1, le=10**5, description="scoring batches submitted and not yet back; default 4 x scorers")
    max_active_units: int | None = Field(None, ge=1, le=10**5, description="(task, prompt) targets loaded at once; default 2 x max_in_flight")
    retrieval_group: int = Field(16, ge=1, le=10**5, description="targets whose queries go to the retrieval actor in one call")
    max_restarts: int = Field(3, ge=-1, le=1000, description="restarts of a dead actor (-1: unlimited)")
    max_task_retries: int = Field(3, ge=-1, le=1000, description="Ray's retries of a call to a restarting actor (-1: unlimited)")
    max_batch_attempts: int = Field(3, ge=1, le=100, description="the driver's own resubmissions of a batch whose actor died")
    triton_urls: list[str] | None = Field(None, description="backend triton: scoring actor i talks to triton_urls[i % n] "
                                                            "(default: triton.url)")
    object_store_memory: int | None = Field(None, ge=1 << 26, le=1 << 50, description="local Ray only: bytes of object store")
    log_to_driver: bool | None = Field(None, description="actor output to the driver (and `ray job logs`); "
                                                         "null: on when joining a cluster, off for a local Ray")

    @model_validator(mode="after")
    def _address_needs_enabled(self) -> "RayConfig":
        if self.address and self.enabled is False:
            raise ValueError(f"ray.address={self.address!r} is set but ray.enabled is false; set ray.enabled=true")
        return self


class CacheConfig(Strict):
    """The unit cache (harness/cache.py): a finished (task, prompt, method) unit is stored under a
    content key and reused by any later run with the same key. Off by default so that tests and the
    reference path always compute; configs/demo.yaml and configs/full.yaml turn it on."""

    enabled: bool = False
    dir: str | None = Field(None, description="default $ROSPR_UNIT_CACHE, else units/ under the user cache root "
                                              "($ROSPR_HOME, else $XDG_CACHE_HOME/rospr, else ~/.cache/rospr)")


class RunConfig(Strict):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    tasks: list[TaskConfig] = Field(..., min_length=1)
    method: list[MethodName] = Field(default_factory=lambda: [T0])
    backend: str = "onnxruntime"
    onnxruntime: OnnxRuntimeConfig = OnnxRuntimeConfig()
    triton: TritonConfig = TritonConfig()
    scoring: ScoringConfig = ScoringConfig()
    seed: int = Field(0, ge=0, le=2**32 - 1, description="numpy and torch seeds take 0 .. 2**32-1")
    rospr: RosprConfig = RosprConfig()
    ray: RayConfig = RayConfig()
    cache: CacheConfig = CacheConfig()

    @field_validator("tasks", mode="before")
    @classmethod
    def _task_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": t} if isinstance(t, str) else t for t in v]
        return v

    @field_validator("tasks")
    @classmethod
    def _each_task_once(cls, v: list[TaskConfig]) -> list[TaskConfig]:
        # Units are keyed by (task, prompt, method): a task listed twice would have one entry's units
        # silently replace the other's, so it is refused rather than guessed at (which limit? which split?).
        first: dict[str, int] = {}
        for i, tc in enumerate(v):
            if tc.name in first:
                raise ValueError(f"tasks.{i}: task {tc.name!r} is already listed at tasks.{first[tc.name]}; list each "
                                 "task once (one entry with all the prompts wanted: prompts: [...])")
            first[tc.name] = i
            if tc.prompts is not None:
                dup = sorted({p for p in tc.prompts if tc.prompts.count(p) > 1})
                if dup:
                    raise ValueError(f"tasks.{i}.prompts: {dup[0]!r} is listed twice; list each prompt once")
        return v

    @field_validator("method", mode="before")
    @classmethod
    def _methods(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("method")
    @classmethod
    def _each_method_once(cls, v: list[Method]) -> list[Method]:
        if len(set(v)) != len(v):
            raise ValueError(f"a method is listed twice: {[m.name for m in v]}")
        return v

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        if v not in BACKENDS:
            raise ValueError(f"{v!r} is not one of {list(BACKENDS)}")
        return v

    def content_hash(self) -> str:
        """The config's digest (16 hex digits): what a resumed run must match."""
        return digest_json(self.model_dump(mode="json"))[:16]


def _set(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node: Any = tree
    for i, key in enumerate(keys[:-1]):
        nxt = keys[i + 1]
        if isinstance(node, list):
            try:
                node = node[int(key)]
            except (ValueError, IndexError):
                raise ConfigError(f"{source}: --set {dotted}: {'.'.join(keys[:i])} has no item {key}") from None
            continue
        if key not in node or node[key] is None:
            node[key] = [] if nxt.isdigit() else {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        try:
            node[int(last)] = value
        except (ValueError, IndexError):
            raise ConfigError(f"{source}: --set {dotted}: no list item {last}") from None
    else:
        node[last] = value


def apply_overrides(tree: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``key.path=value`` strings (value parsed as YAML, as a config file's values are) to a
    config tree, in order. Refuses (``ConfigError`` naming the ``--set``) a string without ``=`` and
    a value that is not plain YAML data (a date, a set, binary: quote it)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        value = load_yaml(raw, f"--set {item}") if raw != "" else ""
        _set(tree, key.strip(), value, source)
    return tree


MAX_CONFIG_BYTES = 1 << 20  # a run's config is a few kilobytes; a larger file is not one


class _ConfigLoader(BudgetLoader):
    """The budgeted loader (``rospr.parsing``: each key once, bounded depth and alias expansion), for
    plain data only: no dates, sets or binary, which JSON and the config hash cannot carry."""


def _refuse(what: str, fix: str):
    def construct(loader, node):
        text = repr(node.value) if isinstance(node, yaml.ScalarNode) else "the value"
        raise ConfigError(f"{loader.at(node)}: {text} is read by YAML as {what}, which a config cannot hold; {fix}")
    return construct


_ConfigLoader.add_constructor("tag:yaml.org,2002:timestamp", _refuse("a date", "quote it to give a string"))
_ConfigLoader.add_constructor("tag:yaml.org,2002:binary", _refuse("binary data", "give a string"))
_ConfigLoader.add_constructor("tag:yaml.org,2002:set", _refuse("a set", "give a list ([a, b])"))
_ConfigLoader.add_constructor("tag:yaml.org,2002:omap", _refuse("an ordered map", "give a mapping"))
_ConfigLoader.add_constructor("tag:yaml.org,2002:pairs", _refuse("a list of pairs", "give a mapping"))


def load_yaml(text: str, source: str) -> Any:
    """The data of a YAML text (``source`` names it in errors). Refuses (``ConfigError`` with the
    line): malformed YAML, dates, sets, binary, a key given twice in one mapping, and what
    ``rospr.parsing`` bounds (nesting depth, alias expansion)."""
    return parse_yaml(text, source, ConfigError, "fix the config", loader=_ConfigLoader,
                      one_line=source.startswith("--set"))  # a --set is one line


def _fields_at(loc: tuple, model: Any = None) -> list[str]:
    model = model or RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        model = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _override_of(path: str, overrides: list[str]) -> str | None:
    """The last ``--set`` that gave the key at ``path`` (or a section holding it), if any."""
    found = None
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            found = item
    return found


def _named_path(msg: str, overrides: list[str], model: Any) -> str:
    """The key a check of the settings as a whole (no location of its own) is about: the last ``--set``
    key, else the first of ``model``'s fields, that ``msg`` names; else the settings together."""
    named = [item.split("=", 1)[0].strip() for item in overrides]
    named += _fields_at(("",), model)
    for key in named:
        if re.search(rf"(?<![\w-]){re.escape(key.rsplit('.', 1)[-1])}(?![\w-])", msg):
            return key
    return "(these settings together)"


def format_validation_error(exc: ValidationError, source: str, overrides: list[str] | None = None,
                            model: Any = None, names: dict[str, str] | None = None) -> str:
    """One line per problem of a config, each naming its key path; a key that a ``--set`` gave is
    blamed on that ``--set``, not on the file ``source``, and a check of the settings together on the
    key its message names. ``model``: the validated model (default ``RunConfig``), for the "did you
    mean" of an unknown key. ``names``: key path -> the name the user gave it (settings that did not
    come from a config file, e.g. lm-eval's model arguments), shown instead of the path."""
    lines, blamed = [], []
    for err in exc.errors():
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        path = ".".join(str(p) for p in loc) or _named_path(msg, [*reversed(overrides or [])], model)
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc, model), n=1)
            msg = "unknown key" + (f"; did you mean {close[0]!r}?" if close else "")
        elif err["type"] in ("less_than_equal", "less_than"):
            msg += "; the most this setting allows (more only hangs or exhausts memory)"
        given = _override_of(path, overrides or [])
        blamed.append(given)
        shown = (names or {}).get(path, path)
        lines.append(f"  {shown}: {msg}" + (f" (from --set {given})" if given else ""))
    if all(blamed):
        head = f"--set {', --set '.join(dict.fromkeys(blamed))}: invalid setting" + (
            f" (config {source})" if source not in ("--set", "<config>") else "")
    else:
        head = f"{source}: invalid {'setting' if names else 'config'}"
    return "\n".join([head, *lines])


def load_config(path: str | Path | None, overrides: list[str] | None = None, tree: dict | None = None,
                source: str | None = None, names: dict[str, str] | None = None) -> RunConfig:
    """Read a YAML config, apply overrides, validate. Raises ``ConfigError`` naming the file (and
    line) or the ``--set``, and the key: a missing or non-UTF-8 file, malformed YAML, values that
    are not plain data (dates, sets, binary), a key given twice, and every invalid setting. A ``tree``
    given in code is named ``source`` in errors, its keys by ``names`` (``format_validation_error``)."""
    source = source or (str(path) if path else "<config>")
    if tree is None:
        if path is None:
            raise ConfigError("no config given")
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{source}: no such config file")
        text = read_text(p, ConfigError, "save the config as UTF-8", MAX_CONFIG_BYTES)
        tree = load_yaml(text, source) or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of keys")
    try:
        tree = json.loads(json.dumps(tree, allow_nan=True))
    except (TypeError, ValueError) as exc:  # a tree given in code (``tree=``) may hold anything
        raise ConfigError(f"{source}: a value is not plain data ({exc}); give strings, numbers, lists and mappings") from None
    if isinstance(tree.get("tasks"), list):  # `- name` shorthand, so that --set tasks.0.limit=5 works
        tree["tasks"] = [{"name": t} if isinstance(t, str) else t for t in tree["tasks"]]
    tree = apply_overrides(tree, overrides or [])
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overrides, names=names)) from None


def retriever_name(config: RunConfig) -> str:
    """The checkpoint that names the retriever's architecture and tokenizer: ``rospr.retriever``, the
    ``base`` of a weights file, or the backbone when it is null."""
    r = config.rospr.retriever
    return r.base if isinstance(r, RetrieverWeights) else (r or config.model.name_or_path)


def checkpoint_revision(config: RunConfig, name_or_path: str | Path | None) -> str | None:
    """The hub revision to load ``name_or_path`` at: ``model.revision`` for the backbone (and the retriever
    when it is the backbone), ``rospr.retriever_revision`` for the configured retriever (a weights file's
    base), else None."""
    name = str(name_or_path)
    if name == config.model.name_or_path:
        return config.model.revision
    if config.rospr.retriever is not None and name == retriever_name(config):
        return config.rospr.retriever_revision
    return None
