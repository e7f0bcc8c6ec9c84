"""Rank classification: the Scorer protocol, the tokenisation convention, length-bucketed scoring.

A ``Scorer`` turns a ``ScoreBatch`` (the tensor contract of the exported graphs, as numpy arrays)
into the summed log-probability of each answer choice. Everything here is backend-agnostic: the
PyTorch, onnxruntime and Triton backends implement ``Scorer``; this module encodes examples, plans
length-bucketed batches, restores the original order and takes the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from rospr.data import Example
from rospr.errors import SettingError


@dataclass(frozen=True)
class Convention:
    """How inputs and choices are tokenised and scored.

    T0's convention is the default: inputs without EOS, choices with EOS, no length normalisation
    (a choice's score is the plain sum of its token log-probabilities). ``max_input_tokens``
    truncates long inputs on the right, as the T0 evaluation's tokenizer call does; truncations are
    counted. Choices are never truncated below ``max_choice_tokens``.
    """

    input_eos: bool = field(default=False, metadata={"help": "an EOS after the input (T0: no)"})
    choice_eos: bool = field(default=True, metadata={"help": "an EOS after each choice (T0: yes)"})
    length_normalize: bool = field(default=False, metadata={"help": "score / choice tokens (T0: no)"})
    max_input_tokens: int = 1024
    max_choice_tokens: int = 256

    def __post_init__(self) -> None:
        if self.max_input_tokens < 1 or self.max_choice_tokens < 1:
            raise SettingError("scoring.max_input_tokens and scoring.max_choice_tokens must be >= 1")
        if self.choice_eos and self.max_choice_tokens < 2:  # every choice would be EOS alone: all tied
            raise SettingError("scoring.max_choice_tokens must be >= 2 with scoring.choice_eos=true (one token "
                               "of the choice besides its EOS); raise it")


@dataclass
class EncodedExample:
    """Token ids of one example: its input and each of its choices."""

    input_ids: list[int]
    choice_ids: list[list[int]]
    truncated: bool = False


@dataclass
class ScoreBatch:
    """One batch in the tensor contract (numpy, int64 ids and masks, float32 prompts).

    ``prompt_embeds`` is [B, P, D] with P possibly 0 (no soft prompt anywhere in the batch);
    ``prompt_mask`` [B, P] marks the rows' real prompt vectors (right-aligned: a shorter prompt is
    padded in front). ``n_choices`` [B] says how many of
    the C choice rows of each example are real (the rest are padding with an all-zero mask).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    prompt_embeds: np.ndarray
    prompt_mask: np.ndarray
    choice_ids: np.ndarray
    choice_mask: np.ndarray
    n_choices: np.ndarray

    def feeds(self, prompt_dtype=np.float32) -> dict[str, np.ndarray]:
        """The graph inputs of this batch (``t0_scorer``'s six tensors, contiguous, int64 ids and
        masks, ``prompt_embeds`` as ``prompt_dtype``): what onnxruntime and Triton are sent. P=0 (no
        prompt in the batch) becomes one zero vector with a zero mask, which the contract defines as
        "no soft prompt": exported graphs take P >= 1."""
        prompt, prompt_mask = self.prompt_embeds, self.prompt_mask
        if prompt.shape[1] == 0:
            prompt = np.zeros((prompt.shape[0], 1, prompt.shape[2]), np.float32)
            prompt_mask = np.zeros((prompt.shape[0], 1), np.int64)
        c = np.ascontiguousarray
        return {
            "input_ids": c(self.input_ids, dtype=np.int64),
            "attention_mask": c(self.attention_mask, dtype=np.int64),
            "prompt_embeds": c(prompt, dtype=prompt_dtype),
            "prompt_mask": c(prompt_mask, dtype=np.int64),
            "choice_ids": c(self.choice_ids, dtype=np.int64),
            "choice_mask": c(self.choice_mask, dtype=np.int64),
        }

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


@runtime_checkable
class Scorer(Protocol):
    """Scores every choice of a batch. ``prompt_dim`` is the backbone's d_model."""

    prompt_dim: int

    def score(self, batch: ScoreBatch) -> np.ndarray:
        """Summed log-probability of each choice, float32 [B, C] (padded choices: any value)."""
        ...


def encode_examples(tokenizer, examples: Sequence[Example], convention: Convention) -> list[EncodedExample]:
    """Tokenise inputs and choices under ``convention``. Refuses (``SettingError`` naming the example) a
    choice with no token of its own (``""``, blanks): it would be scored as its EOS alone, or as
    nothing, and so win or lose on the model's wish to stop, not on its text."""
    eos = tokenizer.eos_token_id
    texts = [ex.input_text for ex in examples]
    input_tok = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    flat_choices = [c for ex in examples for c in ex.choices]
    choice_tok = tokenizer(flat_choices, add_special_tokens=False)["input_ids"] if flat_choices else []
    out: list[EncodedExample] = []
    k = 0
    for ex, ids in zip(examples, input_tok):
        ids = list(ids)
        if convention.input_eos:
            ids.append(eos)
        truncated = len(ids) > convention.max_input_tokens
        if truncated:
            ids = ids[: convention.max_input_tokens]
        choices = []
        for choice in ex.choices:
            cids = list(choice_tok[k])[: convention.max_choice_tokens - int(convention.choice_eos)]
            k += 1
            if not cids:
                raise SettingError(
                    f"task {ex.task}, prompt {ex.prompt}, example {ex.index}: answer choice {choice!r} has no "
                    f"token of its own (it would be scored as {'its EOS alone' if convention.choice_eos else 'nothing'}"
                    ", whatever the input says); fix the task's or template's answer choices, or drop the example"
                )
            if convention.choice_eos:
                cids.append(eos)
            choices.append(cids)
        if not ids:
            ids = [eos]  # an empty input still needs one encoder position
        out.append(EncodedExample(ids, choices, truncated))
    return out


def batch_tokens(rows: Sequence[EncodedExample]) -> int:
    """The padded tokens of ``rows`` as one batch: B x (S + C x T), the input padded to its longest
    row plus every choice padded to the longest choice of the batch's largest choice set. It bounds
    both the encoder's and the decoder's activations (and GEMM sizes) of the batch."""
    s = max(len(e.input_ids) for e in rows)
    c = max(len(e.choice_ids) for e in rows)
    t = max(_longest_choice(e) for e in rows)
    return len(rows) * (s + c * t)


def _longest_choice(e: EncodedExample) -> int:
    return max((len(ch) for ch in e.choice_ids), default=0)


def plan_batches(encoded: Sequence[EncodedExample], batch_size: int, bucket: bool = True,
                 max_tokens: int | None = None) -> list[list[int]]:
    """Split example indices into batches of at most ``batch_size`` rows and, with ``max_tokens``,
    at most that many padded tokens (``batch_tokens``); a row that alone exceeds ``max_tokens`` is a
    batch of its own.

    With ``bucket``, examples are sorted by input length (then total choice length) so a batch
    holds similar lengths and little padding; the sort is stable, so the plan is deterministic.
    The plan depends on the rows and the two limits only.
    """
    if batch_size < 1:
        raise SettingError("scoring.batch_size must be >= 1")
    if max_tokens is not None and max_tokens < 1:
        raise SettingError("scoring.max_tokens must be >= 1 (or null: no token budget)")
    order = list(range(len(encoded)))
    if bucket:
        order.sort(key=lambda i: (len(encoded[i].input_ids), sum(len(c) for c in encoded[i].choice_ids)), reverse=True)
    if max_tokens is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    current: list[int] = []
    s = c = t = 0  # the padded shape of ``current``
    for i in order:
        e = encoded[i]
        s2, c2 = max(s, len(e.input_ids)), max(c, len(e.choice_ids))
        t2 = max(t, _longest_choice(e))
        if current and (len(current) == batch_size or (len(current) + 1) * (s2 + c2 * t2) > max_tokens):
            batches.append(current)
            current, (s2, c2, t2) = [], (len(e.input_ids), len(e.choice_ids), _longest_choice(e))
        current.append(i)
        s, c, t = s2, c2, t2
    if current:
        batches.append(current)
    return batches


def collate(
    encoded: Sequence[EncodedExample],
    prompts: Sequence[np.ndarray | None],
    prompt_dim: int,
    pad_id: int = 0,
) -> ScoreBatch:
    """Pad a list of encoded examples (and one soft prompt [P_i, D] or None per row) into a batch."""
    b = len(encoded)
    s = max(len(e.input_ids) for e in encoded)
    c = max(len(e.choice_ids) for e in encoded)
    t = max(len(ch) for e in encoded for ch in e.choice_ids)
    p = max((0 if pr is None else pr.shape[0]) for pr in prompts)
    input_ids = np.full((b, s), pad_id, dtype=np.int64)
    attention_mask = np.zeros((b, s), dtype=np.int64)
    choice_ids = np.full((b, c, t), pad_id, dtype=np.int64)
    choice_mask = np.zeros((b, c, t), dtype=np.int64)
    prompt_embeds = np.zeros((b, p, prompt_dim), dtype=np.float32)
    prompt_mask = np.zeros((b, p), dtype=np.int64)
    n_choices = np.zeros((b,), dtype=np.int64)
    for i, (e, pr) in enumerate(zip(encoded, prompts)):
        input_ids[i, : len(e.input_ids)] = e.input_ids
        attention_mask[i, : len(e.input_ids)] = 1
        n_choices[i] = len(e.choice_ids)
        for j, ch in enumerate(e.choice_ids):
            choice_ids[i, j, : len(ch)] = ch
            choice_mask[i, j, : len(ch)] = 1
        if pr is not None:
            if pr.ndim != 2 or pr.shape[1] != prompt_dim:
                raise SettingError(f"soft prompt of shape {pr.shape} does not fit a backbone of d_model={prompt_dim}")
            # Right-aligned: a shorter prompt's padding goes in front, so its vectors stay next to
            # the input. T5's attention is relative; padding between prompt and input would move
            # them apart and change the scores with the batch's composition.
            prompt_embeds[i, p - pr.shape[0] :] = pr
            prompt_mask[i, p - pr.shape[0] :] = 1
    return ScoreBatch(input_ids, attention_mask, prompt_embeds, prompt_mask, choice_ids, choice_mask, n_choices)


def score_encoded(
    scorer: Scorer,
    encoded: Sequence[EncodedExample],
    prompt: np.ndarray | None | Sequence[np.ndarray | None],
    batch_size: int,
    pad_id: int = 0,
    bucket: bool = True,
    on_batch: Callable[[int], None] | None = None,
    max_tokens: int | None = None,
) -> list[np.ndarray]:
    """Score every choice of every example; returns one float array per example, in input order.

    ``prompt`` is one soft prompt [P, D] for all rows, ``None`` for the T0 baseline, or a sequence
    with one entry per example. ``on_batch(n)`` is called after each batch with its size. Batches are
    ``plan_batches(encoded, batch_size, bucket, max_tokens)``.
    """
    if prompt is None or isinstance(prompt, np.ndarray):
        per_row: Sequence[np.ndarray | None] = [prompt] * len(encoded)
    else:
        per_row = prompt
        if len(per_row) != len(encoded):
            raise ValueError(f"{len(per_row)} prompts for {len(encoded)} examples")
    results: list[np.ndarray | None] = [None] * len(encoded)
    for idx in plan_batches(encoded, batch_size, bucket, max_tokens):
        scores = score_batch(scorer, [encoded[i] for i in idx], [per_row[i] for i in idx], pad_id)
        for i, sc in zip(idx, scores):
            results[i] = sc
        if on_batch is not None:
            on_batch(len(idx))
    return results  # type: ignore[return-value]


def score_batch(scorer: Scorer, encoded: Sequence[EncodedExample], prompts: Sequence[np.ndarray | None],
                pad_id: int = 0) -> list[np.ndarray]:
    """Score one planned batch (rows in the order given): one float32 array of choice scores per row.

    The unit of work of the runner's scoring actors; ``score_encoded`` is this over ``plan_batches``.
    """
    batch = collate(encoded, prompts, scorer.prompt_dim, pad_id)
    scores = np.asarray(scorer.score(batch), dtype=np.float32)
    if scores.shape != batch.choice_ids.shape[:2]:
        raise ValueError(f"scorer returned shape {scores.shape}, expected {batch.choice_ids.shape[:2]}")
    return [scores[row, : batch.n_choices[row]].copy() for row in range(batch.size)]


def _ranked_values(scores: np.ndarray, encoded: EncodedExample, convention: Convention) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if convention.length_normalize:
        values = values / np.array([len(c) for c in encoded.choice_ids], dtype=np.float64)
    return values


def rank_classify(scores: np.ndarray, encoded: EncodedExample, convention: Convention) -> int:
    """The predicted choice: argmax of the (optionally length-normalised) scores; ties -> first
    (``tied_choices`` says which choices share the top, so that a tie earns its fair credit)."""
    return int(np.argmax(_ranked_values(scores, encoded, convention)))


def tied_choices(scores: np.ndarray, encoded: EncodedExample, convention: Convention) -> list[int]:
    """Every choice whose (optionally length-normalised) score equals the top one, in order; one
    index, the argmax, when there is no tie (or a score is not finite)."""
    values = _ranked_values(scores, encoded, convention)
    if not np.all(np.isfinite(values)):
        return [int(np.argmax(values))]
    return [int(i) for i in np.flatnonzero(values == values.max())]
