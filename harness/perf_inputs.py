"""perf_analyzer's input data for the served ``t0_scorer``, made from a real rendered batch.

perf_analyzer's default random inputs fail on our graph (token ids outside the vocabulary give
``INVALID_ARGUMENT``) and every dimension of its six inputs is dynamic, so it needs real data and a
shape for each. ``write_perf_inputs`` makes both from what a run would send:

1. a task's prompt (any task ``rospr tasks`` lists; ``builtin/*`` work offline) rendered and
   tokenised by the served checkpoint's tokenizer under the scoring convention (T0's by default);
2. the first batch the runner would send for the task's first ``max(64, 4 x B)`` rows
   (``rospr.scoring.plan_batches``: length-bucketed, the longest inputs first), collated with a soft prompt on every row (``rospr.scoring.collate``): a
   prompt of a prompt bank, or P sampled rows of the checkpoint's vocabulary embeddings (the tuner's
   initialisation: the shape and magnitude of a real prompt), or none (the T0 baseline: one zero
   vector with a zero mask, as ``ScoreBatch.feeds`` sends it);
3. ``ScoreBatch.feeds`` of that batch (the graph's tensor contract, ``rospr.scoring.ScoreBatch``) written as
   perf_analyzer's input-data JSON, with the ``perf_analyzer`` command line that replays it.

``write_retriever_inputs`` does the same for the ``retriever`` graph: the same task's rendered inputs
(RoSPr's queries are hard-prompted instances) as the first batch ``rospr.retriever.embed_texts`` sends,
through the retriever checkpoint's tokenizer.

The file follows perf_analyzer's ``docs/input_data.md``: ``{"data": [step, ...]}``, each step mapping
every input to ``{"content": ..., "shape": [...]}``. The served models batch (``max_batch_size`` > 0),
so a step is one row and its shape leaves the batch dimension out; ``-b B`` makes perf_analyzer send
steps ``i .. i+B-1`` as one request and refuses steps of different shapes in one request, so every
row is padded to the batch's shape (its padding is masked, as in the run). Ids and masks (INT64) are
JSON lists; ``prompt_embeds`` is ``{"b64": ...}``, its little-endian bytes (exact, float16 too, and a
third of the text of a list). There are no BYTES inputs.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rospr.errors import SettingError
from rospr.parsing import read_json
from rospr.scoring import Convention, collate, encode_examples, plan_batches

log = logging.getLogger(__name__)

MODEL = "t0_scorer"
INPUTS = ("input_ids", "attention_mask", "prompt_embeds", "prompt_mask", "choice_ids", "choice_mask")
RETRIEVER = "retriever"
RETRIEVER_INPUTS = ("input_ids", "attention_mask")
PROMPT_DTYPES = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class PerfInputs:
    """What ``write_perf_inputs`` wrote: the JSON ``path``, the batch size ``-b`` to replay it with,
    the per-row ``shapes`` of the six inputs (batch dimension left out) and the ``command``."""

    model: str
    path: Path
    batch_size: int
    shapes: dict[str, list[int]]
    command: list[str]
    task: str
    prompt: str
    soft_prompt: str

    def command_line(self) -> str:
        return shlex.join(self.command)


# -- the batch ---------------------------------------------------------------------------------------


def vocabulary_prompt(model: str | Path, length: int, seed: int = 0, revision: str | None = None) -> np.ndarray:
    """``length`` rows [P, D] (float32) of the checkpoint's input embedding matrix, sampled with
    ``seed``: a soft prompt as the tuner initialises one. A local safetensors checkpoint is read
    one row at a time; anything else is loaded with transformers."""
    folder = Path(model)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    rng = np.random.default_rng(seed)
    for f in files:
        from safetensors import safe_open

        with safe_open(str(f), "np") as st:
            name = next((k for k in ("shared.weight", "encoder.embed_tokens.weight") if k in st.keys()), None)
            if name is None:
                continue
            table = st.get_slice(name)
            rows = rng.integers(0, table.get_shape()[0], size=length)
            return np.stack([np.asarray(table[int(r):int(r) + 1], dtype=np.float32)[0] for r in rows])
    from rospr.backbone import load_backbone

    loaded = load_backbone(str(model), revision=revision)[0]
    weight = loaded.get_input_embeddings().weight.detach().float().cpu().numpy()
    return weight[rng.integers(0, weight.shape[0], size=length)]


def bank_prompt(bank: str | Path, prompt_id: str, d_model: int, backbone: dict | None = None) -> np.ndarray:
    """The values [P, D] of prompt ``prompt_id`` of the prompt bank ``bank``, checked on load and against
    ``backbone`` (the served model's identity: a bank tuned on other weights is refused); refuses one
    whose width is not the served model's ``d_model``."""
    from rospr.softprompt import PromptBank

    values = PromptBank.load(bank, backbone=backbone, ids=[prompt_id]).get(prompt_id).values
    if values.shape[1] != d_model:
        raise SettingError(f"{bank}: prompt {prompt_id!r} is {values.shape[1]} wide, the served t0_scorer takes "
                           f"d_model={d_model}: use a bank tuned for this checkpoint")
    return np.asarray(values, dtype=np.float32)


def rendered_feeds(model: str | Path, task: str, prompt: str | None, batch_size: int, soft_prompt: np.ndarray | None,
                   d_model: int, prompt_dtype=np.float32, convention: Convention | None = None,
                   data_settings=None, revision: str | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The graph inputs of the first batch a run would send for ``task``'s ``prompt`` (None: its
    first prompt) to a scorer of width ``d_model``, with ``soft_prompt`` [P, D] on every row (None: no
    soft prompt), and the prompt's name. Refuses a task with no example for that prompt."""
    from rospr.tokenizer import load_tokenizer
    from rospr_harness.tasks import DataSettings, get_task

    t = get_task(task, data_settings or DataSettings.from_env())
    prompt = prompt or t.prompts()[0]
    data = t.load(prompt, limit=max(4 * batch_size, 64))
    if not data.examples:
        raise SettingError(f"task {task!r}, prompt {prompt!r}: no example to render ({data.skipped} rows skipped)")
    tokenizer = load_tokenizer(model, revision)
    encoded = encode_examples(tokenizer, data.examples, convention or Convention())
    first = plan_batches(encoded, batch_size)[0]
    batch = collate([encoded[i] for i in first], [soft_prompt] * len(first), d_model)  # pad 0, as the runner
    return batch.feeds(prompt_dtype), prompt


# -- the file and the command ------------------------------------------------------------------------


def input_data(feeds: dict[str, np.ndarray], inputs: tuple[str, ...] = INPUTS) -> dict:
    """perf_analyzer's input-data JSON (see the module docstring) of a batch's ``feeds`` (the graph's
    ``inputs``): one step per row, each input's ``content`` and ``shape`` without the batch dimension."""
    missing = [name for name in inputs if name not in feeds]
    if missing:
        raise ValueError(f"feeds lack {missing}")
    steps = []
    for row in range(feeds["input_ids"].shape[0]):
        step = {}
        for name in inputs:
            value = np.ascontiguousarray(feeds[name][row])
            if np.issubdtype(value.dtype, np.floating):
                content = {"b64": base64.b64encode(value.astype(value.dtype.newbyteorder("<")).tobytes()).decode()}
            else:
                content = value.reshape(-1).tolist()
            step[name] = {"content": content, "shape": list(value.shape)}
        steps.append(step)
    return {"data": steps}


def perf_analyzer_command(path: str | Path, batch_size: int, shapes: dict[str, list[int]], url: str = "127.0.0.1:8001",
                          protocol: str = "grpc", metrics_url: str | None = "127.0.0.1:8002/metrics",
                          model: str = MODEL) -> list[str]:
    """The ``perf_analyzer`` arguments that replay ``path`` against ``model`` at ``url``: ``-b``,
    every ``--shape`` (the file's shapes; perf_analyzer wants one per dynamic input), the server's
    metrics (``--collect-metrics``) when ``metrics_url`` is given."""
    command = ["perf_analyzer", "-m", model, "-u", url, "-i", protocol, "-b", str(batch_size),
               "--input-data", str(path)]
    for name in shapes:
        command += ["--shape", f"{name}:{','.join(str(d) for d in shapes[name])}"]
    if metrics_url:
        command += ["--collect-metrics", "--metrics-url", metrics_url]
    return command + ["--concurrency-range", "1:4"]


def default_path(repo: Path, model: str = MODEL) -> Path:
    """Where ``write_perf_inputs`` (``write_retriever_inputs``) writes for the build folder ``repo``
    unless told otherwise."""
    return repo / "perf_analyzer" / f"{model}.json"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def served_max_batch(config: Path) -> int | None:
    """``max_batch_size`` of a config.pbtxt (None when the file or the field is not there)."""
    if not config.is_file():
        return None
    found = re.search(r"^max_batch_size:\s*(\d+)", config.read_text(), re.M)
    return int(found.group(1)) if found else None


def write_perf_inputs(repo: str | Path, task: str = "builtin/sentiment", prompt: str | None = None,
                      batch_size: int = 8, out: str | Path | None = None, model: str | Path | None = None,
                      bank: str | Path | None = None, bank_prompt_id: str | None = None,
                      prompt_length: int = 100, no_prompt: bool = False, seed: int = 0,
                      url: str = "127.0.0.1:8001", protocol: str = "grpc",
                      metrics_url: str | None = "127.0.0.1:8002/metrics", data_settings=None) -> PerfInputs:
    """Write perf_analyzer's input data for the ``t0_scorer`` of the build folder ``repo`` (what
    ``rospr export`` wrote) to ``out`` (default ``repo/perf_analyzer/t0_scorer.json``) and return it
    with its command.

    The checkpoint whose tokenizer renders the batch is ``model`` or the export's recorded source,
    and must be the one the export was made from (its config and weights digests); the soft prompt
    is ``bank``'s ``bank_prompt_id``, else ``prompt_length`` sampled vocabulary rows, or none with
    ``no_prompt``. Refuses (``SettingError``) a ``batch_size`` outside 1 .. the served
    ``max_batch_size``, a bank without a prompt id, and a checkpoint that is not the export's.
    """
    from rospr_export.identity import export_sources
    from rospr_export.manifest import verify_export

    repo = Path(repo)
    export_dir = repo / "onnx"
    if not (export_dir / "manifest.json").is_file():
        raise SettingError(f"{export_dir}/manifest.json: not a `rospr export` build folder; give --repo the folder "
                           "`rospr export --out` wrote")
    recorded = read_json(export_dir / "manifest.json", SettingError, "rebuild it with `rospr export`")
    if MODEL not in recorded.get("graphs", {}):
        raise SettingError(f"{export_dir}: the export has no {MODEL} graph")
    model = str(model or recorded.get("model_source") or "")
    if not model:
        raise SettingError(f"{export_dir}/manifest.json records no model source: give --model")
    revision = recorded.get("model_revision")
    # sealed, and made from this very checkpoint: its tokenizer renders what the served graph scores
    verified = verify_export(export_dir, sources=export_sources(model, None, revision))
    graph = verified["graphs"][MODEL]
    max_batch = served_max_batch(repo / "triton" / MODEL / "config.pbtxt") or 16
    if not 1 <= batch_size <= max_batch:
        raise SettingError(f"--batch-size {batch_size}: give 1 to {max_batch} (max_batch_size of the served {MODEL})")
    if bank is not None and not bank_prompt_id:
        raise SettingError(f"--bank {bank}: name the prompt to send with --bank-prompt (ids: `rospr bank list {bank}`)")
    d_model = int(graph["d_model"])
    if no_prompt:
        soft, which = None, "none (the T0 baseline: prompt_mask all zeros)"
    elif bank is not None:
        soft = bank_prompt(bank, bank_prompt_id, d_model, verified.get("model"))
        which = f"{bank_prompt_id} of the bank {bank}"
    else:
        if not 1 <= prompt_length <= 4096:
            raise SettingError(f"--prompt-length {prompt_length}: give 1 to 4096 vectors")
        soft = vocabulary_prompt(model, prompt_length, seed, revision)
        which = f"{prompt_length} sampled vocabulary embeddings (seed {seed})"
    prompt_dtype = PROMPT_DTYPES[graph.get("prompt_dtype", "float32")]
    feeds, prompt = rendered_feeds(model, task, prompt, batch_size, soft, d_model, prompt_dtype,
                                   data_settings=data_settings, revision=revision)
    path = Path(out) if out else default_path(repo)
    _write_json(path, input_data(feeds))
    rows = int(feeds["input_ids"].shape[0])
    shapes = {name: list(feeds[name].shape[1:]) for name in INPUTS}
    command = perf_analyzer_command(path, rows, shapes, url, protocol, metrics_url)
    log.debug("wrote %s: %d rows of %s / %s, soft prompt %s", path, rows, task, prompt, which)
    return PerfInputs(MODEL, path, rows, shapes, command, task, prompt, which)


class _FirstBatch:
    """An ``Embedder`` that keeps the first batch ``embed_texts`` hands it (and embeds nothing)."""

    dim = 1

    def __init__(self) -> None:
        self.feeds: dict[str, np.ndarray] | None = None

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.feeds is None:
            self.feeds = {"input_ids": input_ids.copy(), "attention_mask": attention_mask.copy()}
        return np.zeros((input_ids.shape[0], self.dim), np.float32)


def write_retriever_inputs(repo: str | Path, task: str = "builtin/sentiment", prompt: str | None = None,
                           batch_size: int = 8, out: str | Path | None = None, retriever: str | Path | None = None,
                           url: str = "127.0.0.1:8001", protocol: str = "grpc",
                           metrics_url: str | None = "127.0.0.1:8002/metrics", data_settings=None) -> PerfInputs:
    """perf_analyzer's input data for the ``retriever`` graph of the build folder ``repo`` (default
    ``repo/perf_analyzer/retriever.json``): ``task``'s rendered inputs of ``prompt`` as the first batch
    ``rospr.retriever.embed_texts`` sends, tokenised by ``retriever`` (default: the export's recorded
    retriever source, checked against the export's digests). Refuses an export without a retriever and
    a ``batch_size`` outside 1 .. the served ``max_batch_size``."""
    from rospr.retriever import embed_texts
    from rospr_export.identity import export_sources
    from rospr_export.manifest import verify_export
    from rospr.tokenizer import load_tokenizer
    from rospr_harness.tasks import DataSettings, get_task

    repo = Path(repo)
    export_dir = repo / "onnx"
    if not (export_dir / "manifest.json").is_file():
        raise SettingError(f"{export_dir}/manifest.json: not a `rospr export` build folder; give --repo the folder "
                           "`rospr export --out` wrote")
    graph = read_json(export_dir / "manifest.json", SettingError,
                      "rebuild it with `rospr export`").get("graphs", {}).get(RETRIEVER)
    if graph is None:
        raise SettingError(f"{export_dir}: the export has no {RETRIEVER} graph (`rospr export --retriever R`)")
    retriever = str(retriever or graph.get("source") or "")
    if not retriever:
        raise SettingError(f"{export_dir}/manifest.json records no retriever source: give --retriever")
    verify_export(export_dir, sources=export_sources(None, retriever, None, graph.get("revision")))
    max_batch = served_max_batch(repo / "triton" / RETRIEVER / "config.pbtxt") or 64
    if not 1 <= batch_size <= max_batch:
        raise SettingError(f"--batch-size {batch_size}: give 1 to {max_batch} (max_batch_size of the served {RETRIEVER})")
    t = get_task(task, data_settings or DataSettings.from_env())
    prompt = prompt or t.prompts()[0]
    examples = t.load(prompt, limit=max(4 * batch_size, 64)).examples
    if not examples:
        raise SettingError(f"task {task!r}, prompt {prompt!r}: no example to render")
    first = _FirstBatch()
    embed_texts(first, load_tokenizer(retriever, graph.get("revision")), [e.input_text for e in examples],
                batch_size=batch_size)
    feeds = first.feeds
    path = Path(out) if out else default_path(repo, RETRIEVER)
    _write_json(path, input_data(feeds, RETRIEVER_INPUTS))
    rows = int(feeds["input_ids"].shape[0])
    shapes = {name: list(feeds[name].shape[1:]) for name in RETRIEVER_INPUTS}
    command = perf_analyzer_command(path, rows, shapes, url, protocol, metrics_url, model=RETRIEVER)
    return PerfInputs(RETRIEVER, path, rows, shapes, command, task, prompt, "none (the retriever takes none)")
