"""Memory of prompt tuning on a frozen T5 v1.1 / T0 backbone: computed, not measured.

``tuning_memory(shape, ...)`` counts the bytes one tuning step holds at its peak, from the model's
shape alone:

- **weights**: every parameter (``BackboneShape.n_params``) in the tuning dtype;
- **prompt state**: the float32 master prompt [P, D], its gradient and the optimizer state
  (Adafactor factors a matrix into a row and a column second moment, no momentum: P + D numbers;
  AdamW two full moments: 2 P D);
- **activations per example**, what autograd keeps for backward. The backbone is frozen, so a
  linear layer keeps nothing of its input (no weight gradient is computed; what ``tune_prompt``
  runs), and per layer what remains is (sequence L = P + inputs, targets T; element size b: 2 in
  bfloat16, 4 in float32):

  - each layer norm's input: L x D (T5's layer norm works in float32: in bfloat16 it keeps the
    float32 copy and the bfloat16 input, 4 + 2 bytes; in float32 one tensor, 4);
  - self-attention: the queries, keys and values (3 L H d_kv) and the attention probabilities
    H L^2, kept as softmax's float32 output (4 bytes) and, in bfloat16, also as its bfloat16 copy
    that multiplies the values (2 more);
  - the gated-GELU feed-forward: 6 L x d_ff (``gelu_new`` keeps its input, its tanh, 0.5 x input
    and 1 + tanh; the product keeps the GELU output and the linear branch);
  - decoder layers the same over T tokens, plus cross-attention: queries T H d_kv, the keys and
    values projected from the encoding 2 L H d_kv, probabilities H T L;
  - once per example: the encoder's final layer norm input L x D and the LM head's float32
    log-softmax T x V.

  With gradient checkpointing a block keeps only its inputs: L x D per encoder layer, T x D per
  decoder layer, and the position bias with the padding mask folded in (H L^2 in the backbone
  dtype, shared by the encoder's blocks); backward recomputes one block at a time, so one block's
  activations come on top (the ``recompute`` term).

  The layers are transformers' own, and its two majors keep different things (``layers``, default the
  installed one; measured on the tiny model, tests/unit/rospr/test_tune_memory.py): transformers 5's T5 attention
  runs softmax in the backbone dtype, so in bfloat16 the probabilities are kept once, 2 bytes, not 4 + 2
  (its numerics differ accordingly); and its position bias does not fold the padding mask in, so under
  checkpointing one H L^2 bias is kept for the whole micro-batch, not one per example (``kept_per_step``).

The peak is weights + prompt state + micro-batch x (kept per example + recompute per example).
Workspace that the formula does not count (CUDA context, cuBLAS workspace, allocator fragmentation)
is left as ``RESERVE`` of the device's memory. ``tests/unit/rospr/test_tune_memory.py`` checks the count against
a hand computation and against the bytes autograd really keeps on the tiny model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from rospr.errors import SettingError

RESERVE = 0.10  # of a device's memory, for what the formula does not count (CUDA context, fragmentation)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
GELU_KEPT = 6  # [., d_ff] tensors the gated gelu_new feed-forward keeps (see the module docstring)


@dataclass(frozen=True)
class BackboneShape:
    """The sizes of a T5 v1.1-style encoder-decoder (untied embeddings and LM head, gated feed-forward)."""

    d_model: int
    d_ff: int
    num_heads: int
    d_kv: int
    encoder_layers: int
    decoder_layers: int
    vocab_size: int
    relative_buckets: int = 32

    @classmethod
    def from_config(cls, config) -> "BackboneShape":
        """From a Hugging Face T5 config (an object or its dict)."""
        get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
        return cls(get("d_model"), get("d_ff"), get("num_heads"), get("d_kv"), get("num_layers"),
                   get("num_decoder_layers") or get("num_layers"), get("vocab_size"),
                   get("relative_attention_num_buckets", 32) or 32)

    @property
    def n_params(self) -> int:
        """Every parameter: shared embedding, LM head, attention and feed-forward matrices, layer norms,
        the two stacks' relative position biases."""
        d, hd = self.d_model, self.num_heads * self.d_kv
        attention = 4 * d * hd
        ffn = 3 * d * self.d_ff  # wi_0, wi_1, wo
        encoder = self.encoder_layers * (attention + ffn + 2 * d) + d  # + the final layer norm
        decoder = self.decoder_layers * (2 * attention + ffn + 3 * d) + d
        return 2 * self.vocab_size * d + encoder + decoder + 2 * self.relative_buckets * self.num_heads


# T0-3B (bigscience/T0_3B = t5-v1_1-xl lm-adapt): its config.json
T0_3B = BackboneShape(d_model=2048, d_ff=5120, num_heads=32, d_kv=64, encoder_layers=24, decoder_layers=24,
                      vocab_size=32128)


@dataclass(frozen=True)
class TuningMemory:
    """Bytes of one tuning step (see the module docstring); ``peak(m)`` for a micro-batch of m."""

    weights: int
    prompt_state: int
    kept_per_example: int  # what autograd keeps per example until backward
    recompute_per_example: int  # checkpointing: one block recomputed in backward (0 without)
    kept_per_step: int = 0  # kept once per micro-batch whatever its size (transformers 5's shared position bias)

    def peak(self, micro_batch: int) -> int:
        return (self.weights + self.prompt_state + self.kept_per_step
                + micro_batch * (self.kept_per_example + self.recompute_per_example))


def _encoder_layer(s: BackboneShape, L: int, b: int, wide: int, prob: int) -> int:
    hd = s.num_heads * s.d_kv
    return wide * 2 * L * s.d_model + prob * s.num_heads * L * L + b * (3 * L * hd + GELU_KEPT * L * s.d_ff)


def _decoder_layer(s: BackboneShape, L: int, T: int, b: int, wide: int, prob: int) -> int:
    hd = s.num_heads * s.d_kv
    self_attention = wide * T * s.d_model + prob * s.num_heads * T * T + b * 3 * T * hd
    cross = wide * T * s.d_model + prob * s.num_heads * T * L + b * (T * hd + 2 * L * hd)
    return self_attention + cross + wide * T * s.d_model + b * GELU_KEPT * T * s.d_ff


LAYERS = ("transformers4", "transformers5")


def installed_layers() -> str:
    """Which transformers' T5 layers run here (``LAYERS``): the installed major, 4 when none is installed."""
    from importlib import metadata

    try:
        major = int(metadata.version("transformers").split(".")[0])
    except (metadata.PackageNotFoundError, ValueError):
        return "transformers4"
    return "transformers5" if major >= 5 else "transformers4"


def tuning_memory(shape: BackboneShape, prompt_length: int, input_tokens: int, target_tokens: int,
                  dtype: str = "bfloat16", checkpointing: bool = False, optimizer: str = "adafactor",
                  layers: str | None = None) -> TuningMemory:
    """The memory of one tuning step of a [``prompt_length``, D] prompt on inputs of ``input_tokens``
    and targets of ``target_tokens`` tokens (every row at the longest: an upper bound), with
    ``layers``' T5 (``LAYERS``; default the installed transformers). Refuses (``ValueError``) a dtype
    other than float32/bfloat16, an optimizer other than adafactor/adamw, and unknown layers."""
    layers = layers or installed_layers()
    if layers not in LAYERS:
        raise SettingError(f"layers={layers!r}: choose one of {list(LAYERS)}")
    if dtype not in DTYPE_BYTES:
        raise SettingError(f"dtype={dtype!r}: choose float32 or bfloat16")
    if optimizer not in ("adafactor", "adamw"):
        raise SettingError(f"optimizer={optimizer!r}: choose adafactor or adamw")
    b = DTYPE_BYTES[dtype]
    wide = 4 + (b if b != 4 else 0)  # float32 work (softmax, layer norm) and its copy in the backbone dtype
    P, D, T, V = prompt_length, shape.d_model, target_tokens, shape.vocab_size
    L = P + input_tokens
    state = P + D if optimizer == "adafactor" else 2 * P * D
    prompt_state = 4 * (2 * P * D + state)  # master, gradient, optimizer state: float32
    shared = wide * L * D + 4 * T * V  # the encoder's final layer norm, the LM head's log-softmax
    prob = wide if layers == "transformers4" else b  # softmax kept in float32 (+ its copy), or in the dtype
    enc, dec = _encoder_layer(shape, L, b, wide, prob), _decoder_layer(shape, L, T, b, wide, prob)
    per_step = 0
    if checkpointing:
        bias = b * shape.num_heads * L * L  # the position bias the encoder's blocks share
        per_step = bias if layers == "transformers5" else 0
        kept = shared + b * (shape.encoder_layers * L * D + shape.decoder_layers * T * D) + (bias - per_step)
        recompute = max(enc, dec)
    else:
        kept = shared + shape.encoder_layers * enc + shape.decoder_layers * dec
        recompute = 0
    return TuningMemory(b * shape.n_params, prompt_state, kept, recompute, per_step)


def largest_micro_batch(memory: TuningMemory, device_bytes: float, batch_size: int = 32) -> int:
    """The largest divisor of ``batch_size`` whose step fits in ``device_bytes`` less ``RESERVE``
    (0: not even one example fits)."""
    budget = device_bytes * (1 - RESERVE)
    fits = [m for m in range(1, batch_size + 1) if batch_size % m == 0 and memory.peak(m) <= budget]
    return max(fits, default=0)


def memory_table(shape: BackboneShape = T0_3B, prompt_length: int = 100, input_tokens: int = 512,
                 target_tokens: int = 128, batch_size: int = 32, devices_gb=(24, 40, 80),
                 layers: str = "transformers4") -> str:
    """The Markdown table of docs/tuning.md (transformers 4's layers, the larger): per dtype and
    checkpointing, the bytes of each term and the largest micro-batch (a divisor of ``batch_size``) that
    fits in each device size (GB = 1e9 bytes)."""
    gb = 1e9
    head = ["dtype", "checkpointing", "weights GB", "prompt + optimizer MB", "activations GB / example"]
    head += [f"micro-batch in {d} GB" for d in devices_gb]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dtype in ("bfloat16", "float32"):
        for ckpt in (False, True):
            m = tuning_memory(shape, prompt_length, input_tokens, target_tokens, dtype, ckpt, layers=layers)
            fits = [largest_micro_batch(m, d * gb, batch_size) or "none" for d in devices_gb]
            cells = [dtype, "on" if ckpt else "off", f"{m.weights / gb:.1f}", f"{m.prompt_state / 1e6:.1f}",
                     f"{(m.kept_per_example + m.recompute_per_example) / gb:.2f}", *map(str, fits)]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
