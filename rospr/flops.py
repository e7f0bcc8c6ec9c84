"""Floating-point operations of the T5 / T0 computations a run does, counted per matmul.

A multiply-add is 2 FLOPs; a matmul [m, k] x [k, n] is ``2 m k n``. Only matmuls are counted (layer
norms, softmax, GELU, the relative position bias and the loss are a few percent of a T5 layer and
left out). Lengths are real tokens: padding inside a batch is not counted, so the figures are what
the computation needs, not what a padded batch executes. With ``h = num_heads * d_kv``, per token:

- **encoder layer** over L tokens: Q, K, V, O projections ``4 * 2 L d h``; scores Q K^T and the
  weighted sum A V ``2 * 2 L^2 h``; feed-forward ``m * 2 L d d_ff`` with m = 3 matrices for T5 v1.1's
  gated GELU (wi_0, wi_1, wo), 2 for the original ReLU T5.
- **decoder layer** over T target tokens, attending to L encoder positions: self-attention
  ``4 * 2 T d h + 2 * 2 T^2 h``; cross-attention Q and O ``2 * 2 T d h``, its K and V projected from the
  encoder output ``2 * 2 L d h`` (once per input: the scorer graph shares them across choices), its
  scores and sum ``2 * 2 T L h``; feed-forward ``m * 2 T d d_ff``; then the LM head ``2 T d V``.

Scoring (rank classification, ``score_row``): the encoder once per input over S + P tokens (P = 0 for
the T0 baseline), the cross-attention K and V once per input, the rest of the decoder once per choice
over its real tokens (EOS included).

Prompt tuning (``train_step``) with a frozen backbone: forward as above over S + P input tokens and
the T target tokens. Backward needs the gradient of the activations through every layer (the
prompt sits under the whole encoder, and the decoder reaches it through cross-attention), but no
weight gradient: a matmul costs its forward FLOPs once more for each operand that needs a gradient.
A frozen linear layer has one (its input): 1x. An attention matmul has two activation operands: 2x.
The first decoder layer's self-attention, and its cross-attention query, see only the constant
decoder input embeddings: 0x. So

    backward = linear FLOPs + 2 x attention FLOPs  (minus the first decoder layer's constant part)

about 1x forward (the 3x rule of thumb, forward + 2x backward, counts weight gradients we never
compute). Gradient checkpointing recomputes the forward of every layer (not the LM head) during
backward: that recomputation is added to ``backward``.

``ModelShape.from_config`` reads a Hugging Face T5 config (d_model, d_ff, num_layers,
num_decoder_layers, num_heads, d_kv, vocab_size, feed_forward_proj).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from rospr.errors import SettingError


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a T5-style encoder-decoder that its FLOPs depend on. Refuses sizes below 1."""

    d_model: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    d_kv: int
    vocab_size: int
    gated: bool = True  # T5 v1.1 / T0: gated GELU, three feed-forward matrices

    def __post_init__(self) -> None:
        for name in ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "d_kv", "vocab_size"):
            if int(getattr(self, name)) < 1:
                raise SettingError(f"model config {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], where: str = "config.json") -> "ModelShape":
        """The shape of a T5 config dict (``PretrainedConfig.to_dict()`` or config.json). Refuses
        (``ValueError``, naming ``where`` and the key) a config without the T5 sizes."""
        missing = [k for k in ("d_model", "d_ff", "num_layers", "num_heads", "d_kv", "vocab_size") if k not in config]
        if missing:
            raise SettingError(f"{where}: no {missing[0]!r}; FLOPs are counted for T5-style encoder-decoders "
                               "(T5, T5 v1.1, T0) only")
        proj = str(config.get("feed_forward_proj") or ("gated-gelu" if config.get("is_gated_act") else "relu"))
        return cls(int(config["d_model"]), int(config["d_ff"]), int(config["num_layers"]),
                   int(config.get("num_decoder_layers") or config["num_layers"]), int(config["num_heads"]),
                   int(config["d_kv"]), int(config["vocab_size"]), proj.startswith("gated"))

    @property
    def inner(self) -> int:
        """h = num_heads x d_kv: the width of the attention projections."""
        return self.num_heads * self.d_kv

    @property
    def ffn_matrices(self) -> int:
        return 3 if self.gated else 2


@dataclass(frozen=True)
class Flops:
    """Forward and backward FLOPs of some computation (backward 0 where nothing is trained)."""

    forward: float = 0.0
    backward: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.backward

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: float) -> "Flops":
        return Flops(self.forward * k, self.backward * k)

    __rmul__ = __mul__


@dataclass(frozen=True)
class _Parts:
    """A forward split the way its backward is charged: linear (frozen weights) and attention matmuls."""

    linear: float = 0.0
    attention: float = 0.0

    @property
    def total(self) -> float:
        return self.linear + self.attention


def _encoder_layer(s: ModelShape, length: int) -> _Parts:
    d, h, n = s.d_model, s.inner, length
    return _Parts(4 * 2 * n * d * h + s.ffn_matrices * 2 * n * d * s.d_ff, 2 * 2 * n * n * h)


def _decoder_self(s: ModelShape, target: int) -> _Parts:
    d, h, t = s.d_model, s.inner, target
    return _Parts(4 * 2 * t * d * h, 2 * 2 * t * t * h)


def _cross_kv(s: ModelShape, source: int) -> float:
    return 2 * 2 * source * s.d_model * s.inner


def _cross_q_o(s: ModelShape, target: int) -> float:
    return 2 * 2 * target * s.d_model * s.inner


def _cross_attention(s: ModelShape, target: int, source: int) -> float:
    return 2 * 2 * target * source * s.inner


def _ffn(s: ModelShape, target: int) -> float:
    return s.ffn_matrices * 2 * target * s.d_model * s.d_ff


def _lm_head(s: ModelShape, target: int) -> float:
    return 2 * target * s.d_model * s.vocab_size


def encoder_forward(shape: ModelShape, length: int) -> float:
    """FLOPs of the encoder over ``length`` tokens (the retriever's embedding, or the scorer's input
    with its prompt vectors). 0 for length 0."""
    return shape.num_layers * _encoder_layer(shape, length).total


def decoder_forward(shape: ModelShape, target: int, source: int, cross_kv: bool = True) -> float:
    """FLOPs of the decoder and LM head over ``target`` tokens attending to ``source`` encoder
    positions; ``cross_kv=False`` leaves out the cross-attention K/V projections (shared per input)."""
    per_layer = (_decoder_self(shape, target).total + _cross_q_o(shape, target) + _cross_attention(shape, target, source)
                 + _ffn(shape, target) + (_cross_kv(shape, source) if cross_kv else 0))
    return shape.num_decoder_layers * per_layer + _lm_head(shape, target)


def score_row(shape: ModelShape, input_tokens: int, prompt_tokens: int, choice_tokens: Sequence[int]) -> float:
    """Forward FLOPs of rank-classifying one input: the encoder once over S + P tokens, the
    cross-attention K/V once, the decoder once per choice over its real tokens."""
    source = input_tokens + prompt_tokens
    return (encoder_forward(shape, source) + shape.num_decoder_layers * _cross_kv(shape, source)
            + sum(decoder_forward(shape, t, source, cross_kv=False) for t in choice_tokens))


def train_step(shape: ModelShape, input_tokens: int, prompt_tokens: int, target_tokens: int,
               checkpointing: bool = False) -> Flops:
    """Forward and backward FLOPs of one training example of prompt tuning (frozen backbone, the
    prompt at the encoder's input): the module docstring's formula. ``checkpointing`` adds the
    recomputed forward of every layer to the backward."""
    s, source, t = shape, input_tokens + prompt_tokens, target_tokens
    enc = _encoder_layer(s, source)
    self_attn = _decoder_self(s, t)
    cross_linear = _cross_kv(s, source) + _cross_q_o(s, t)
    cross_attn = _cross_attention(s, t, source)
    dec_layer = _Parts(self_attn.linear + cross_linear + _ffn(s, t), self_attn.attention + cross_attn)
    layers_forward = s.num_layers * enc.total + s.num_decoder_layers * dec_layer.total
    forward = layers_forward + _lm_head(s, t)
    backward = (s.num_layers * (enc.linear + 2 * enc.attention)
                + s.num_decoder_layers * (dec_layer.linear + 2 * dec_layer.attention)
                + _lm_head(s, t))
    # the first decoder layer: its self-attention and its cross-attention query see constants only;
    # the scores Q K^T need the gradient of K alone (1x instead of 2x)
    backward -= self_attn.linear + 2 * self_attn.attention + _cross_q_o(s, t) / 2 + cross_attn / 2
    if checkpointing:
        backward += layers_forward
    return Flops(float(forward), float(backward))


@dataclass(frozen=True)
class Gemm:
    """``count`` matmuls of ``batch`` independent [m, k] x [k, n] products each (``batch`` > 1: a
    batched matmul, as attention runs one per head and row)."""

    kind: str
    batch: int
    m: int
    k: int
    n: int
    count: int = 1

    @property
    def flops(self) -> float:
        return 2.0 * self.count * self.batch * self.m * self.k * self.n


def score_gemms(shape: ModelShape, input_tokens: Sequence[int], prompt_tokens: int,
                choice_tokens: Sequence[Sequence[int]]) -> list[Gemm]:
    """The matmuls the scorer graph (export version 4, ``rospr.backbone.PromptedT5``) runs on one
    padded batch: row i has ``input_tokens[i]`` input tokens and choices of ``choice_tokens[i]``
    tokens. The encoder runs on the padded [B, S + P] grid; the decoder's projections, feed-forward
    and LM head on the K real choice tokens; its self-attention on [N real choices, T] grids and its
    cross-attention on one [C x T] query sequence per input. Sizes here are what executes, padding
    included; ``score_row`` counts the useful FLOPs (no padding). On a batch without padding (equal
    inputs, one choice each of equal length) the two agree exactly."""
    s, b = shape, len(input_tokens)
    if b == 0 or b != len(choice_tokens):
        raise SettingError(f"score_gemms: {b} inputs for {len(choice_tokens)} choice lists")
    src = max(input_tokens) + prompt_tokens
    enc_rows = b * src
    n_choices = sum(len(c) for c in choice_tokens)
    c_max = max(len(c) for c in choice_tokens)
    t_max = max((t for c in choice_tokens for t in c), default=0)
    k = sum(t for c in choice_tokens for t in c)
    d, h, f, heads, dk = s.d_model, s.inner, s.d_ff, s.num_heads, s.d_kv
    le, ld, up = s.num_layers, s.num_decoder_layers, s.ffn_matrices - 1
    return [
        Gemm("encoder q, k, v", 1, enc_rows, d, h, 3 * le),
        Gemm("encoder o", 1, enc_rows, h, d, le),
        Gemm("encoder feed-forward in", 1, enc_rows, d, f, up * le),
        Gemm("encoder feed-forward out", 1, enc_rows, f, d, le),
        Gemm("encoder attention scores", b * heads, src, dk, src, le),
        Gemm("encoder attention sum", b * heads, src, src, dk, le),
        Gemm("cross-attention k, v", 1, enc_rows, d, h, 2 * ld),
        Gemm("decoder q, k, v, cross q", 1, k, d, h, 4 * ld),
        Gemm("decoder o, cross o", 1, k, h, d, 2 * ld),
        Gemm("decoder feed-forward in", 1, k, d, f, up * ld),
        Gemm("decoder feed-forward out", 1, k, f, d, ld),
        Gemm("decoder self-attention scores", n_choices * heads, t_max, dk, t_max, ld),
        Gemm("decoder self-attention sum", n_choices * heads, t_max, t_max, dk, ld),
        Gemm("cross-attention scores", b * heads, c_max * t_max, dk, src, ld),
        Gemm("cross-attention sum", b * heads, c_max * t_max, src, dk, ld),
        Gemm("LM head", 1, k, d, s.vocab_size, 1),
    ]
