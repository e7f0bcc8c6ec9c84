"""rospr as an lm-evaluation-harness model: ``lm_eval --model rospr --model_args pretrained=PATH,...``.

Importing this module registers ``RosprLM`` in lm-eval's model registry as ``rospr``, so that
``lm_eval.simple_evaluate(model="rospr", model_args=...)`` and ``rospr lm-eval ...`` (lm-eval's own
command line, with this module imported first) score with our ``Scorer``: the exported ``t0_scorer``
graph in process (onnxruntime, the default), or served by Triton when the model args name a server
(``url=HOST:PORT``). The backend is built by ``rospr_harness.backends.create_backend``, as a run builds it.

``loglikelihood`` is rank classification: the requests that share a context (one per answer choice of
a multiple-choice document) become one row of the scorer, so the encoder runs once per context, never
once per choice, and each distinct continuation of that context is one choice row of the decoder.

The scoring convention is a model argument, ``convention``:

- ``lm-eval`` (the default): exactly what lm-eval's ``hf`` model with ``backend=seq2seq`` scores. A
  context's trailing whitespace moves to the front of its continuation; the context is tokenised with
  the tokenizer's special tokens (T5: an EOS after it) unless it already starts with the prefix
  token's text, and left-truncated to ``max_length`` tokens; the continuation without special tokens
  (no EOS); an empty context is the prefix token (BOS, else EOS) unless the continuation starts with
  it. ``max_length`` defaults as lm-eval's does: the checkpoint's ``n_positions`` /
  ``max_position_embeddings`` / ``n_ctx``, else the tokenizer's ``model_max_length``, else 2048.
- ``t0``: T0's rank classification as ``rospr run`` scores it (``rospr.scoring.Convention``): the
  context without EOS (right-truncated to ``max_length``, default 1024), each continuation without the
  whitespace that delimits it from the context and with an EOS. The log-likelihoods are then T0's
  choice scores, not lm-eval's.

Either way a continuation's log-likelihood is the plain sum of its tokens' log-probabilities (lm-eval
computes ``acc_norm`` from those itself).

What it refuses, each in one line (``LmEvalUnsupported``, a ``RosprError``): ``generate_until`` and
``loglikelihood_rolling`` (the scorer graph scores given continuations; it neither generates nor
slides windows over a document), and a document that sends a single continuation (an
``output_type: loglikelihood`` task such as lambada), because its ``acc`` reads ``is_greedy``: whether
each continuation token is the model's argmax, which needs the vocabulary-sized distribution that the
graph never returns (its one output is ``scores`` [B, C]). ``is_greedy`` is therefore ``False`` in every answer; the
multiple-choice metrics (``acc``, ``acc_norm``, ``acc_mutual_info``) read only the log-likelihoods.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lm_eval.models  # noqa: F401  the lazy table of lm-eval's own models, before ours joins the registry
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from rospr.errors import RosprError, SettingError
from rospr.parsing import read_json
from rospr.scoring import Convention, EncodedExample, encode_examples, score_encoded

log = logging.getLogger(__name__)

CONVENTIONS = ("lm-eval", "t0")
BACKENDS = ("onnxruntime", "triton", "torch")
# lm-eval's own fallbacks (lm_eval.models.utils): the context length when neither the config nor the
# tokenizer gives one, and the "unset" model_max_length transformers writes
LM_EVAL_DEFAULT_MAX_LENGTH = 2048
TOKENIZER_INFINITY = 1000000000000000019884624838656
DEFAULT_BATCH_SIZE = 16
# a stand-in task: a RunConfig names one, building a backend reads none
_NO_TASK = ["builtin/sentiment"]


class LmEvalUnsupported(RosprError, NotImplementedError):
    """An lm-eval request type (or a task shape) the rospr model does not score; the message says
    which and what to use instead."""


@dataclass(frozen=True)
class Grouped:
    """Requests as scorer rows: one ``EncodedExample`` per distinct context, and for each request its
    (row, choice) position."""

    rows: list[EncodedExample]
    where: list[tuple[int, int]]


def group_by_context(pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> Grouped:
    """Group encoded (context, continuation) pairs by context: each distinct context is one row whose
    choices are its distinct continuations, in first-seen order."""
    rows: dict[tuple[int, ...], dict[tuple[int, ...], int]] = {}
    where: list[tuple[tuple[int, ...], int]] = []
    for ctx, cont in pairs:
        choices = rows.setdefault(tuple(ctx), {})
        where.append((tuple(ctx), choices.setdefault(tuple(cont), len(choices))))
    index = {ctx: i for i, ctx in enumerate(rows)}
    encoded = [EncodedExample(list(ctx), [list(c) for c in conts]) for ctx, conts in rows.items()]
    return Grouped(encoded, [(index[ctx], j) for ctx, j in where])


def _ids(tokenizer, texts: list[str], special: bool) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]] if texts else []


def _token_text(tokenizer, token_id: int) -> str:
    """The text of one token id as ``tokenizer.decode`` gives it (special tokens kept)."""
    return tokenizer.decode(token_id)


class LmEvalEncoding:
    """lm-eval's seq2seq tokenisation (``TemplateLM.loglikelihood`` and ``HFLM`` with
    ``backend=seq2seq``; see the module docstring), over the backend's tokenizer."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length
        bos = getattr(tokenizer, "bos_token_id", None)
        self.prefix_id = bos if bos is not None else tokenizer.eos_token_id
        self.prefix_text = _token_text(tokenizer, self.prefix_id)

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per pair. Refuses (``SettingError``) a continuation that
        tokenises to nothing, and one longer than ``max_length`` (lm-eval asserts both)."""
        contexts, continuations = [], []
        for context, continuation in pairs:
            n_spaces = len(context) - len(context.rstrip())
            if context and n_spaces:
                context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
            contexts.append(context)
            continuations.append(continuation)
        empty = [not context for context, _ in pairs]  # lm-eval tests the context before moving its spaces
        ctx_ids: list[list[int]] = [[] for _ in contexts]
        for special in (True, False):  # a context that starts with the prefix token's text gets no special tokens
            idx = [i for i, c in enumerate(contexts) if not empty[i] and c.startswith(self.prefix_text) != special]
            for i, ids in zip(idx, _ids(self.tokenizer, [contexts[i] for i in idx], special)):
                ctx_ids[i] = ids[-self.max_length:]
        out = []
        for i, ((context, text), cont) in enumerate(zip(pairs, _ids(self.tokenizer, continuations, False))):
            ids = ctx_ids[i]
            if empty[i]:  # the prefix token, as lm-eval conditions an empty context on it
                ids, cont = ([self.prefix_id], cont) if not cont or cont[0] != self.prefix_id else (cont[:1], cont[1:])
            if not cont or len(cont) > self.max_length:
                raise SettingError(f"lm-eval request ({context[-40:]!r}, {text[:40]!r}): the continuation has "
                                   f"{len(cont)} tokens; lm-eval scores 1 to max_length={self.max_length}")
            out.append((ids, cont))
        return out


class T0Encoding:
    """T0's rank-classification tokenisation (``rospr.scoring.encode_examples`` under ``convention``):
    the whitespace between context and continuation is the delimiter, dropped from both."""

    def __init__(self, tokenizer, convention: Convention) -> None:
        self.tokenizer, self.convention = tokenizer, convention

    def encode(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        from rospr.data import Example

        texts: dict[str, list[str]] = {}
        for context, continuation in pairs:
            choices = texts.setdefault(context.rstrip(), [])
            if continuation.lstrip() not in choices:
                choices.append(continuation.lstrip())
        examples = [Example("lm-eval", "lm-eval", i, ctx, tuple(choices)) for i, (ctx, choices) in enumerate(texts.items())]
        encoded = dict(zip(texts, encode_examples(self.tokenizer, examples, self.convention)))
        out = []
        for context, continuation in pairs:
            row = encoded[context.rstrip()]
            out.append((row.input_ids, row.choice_ids[texts[context.rstrip()].index(continuation.lstrip())]))
        return out


def lm_eval_max_length(name_or_path: str, tokenizer) -> int:
    """The context length lm-eval's ``hf`` model uses for this checkpoint (``resolve_max_length``):
    a local config's ``n_positions`` / ``max_position_embeddings`` / ``n_ctx`` (its ``text_config``
    first), else the tokenizer's ``model_max_length`` unless unset, else 2048."""
    path = Path(name_or_path) / "config.json"
    if path.is_file():
        config = read_json(path, SettingError, "restore the checkpoint's config.json")
        config = config.get("text_config") or config
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            if config.get(key) is not None:
                return int(config[key])
    model_max = getattr(tokenizer, "model_max_length", None)
    if model_max is None and Path(name_or_path, "tokenizer_config.json").is_file():
        model_max = read_json(Path(name_or_path, "tokenizer_config.json"), SettingError,
                              "restore the checkpoint's tokenizer_config.json").get("model_max_length")
    if model_max is not None and int(model_max) != TOKENIZER_INFINITY:
        return int(model_max)
    return LM_EVAL_DEFAULT_MAX_LENGTH


def _whole(name: str, value: Any, minimum: int = 1) -> int | None:
    """A whole-number model argument (lm-eval passes ints, or strings from ``--model_args``); None
    stays None. Refuses (``SettingError``) anything else and a value below ``minimum``."""
    if value is None:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.lstrip("-").isdigit() or int(text) < minimum:
        raise SettingError(f"rospr model: {name}={value!r}; give a whole number of {minimum} or more")
    return int(text)


def _batch_size(value: Any) -> int:
    """lm-eval's ``batch_size`` (contexts per scorer call here): a whole number, or ``auto`` /
    ``auto:N``, which mean our default (batches are also bounded by ``max_tokens``)."""
    if isinstance(value, str) and value.startswith("auto"):
        log.info("rospr: batch_size=%s means %d contexts per batch (bound them with max_tokens)", value, DEFAULT_BATCH_SIZE)
        return DEFAULT_BATCH_SIZE
    return _whole("batch_size", value) or DEFAULT_BATCH_SIZE


# the config key each model argument sets, named as the user wrote it in errors
MODEL_ARG_OF = {"model.name_or_path": "pretrained", "model.dtype": "dtype", "model.device": "device",
                "model.revision": "revision", "backend": "backend", "triton.url": "url", "triton.protocol": "protocol",
                "scoring.threads": "threads", "onnxruntime.cache_dir": "onnx_cache"}


@register_model("rospr")
class RosprLM(LM):
    """lm-eval's ``LM`` over our ``Scorer`` (see the module docstring).

    Model arguments: ``pretrained`` (checkpoint folder or hub name; the tokenizer is read from it,
    and with onnxruntime the graph is exported from it on first use, cached), ``backend``
    (onnxruntime, triton or torch; default triton when ``url`` is given, else onnxruntime), ``url``
    and ``protocol`` (the Triton server: grpc or http), ``convention`` (lm-eval or t0),
    ``batch_size`` (contexts per scorer call), ``max_tokens`` (padded tokens per call, optional),
    ``max_length``, ``threads``, ``device``, ``dtype``, ``revision``, ``onnx_cache``. Refuses
    (``SettingError``) an unknown argument or value, and what ``create_backend`` refuses.
    """

    def __init__(self, pretrained: str = "build/tiny-t0", backend: str | None = None, url: str | None = None,
                 protocol: str = "grpc", convention: str = "lm-eval", batch_size: Any = DEFAULT_BATCH_SIZE,
                 max_tokens: int | None = None, max_length: int | None = None, threads: int | None = None,
                 device: str | None = None, dtype: str = "float32", revision: str | None = None,
                 onnx_cache: str | None = None, max_batch_size: Any = None, **unknown: Any) -> None:
        super().__init__()
        if unknown:
            raise SettingError(f"rospr model: unknown model_args {sorted(unknown)}; the rospr model takes pretrained, "
                               "backend, url, protocol, convention, batch_size, max_tokens, max_length, threads, device, "
                               "dtype, revision, onnx_cache")
        if convention not in CONVENTIONS:
            raise SettingError(f"rospr model: convention={convention!r}; choose one of {', '.join(CONVENTIONS)}")
        backend = backend or ("triton" if url else "onnxruntime")
        if backend not in BACKENDS:
            raise SettingError(f"rospr model: backend={backend!r}; choose one of {', '.join(BACKENDS)}")
        if url and backend != "triton":
            raise SettingError(f"rospr model: url={url!r} names a Triton server, but backend={backend}; drop one")
        max_length, threads = _whole("max_length", max_length), _whole("threads", threads, minimum=0) or None
        self.batch_size = _batch_size(batch_size)
        self.max_tokens = _whole("max_tokens", max_tokens)
        self.convention = convention
        self.backend = self._create_backend(pretrained, backend, url, protocol, threads, device, dtype, revision,
                                            onnx_cache)
        tokenizer = self.backend.tokenizer
        if convention == "lm-eval":
            self.max_length = max_length or lm_eval_max_length(pretrained, tokenizer)
            self.encoding: LmEvalEncoding | T0Encoding = LmEvalEncoding(tokenizer, self.max_length)
        else:
            self.max_length = max_length or Convention().max_input_tokens
            self.encoding = T0Encoding(tokenizer, Convention(max_input_tokens=self.max_length))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @staticmethod
    def _create_backend(pretrained, backend, url, protocol, threads, device, dtype, revision, onnx_cache):
        from rospr_harness.backends import create_backend
        from rospr_harness.config import load_config

        model = {"name_or_path": str(pretrained), "dtype": dtype, "revision": revision}
        if device is not None:
            model["device"] = str(device)
        tree: dict[str, Any] = {"model": model, "backend": backend, "tasks": _NO_TASK,
                                "scoring": {"threads": threads}}
        if url:
            tree["triton"] = {"url": url, "protocol": protocol}
        if onnx_cache:
            tree["onnxruntime"] = {"cache_dir": str(onnx_cache)}
        return create_backend(load_config(None, tree=tree, source="rospr model_args", names=MODEL_ARG_OF))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``(log-likelihood, False)`` per (context, continuation) request, in order: each distinct
        context scored in one encoder pass with all its continuations. Refuses documents with a single
        continuation (``refuse_single_continuation``)."""
        refuse_single_continuation(requests)
        pairs = [(r.args[0], r.args[1]) for r in requests]
        grouped = group_by_context(self.encoding.encode(pairs))
        log.info("rospr: %d loglikelihood requests, %d contexts (encoder passes), %d choice rows", len(pairs),
                 len(grouped.rows), sum(len(r.choice_ids) for r in grouped.rows))
        scores = score_encoded(self.backend.scorer, grouped.rows, None, self.batch_size, pad_id=self.pad_id,
                               max_tokens=self.max_tokens)
        return [(float(scores[row][choice]), False) for row, choice in grouped.where]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise LmEvalUnsupported("the rospr model scores answer choices (loglikelihood) only: loglikelihood_rolling "
                                "(perplexity tasks) needs windows over whole documents; run those tasks with --model hf")

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        raise LmEvalUnsupported("the rospr model scores answer choices (loglikelihood) only: generate_until needs "
                                "generation, which the t0_scorer graph does not do; run generation tasks with --model hf")


def refuse_single_continuation(requests) -> None:
    """Refuse (``LmEvalUnsupported``) requests where an lm-eval document (task, doc_id) sends exactly one
    continuation: an ``output_type: loglikelihood`` task, whose ``acc`` reads ``is_greedy``, which the
    scorer cannot compute. Requests without lm-eval's metadata (no task name) are not checked."""
    docs = Counter((r.task_name, r.doc_id) for r in requests if getattr(r, "task_name", None) is not None)
    single: dict[str, list] = {}
    for (task, doc), n in docs.items():
        if n == 1:
            single.setdefault(task, []).append(doc)
    if single:
        where = "; ".join(f"task {task}, document {', '.join(map(str, sorted(ids)[:5]))}" for task, ids in sorted(single.items()))
        raise LmEvalUnsupported(
            f"{where}: one continuation to score. An output_type: loglikelihood task's acc reads is_greedy (the "
            "model's argmax at each token), which the rospr scorer does not compute (it returns summed "
            "log-probabilities only): run it with --model hf. A multiple_choice document with a single answer "
            "choice cannot be scored either (one choice always wins): fix its doc_to_choice")
