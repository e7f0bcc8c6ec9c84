"""Prompt tuning: train one soft prompt per (source dataset, hard prompt), backbone frozen.

The loss is the cross-entropy of the target text given the soft prompt and the hard-prompted input,
computed by ``rospr.backbone.PromptedT5.encode`` / ``token_logprobs``: the exact computation that
scores answer choices, so what is trained is what is evaluated. Only the P x D prompt is a
parameter; the backbone is frozen (checked after every backward pass: no gradient reaches it).

Defaults follow Lester et al. (2021) prompt tuning (docs/method.md gives each source): init from sampled
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
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping, Sequence

import numpy as np

from rospr.canonical import derive_seed, digest_json
from rospr.errors import SettingError, StateError
from rospr.data import Example
from rospr.softprompt import IDENTITY_KEYS, PromptBank, SoftPrompt, prompt_id

log = logging.getLogger(__name__)
STEP_LOG_S = 30.0  # a prompt still tuning tells its step and loss this often (a short one says nothing)


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
    device: str | None = field(default=None, metadata={"help": "cpu, cuda or cuda:N; null: the model's device "
                                                               "(model.device in a run)"})
    dtype: Literal["float32", "bfloat16"] = field(default="float32", metadata={
        "help": "backbone weights; bfloat16 keeps a float32 master prompt and optimizer state"})
    micro_batch_size: int | None = field(default=None, metadata={
        "help": "examples per forward/backward, gradients accumulated over the batch; null: the whole batch"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute the frozen backbone's activations in backward (less memory, ~1/3 more compute)"})
    group_by_length: bool = field(default=False, metadata={
        "help": "batches of rows of similar input length (each padded to its own longest): less padding, "
                "other rows share a step"})

    def __post_init__(self) -> None:
        for name, top in _UPPER.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise SettingError(f"rospr.tune.{name} must be >= 1 and <= {top} (a whole number), got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise SettingError(f"rospr.tune.seed must be >= 0 and < 2**63 (a whole number), got {self.seed!r}")
        if self.dtype not in DTYPES:
            raise SettingError(f"rospr.tune.dtype={self.dtype!r}: choose float32 or bfloat16")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise SettingError(f"rospr.tune.device={self.device!r}: give cpu, cuda or cuda:N (or null for the model's device)")
        m = self.micro_batch_size
        if m is not None and (m < 1 or self.batch_size % m):
            raise SettingError(f"rospr.tune.micro_batch_size={m} does not divide rospr.tune.batch_size={self.batch_size}; "
                             f"give a divisor of it ({_divisors(self.batch_size)}) or null for the whole batch")
        _check_range("lr", self.lr, 0, MAX_LR, low_open=True)
        _check_range("weight_decay", self.weight_decay, 0, 1)
        _check_range("clip_threshold", self.clip_threshold, 0, 1e6, low_open=True)
        _check_range("adafactor_decay_rate", self.adafactor_decay_rate, -1, 0, high_open=True)
        if self.optimizer not in ("adafactor", "adamw"):
            raise SettingError(f"tune.optimizer {self.optimizer!r}: choose adafactor or adamw")
        if self.init not in ("vocab", "uniform"):
            raise SettingError(f"tune.init {self.init!r}: choose vocab or uniform")

    def training_fields(self) -> dict:
        """The settings that decide the trained numbers, hence the prompt's ``train_key``.

        Left out: ``threads``, ``micro_batch_size`` and ``gradient_checkpointing`` (speed and memory
        only: accumulation and recomputation give the same prompt, tests/unit/rospr/test_tuning.py), and
        ``device`` (float32 on a GPU differs from the CPU by reduction order only, ~1e-6: a bank moved
        between machines is reused, not retrained: by design, a bank is tuned on a GPU and scored on CPUs;
        the device class each prompt was tuned on is recorded in its entry, ``device``). ``dtype`` changes the numbers and is kept, except
        at float32, so that banks tuned before it existed keep their keys; ``group_by_length`` (which
        rows share a step) likewise, except when off.
        """
        fields = asdict(self)
        for speed_only in ("threads", "device", "micro_batch_size", "gradient_checkpointing"):
            fields.pop(speed_only)
        if fields["dtype"] == "float32":
            fields.pop("dtype")
        if not fields["group_by_length"]:
            fields.pop("group_by_length")
        return fields

    @property
    def micro_batch(self) -> int:
        """Examples per forward/backward pass."""
        return self.micro_batch_size or self.batch_size


# Upper bounds far above any real run (T0: P=100, batch 32, 1k-30k steps, 512/128 tokens): a value past
# one is a typo (an extra zero) that would otherwise fail hours later, out of memory or in the tokenizer.
_UPPER = {"prompt_length": 4096, "steps": 10**7, "batch_size": 65536, "init_vocab_top": 10**7,
          "max_input_tokens": 65536, "max_target_tokens": 65536, "threads": 1024}
MAX_LR = 100.0  # prompt tuning's usual lr is 0.3 (Lester et al.); beyond 100 every step diverges


def _check_range(name: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    """Refuse (``ValueError`` naming the setting and the range) a non-number, NaN, inf or ``value``
    outside [low, high] (``low_open``/``high_open``: that end excluded)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise SettingError(f"rospr.tune.{name} must be a finite number in {interval}, got {value!r}")


DTYPES = ("float32", "bfloat16")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def resolve_device(settings: TuneSettings, model=None):
    """The ``torch.device`` tuning runs on: ``settings.device``, else ``model``'s device, else the CPU.

    Refuses (``ValueError``, naming the setting and the fix): cuda where torch sees no GPU (a CPU
    build, no driver, or a Ray actor that reserved no GPU), cuda:N beyond the visible GPUs, and
    bfloat16 on a GPU without it (compute capability below 8.0). Under Ray each actor sees only the
    GPUs it reserved, as cuda:0...: give ``cuda`` there, not another actor's index.
    """
    import torch

    if settings.device is not None:
        device = torch.device(settings.device)
    elif model is not None:
        device = next(model.parameters()).device
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError(f"rospr.tune.device={settings.device or device}: torch sees no GPU here "
                             "(torch.cuda.is_available() is false: a CPU build of torch, no driver, or no GPU "
                             "reserved: rospr.tune.num_gpus_per_worker); set rospr.tune.device=cpu or run where a GPU is")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingError(f"rospr.tune.device={settings.device}: only {count} GPU(s) visible (cuda:0..cuda:{count - 1}); "
                             "give one of them, or cuda (each Ray actor sees its own GPUs from cuda:0)")
        if settings.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(device)
            raise SettingError(f"rospr.tune.dtype=bfloat16: {name} has no bfloat16 (compute capability below 8.0); "
                             "set rospr.tune.dtype=float32")
    return device


def torch_dtype(settings: TuneSettings):
    """The backbone's ``torch.dtype`` for ``settings.dtype``."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[settings.dtype]


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
    device: str | None = None  # the device class it was tuned on ("cpu", "cuda"): recorded, not keyed


def target_text(ex: Example) -> str:
    """The text a training example teaches: its rendered target, else its gold choice."""
    if ex.target_text:
        return ex.target_text
    gold = ex.gold()
    if gold is None:
        raise SettingError(f"example {ex.task}/{ex.prompt}#{ex.index} has no target to train on")
    return ex.choices[gold]


def prompt_seed(settings: TuneSettings, pid: str) -> int:
    """A per-prompt seed from the run seed and the prompt id: independent of order and workers."""
    return derive_seed("rospr-tune", settings.seed, pid, bits=32)


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
    weight = model.get_input_embeddings().weight.detach()
    if settings.init == "vocab":
        top = min(settings.init_vocab_top, weight.shape[0])
        ids = torch.randint(0, top, (settings.prompt_length,), generator=gen)
        # the P sampled rows only, then float32 on the CPU: not a float32 CPU copy of the whole table
        # (263 MB for T0-3B's bfloat16 one on a GPU) per prompt
        return weight.index_select(0, ids.to(weight.device)).float().cpu()
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


MEGA_BATCHES = 50  # batches per mega-batch sorted by length, as transformers' LengthGroupedSampler


def step_batches(pairs: Sequence[tuple[list[int], list[int]]], settings: TuneSettings,
                 seed: int) -> Iterator[list[int]]:
    """The rows (indices into ``pairs``) of every training step, endlessly, drawn with ``seed``.

    Off ``group_by_length``: epochs of shuffled rows, one after the other, ``batch_size`` rows a
    step (a step may span two epochs). On: each epoch is ``length_grouped_epoch``'s batches, one a
    step (the epoch's last may be smaller)."""
    rng = np.random.default_rng(seed)
    if settings.group_by_length:
        lengths = [len(i) for i, _t in pairs]  # the input is what a batch pads (the decoder runs packed)
        while True:
            yield from length_grouped_epoch(lengths, settings.batch_size, rng)
    order: list[int] = []
    while True:
        if len(order) < settings.batch_size:
            order += rng.permutation(len(pairs)).tolist()  # epochs of shuffled examples
        idx, order = order[: settings.batch_size], order[settings.batch_size:]
        yield idx


def length_grouped_epoch(lengths: Sequence[int], batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch of batches of similar length, every row exactly once: the rows shuffled, cut into
    mega-batches of ``MEGA_BATCHES`` batches, each sorted by length (longest first, stable) and cut
    into batches of ``batch_size``, then the batches' order shuffled (transformers' ``group_by_length``,
    with the batch order shuffled too). Only the last mega-batch's last batch may be smaller."""
    perm = rng.permutation(len(lengths)).tolist()
    mega = batch_size * MEGA_BATCHES
    batches = []
    for start in range(0, len(perm), mega):
        rows = sorted(perm[start: start + mega], key=lambda i: -lengths[i])
        batches += [rows[k: k + batch_size] for k in range(0, len(rows), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


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


def place_backbone(model, settings: TuneSettings):
    """Move ``model`` (in place) to the device and dtype ``settings`` train on; returns it.

    Refuses what ``resolve_device`` refuses. Used on a backbone of one's own: the shared one of a run
    stays where it is (``TuneWorker`` loads its own copy when the run's does not match)."""
    return model.to(device=resolve_device(settings, model), dtype=torch_dtype(settings))


def _is_placed(model, settings: TuneSettings) -> bool:
    device = resolve_device(settings, model)
    param = next(model.parameters())
    # "cuda" (no index) is the current GPU: a model on any GPU index counts as placed for it
    here = param.device.type == device.type and (device.index is None or param.device.index == device.index)
    return here and param.dtype == torch_dtype(settings)


def _check_placed(model, settings: TuneSettings):
    """The device to train on; refuses (``ValueError``) a model elsewhere or in another dtype."""
    param = next(model.parameters())
    if not _is_placed(model, settings):
        device = resolve_device(settings, model)
        raise SettingError(f"prompt tuning: the backbone is {param.dtype} on {param.device}, the settings ask for "
                         f"{settings.dtype} on {device} (rospr.tune.device / rospr.tune.dtype); move it first "
                         "(rospr.tuning.place_backbone) or change the settings")
    return param.device


def _micro_loss(core, prompt, batch, device):
    """Summed negative log-likelihood (float32) of one micro-batch's target tokens."""
    import torch

    ids, am, tgt, tm = (x.to(device) for x in batch)
    b = ids.shape[0]
    pe = prompt.to(core.model.dtype).unsqueeze(0).expand(b, -1, -1)  # the float32 master, cast for the forward
    pm = torch.ones((b, prompt.shape[0]), dtype=am.dtype, device=device)
    hidden, enc_mask = core.encode(ids, am, pe, pm)
    return -core.token_logprobs(hidden, enc_mask, tgt, tm).float().sum()


def tune_prompt(model, tokenizer, examples: Sequence[Example], settings: TuneSettings, seed: int,
                on_step: Callable[[int, float], None] | None = None) -> TuneResult:
    """Train one soft prompt on ``examples`` (their input text and target) with ``model`` frozen.

    ``model`` must already be on ``settings``' device and dtype (``place_backbone``). Each step's
    loss is the mean negative log-likelihood per target token of its batch; with
    ``micro_batch_size`` the batch runs in slices whose summed losses are divided by the whole
    batch's target tokens, so the gradient is the full batch's. In bfloat16 the backbone computes in
    bfloat16 while the prompt (the only parameter) and the optimizer state stay float32 and the loss
    is summed in float32 (log-softmax included). bfloat16 runs on the CPU too (slowly: the same code
    as on a GPU, which is what the CPU test checks); not ``torch.autocast``, which would keep float32
    weights and cast them at every matmul: twice the weight memory that bfloat16 is there to save.

    Returns the prompt (float32 [P, D]) and the loss of every step. Refuses (``RuntimeError``) a
    backbone that receives a gradient, (``ValueError``) examples without a target, and a model that
    is not where ``settings`` ask (``resolve_device``'s refusals included).
    """
    import torch

    from rospr.backbone import PromptedT5

    if not examples:
        raise SettingError("no training examples")
    device = _check_placed(model, settings)
    model.eval()  # no dropout: a frozen backbone, deterministic training
    model.requires_grad_(False)
    core = PromptedT5(model, checkpoint_blocks=settings.gradient_checkpointing)
    pairs = _encode_pairs(tokenizer, examples, settings)
    pad = tokenizer.pad_token_id or 0
    prompt = torch.nn.Parameter(init_prompt(model, settings, seed).to(device))  # float32 master copy
    opt = _optimizer(prompt, settings)
    batches = step_batches(pairs, settings, seed)
    losses: list[float] = []
    m = settings.micro_batch
    for step in range(settings.steps):
        idx = next(batches)
        n_tokens = sum(len(pairs[i][1]) for i in idx)  # the batch's target tokens: one normaliser for all slices
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), dtype=torch.float32, device=device)
        for start in range(0, len(idx), m):  # each slice padded to its own longest row
            loss = _micro_loss(core, prompt, _batch(pairs, idx[start: start + m], pad), device) / n_tokens
            loss.backward()
            total += loss.detach()
        if step == 0:
            leaked = [n for n, p in model.named_parameters() if p.grad is not None or p.requires_grad]
            if leaked:
                raise RuntimeError(f"prompt tuning: the backbone is not frozen ({leaked[:3]} ... get gradients)")
        opt.step()
        value = float(total)
        if not math.isfinite(value):
            raise StateError(f"prompt tuning diverged at step {step} (loss {value}); lower tune.lr")
        losses.append(value)
        if on_step is not None:
            on_step(step, value)
    return TuneResult(prompt.detach().float().cpu().numpy().astype(np.float32), losses, seed, device.type)


def _final_loss(losses: list[float]) -> float:
    tail = losses[-max(1, min(10, len(losses))):]  # mean of the last steps: one batch is noisy
    return float(np.mean(tail))


class TuneWorker:
    """Holds one backbone and trains prompts with it: in process (``in_process``), or wherever a
    harness places it (the harness runs it as a Ray actor). The per-prompt training function."""

    def __init__(self, name_or_path: str, settings: TuneSettings, model=None, tokenizer=None,
                 revision: str | None = None) -> None:
        """Uses ``model``/``tokenizer`` when given and already on ``settings``' device and dtype, else
        loads its own copy there (a hub checkpoint at ``revision``; the given one is left untouched).
        Refuses what ``resolve_device``
        refuses, before loading anything."""
        self.device = resolve_device(settings, model)
        if model is not None and not _is_placed(model, settings):
            log.info("tuning loads its own backbone in %s on %s (the run's is elsewhere)", settings.dtype, self.device)
            model = None
        if model is None:
            from rospr.backbone import load_backbone

            with torch_threads(settings.threads):
                model, tokenizer, _ = load_backbone(name_or_path, dtype=torch_dtype(settings), revision=revision)
                model.to(self.device)
        self.model, self.tokenizer, self.settings = model, tokenizer, settings

    def tune(self, job: TuneJob) -> tuple[str, TuneResult]:
        """Train ``job``'s prompt with its own seed; returns (prompt id, result)."""
        seed = prompt_seed(self.settings, job.id)
        with torch_threads(self.settings.threads):
            result = tune_prompt(self.model, self.tokenizer, job.examples, self.settings, seed,
                                 on_step=step_progress(job.id, self.settings.steps))
        return job.id, result


def step_progress(pid: str, steps: int, every_s: float | None = None) -> Callable[[int, float], None]:
    """An ``on_step`` of ``tune_prompt`` that logs (INFO) the prompt ``pid``'s step and loss once every
    ``every_s`` seconds (default ``STEP_LOG_S``) of tuning: a long prompt shows it is moving, a short one
    (the demo's) says nothing."""
    every = STEP_LOG_S if every_s is None else every_s
    last = [time.monotonic()]

    def on_step(step: int, loss: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            log.info("tuning %s: step %d/%d, loss %.3f", pid, step + 1, steps, loss)

    return on_step


# How the prompts a bank lacks get trained: called with those jobs and ``save(prompt id, result)``,
# which it must call once per job as soon as that prompt is trained (any order).
Trainer = Callable[[Sequence[TuneJob], Callable[[str, TuneResult], None]], None]


def in_process(name_or_path: str, settings: TuneSettings, model=None, tokenizer=None,
               revision: str | None = None) -> Trainer:
    """A ``Trainer`` that trains one prompt after the other with one ``TuneWorker`` in this process
    (``model``/``tokenizer`` when already loaded, else loaded from ``name_or_path`` at ``revision``
    when needed)."""

    def train(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        worker = TuneWorker(name_or_path, settings, model, tokenizer, revision)
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
        raise SettingError("two tuning jobs have the same (source, template)")
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
        # the device class and dtype it was tuned on: recorded, never in train_key (a bank tuned on a GPU is
        # meant to be scored on CPUs; docs/tuning.md)
        saved = bank.add(prompt, {"first_loss": result.losses[0], "n_examples": len(job.examples),
                                  "origin": dict(job.origin or {}), "device": result.device,
                                  "tune_dtype": settings.dtype})
        log.debug("tuned %s: loss %.3f -> %.3f", pid, result.losses[0], saved.final_loss)
        if on_done:
            on_done(saved, False)

    if todo:
        train(todo, save)  # each prompt published on its own: an interrupted tuning keeps every one it finished
    return PromptBank.load(bank_dir, backbone, ids=[job.id for job in jobs])
