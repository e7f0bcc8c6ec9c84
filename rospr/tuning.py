"""Prompt tuning: train one soft prompt per (source dataset, hard prompt), backbone frozen.

The loss is the cross-entropy of the target text given the soft prompt and the hard-prompted input,
computed by ``rospr.backbone.PromptedT5.encode`` / ``token_logprobs``: the exact computation that
scores answer choices, so what is trained is what is evaluated. Only the P x D prompt is a
parameter; the backbone is frozen (checked after every backward pass: no gradient reaches it).

Defaults follow Lester et al. (2021) prompt tuning where DESIGN.md asks for it: init from sampled
vocabulary embeddings (the first ``init_vocab_top`` ids, which in a sentencepiece vocabulary are the
most frequent pieces), Adafactor with lr 0.3, parameter scaling off, beta2 decay 0.8, weight decay
1e-5. Our choices where the papers are silent or do not fit a CPU: ``steps`` 1000 (Lester: 30k),
batch 32, the backbone in eval mode (no dropout, so training is deterministic), the mean loss per
target token.

``tune_bank`` trains every job that the bank does not already hold (content-addressed by
``train_key``) and saves each prompt as soon as it is done, so an interrupted tuning resumes where it
stopped. Who trains is the caller's ``Trainer``: ``in_process`` here (one prompt after the other),
or the harness's pool of Ray actors (``harness/method/tune_pool.py``), each holding one
``TuneWorker``. Each prompt has its own seed and runs with ``threads`` intra-op threads either way,
so the numbers do not depend on the path taken.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from rospr.identity import digest_json
from rospr.data import Example
from rospr.softprompt import IDENTITY_KEYS, PromptBank, SoftPrompt, prompt_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneSettings:
    """How a soft prompt is trained. Refuses impossible values at construction."""

    prompt_length: int = field(default=100, metadata={"help": "P, soft prompt vectors"})
    steps: int = 1000
    batch_size: int = 32
    lr: float = 0.3
    optimizer: Literal["adafactor", "adamw"] = "adafactor"
    weight_decay: float = 1e-5
    adafactor_decay_rate: float = -0.8
    clip_threshold: float = 1.0
    init: Literal["vocab", "uniform"] = "vocab"
    init_vocab_top: int = field(default=5000, metadata={"help": "vocab init samples among the first ids"})
    seed: int = 0
    max_input_tokens: int = 512
    max_target_tokens: int = 128
    input_eos: bool = False  # the T0 convention, as in scoring
    threads: int = field(default=1, metadata={"help": "intra-op threads per prompt being trained (in process "
                                                      "and per Ray actor)"})

    def __post_init__(self) -> None:
        for name in ("prompt_length", "steps", "batch_size", "init_vocab_top", "max_input_tokens",
                     "max_target_tokens", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"tune.{name} must be >= 1, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"tune.weight_decay must be >= 0, got {self.weight_decay}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"tune.lr must be a positive number, got {self.lr}")
        if self.optimizer not in ("adafactor", "adamw"):
            raise ValueError(f"tune.optimizer {self.optimizer!r}: choose adafactor or adamw")
        if self.init not in ("vocab", "uniform"):
            raise ValueError(f"tune.init {self.init!r}: choose vocab or uniform")

    def training_fields(self) -> dict:
        """The settings that decide the trained numbers (``threads`` is left out: it is speed)."""
        fields = asdict(self)
        fields.pop("threads")
        return fields


@dataclass(frozen=True)
class TuneJob:
    """One prompt to train: a (source dataset, template) and its labelled training examples."""

    source: str
    template: str
    answer_choices: tuple[str, ...]
    examples: tuple[Example, ...]
    origin: Mapping[str, Any] | None = None  # where the examples came from (split, rows), recorded in the bank

    @property
    def id(self) -> str:
        return prompt_id(self.source, self.template)

    def train_key(self, settings: TuneSettings, backbone: Mapping[str, Any]) -> str:
        """Content address of the prompt: settings, backbone architecture, the training pairs."""
        pairs = [(ex.input_text, target_text(ex)) for ex in self.examples]
        return digest_json({
            "settings": settings.training_fields(),
            "backbone": {k: backbone.get(k) for k in IDENTITY_KEYS},
            "id": self.id, "answer_choices": list(self.answer_choices),
            "pairs": digest_json(pairs),
        })


@dataclass
class TuneResult:
    values: np.ndarray  # float32 [P, D]
    losses: list[float]  # per step
    seed: int


def target_text(ex: Example) -> str:
    """The text a training example teaches: its rendered target, else its gold choice."""
    if ex.target_text:
        return ex.target_text
    gold = ex.gold()
    if gold is None:
        raise ValueError(f"example {ex.task}/{ex.prompt}#{ex.index} has no target to train on")
    return ex.choices[gold]


def prompt_seed(settings: TuneSettings, pid: str) -> int:
    """A per-prompt seed from the run seed and the prompt id: independent of order and workers."""
    return int.from_bytes(hashlib.sha256(f"rospr-tune/{settings.seed}/{pid}".encode()).digest()[:4], "big")


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the ``with`` block with ``n`` intra-op torch threads (None: as they are), then restore
    the count: torch's is per process, so nothing here leaves it changed for other code."""
    import torch

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_prompt(model, settings: TuneSettings, seed: int):
    """The initial prompt [P, D] (float32 torch tensor): sampled vocabulary embeddings, or uniform."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    weight = model.get_input_embeddings().weight.detach().float().cpu()
    if settings.init == "vocab":
        top = min(settings.init_vocab_top, weight.shape[0])
        ids = torch.randint(0, top, (settings.prompt_length,), generator=gen)
        return weight[ids].clone()
    return (torch.rand((settings.prompt_length, weight.shape[1]), generator=gen) - 0.5)  # Lester: U(-0.5, 0.5)


def _encode_pairs(tokenizer, examples: Sequence[Example], settings: TuneSettings):
    eos = tokenizer.eos_token_id
    inputs = tokenizer([ex.input_text for ex in examples], add_special_tokens=False)["input_ids"]
    targets = tokenizer([target_text(ex) for ex in examples], add_special_tokens=False)["input_ids"]
    pairs = []
    for ex, i, t in zip(examples, inputs, targets):
        i = (list(i) + ([eos] if settings.input_eos else []))[: settings.max_input_tokens] or [eos]
        t = list(t)[: settings.max_target_tokens - 1] + [eos]  # the target ends with EOS, like choices
        pairs.append((i, t))
    return pairs


def _batch(pairs, idx, pad: int):
    import torch

    s = max(len(pairs[i][0]) for i in idx)
    t = max(len(pairs[i][1]) for i in idx)
    ids = torch.full((len(idx), s), pad, dtype=torch.long)
    am = torch.zeros((len(idx), s), dtype=torch.long)
    tgt = torch.full((len(idx), 1, t), pad, dtype=torch.long)
    tm = torch.zeros((len(idx), 1, t), dtype=torch.long)
    for row, i in enumerate(idx):
        a, b = pairs[i]
        ids[row, : len(a)] = torch.tensor(a)
        am[row, : len(a)] = 1
        tgt[row, 0, : len(b)] = torch.tensor(b)
        tm[row, 0, : len(b)] = 1
    return ids, am, tgt, tm


def _optimizer(param, settings: TuneSettings):
    import torch

    if settings.optimizer == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor([param], lr=settings.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         decay_rate=settings.adafactor_decay_rate, clip_threshold=settings.clip_threshold,
                         weight_decay=settings.weight_decay)
    return torch.optim.AdamW([param], lr=settings.lr, weight_decay=settings.weight_decay)


def tune_prompt(model, tokenizer, examples: Sequence[Example], settings: TuneSettings, seed: int,
                on_step: Callable[[int, float], None] | None = None) -> TuneResult:
    """Train one soft prompt on ``examples`` (their input text and target) with ``model`` frozen.

    Returns the prompt (float32 [P, D]) and the loss of every step. Refuses (``RuntimeError``) a
    backbone that receives a gradient, and (``ValueError``) examples without a target.
    """
    import torch

    from rospr.backbone import PromptedT5

    if not examples:
        raise ValueError("no training examples")
    model.eval()  # no dropout: a frozen backbone, deterministic training
    model.requires_grad_(False)
    core = PromptedT5(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    pairs = _encode_pairs(tokenizer, examples, settings)
    pad = tokenizer.pad_token_id or 0
    prompt = torch.nn.Parameter(init_prompt(model, settings, seed).to(device))
    opt = _optimizer(prompt, settings)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses: list[float] = []
    for step in range(settings.steps):
        if len(order) < settings.batch_size:
            order += rng.permutation(len(pairs)).tolist()  # epochs of shuffled examples
        idx, order = order[: settings.batch_size], order[settings.batch_size:]
        ids, am, tgt, tm = (x.to(device) for x in _batch(pairs, idx, pad))
        b = ids.shape[0]
        pe = prompt.to(dtype).unsqueeze(0).expand(b, -1, -1)
        pm = torch.ones((b, prompt.shape[0]), dtype=am.dtype, device=device)
        hidden, enc_mask = core.encode(ids, am, pe, pm)
        lp = core.token_logprobs(hidden, enc_mask, tgt, tm)
        loss = -lp.sum() / tm.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0:
            leaked = [n for n, p in model.named_parameters() if p.grad is not None or p.requires_grad]
            if leaked:
                raise RuntimeError(f"prompt tuning: the backbone is not frozen ({leaked[:3]} ... get gradients)")
        opt.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise RuntimeError(f"prompt tuning diverged at step {step} (loss {value}); lower tune.lr")
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return TuneResult(prompt.detach().float().cpu().numpy().astype(np.float32), losses, seed)


def _final_loss(losses: list[float]) -> float:
    tail = losses[-max(1, min(10, len(losses))):]  # mean of the last steps: one batch is noisy
    return float(np.mean(tail))


class TuneWorker:
    """Holds one backbone and trains prompts with it: in process (``in_process``), or wherever a
    harness places it (the harness runs it as a Ray actor). The per-prompt training function."""

    def __init__(self, name_or_path: str, settings: TuneSettings, model=None, tokenizer=None) -> None:
        if model is None:
            from rospr.backbone import load_backbone

            with torch_threads(settings.threads):
                model, tokenizer, _ = load_backbone(name_or_path)
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    def tune(self, job: TuneJob) -> tuple[str, TuneResult]:
        """Train ``job``'s prompt with its own seed; returns (prompt id, result)."""
        seed = prompt_seed(self.settings, job.id)
        with torch_threads(self.settings.threads):
            result = tune_prompt(self.model, self.tokenizer, job.examples, self.settings, seed)
        return job.id, result


# How the prompts a bank lacks get trained: called with those jobs and ``save(prompt id, result)``,
# which it must call once per job as soon as that prompt is trained (any order).
Trainer = Callable[[Sequence[TuneJob], Callable[[str, TuneResult], None]], None]


def in_process(name_or_path: str, settings: TuneSettings, model=None, tokenizer=None) -> Trainer:
    """A ``Trainer`` that trains one prompt after the other with one ``TuneWorker`` in this process
    (``model``/``tokenizer`` when already loaded, else loaded from ``name_or_path`` when needed)."""

    def train(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        worker = TuneWorker(name_or_path, settings, model, tokenizer)
        for job in todo:
            save(*worker.tune(job))

    return train


def tune_bank(
    jobs: Sequence[TuneJob],
    bank_dir: str | Path,
    settings: TuneSettings,
    backbone: Mapping[str, Any],
    train: Trainer,
    on_done: Callable[[SoftPrompt, bool], None] | None = None,
) -> PromptBank:
    """Make sure the bank at ``bank_dir`` holds a prompt for every job; train the missing ones.

    ``backbone`` is the model's identity (``ModelIdentity.as_dict()``); ``train`` trains the jobs the
    bank lacks (``in_process``, or the harness's Ray pool). A prompt already in the bank with the same
    ``train_key`` and intact files is reused; any other is (re)trained and saved as soon as it
    finishes. ``on_done(prompt, reused)`` is called per job. Returns the bank with every job's prompt
    loaded. Refuses a bank of another backbone, and two jobs of one (source, template).
    """
    bank = PromptBank.open(bank_dir, backbone)
    keys = {job.id: job.train_key(settings, backbone) for job in jobs}
    if len(keys) != len(jobs):
        raise ValueError("two tuning jobs have the same (source, template)")
    todo = []
    for job in jobs:
        if bank.has_valid(job.id, keys[job.id]):
            if on_done:
                on_done(bank.get(job.id), True)
        else:
            todo.append(job)
    by_id = {job.id: job for job in jobs}

    def save(pid: str, result: TuneResult) -> None:
        job = by_id[pid]
        prompt = SoftPrompt(pid, job.source, job.template, job.answer_choices, result.values, settings.steps,
                            _final_loss(result.losses), result.seed, keys[pid])
        saved = bank.add(prompt, {"first_loss": result.losses[0], "n_examples": len(job.examples),
                                  "origin": dict(job.origin or {})})
        log.debug("tuned %s: loss %.3f -> %.3f", pid, result.losses[0], saved.final_loss)
        if on_done:
            on_done(saved, False)

    if todo:
        train(todo, save)
    return PromptBank.load(bank_dir, backbone, ids=[job.id for job in jobs])
