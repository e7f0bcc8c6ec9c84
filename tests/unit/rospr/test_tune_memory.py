"""The tuning memory arithmetic (rospr/tune_memory.py): a hand computation, the real parameter count,
and the bytes autograd really keeps on the tiny model, in float32 and bfloat16, with and without
checkpointing."""

from __future__ import annotations

import pytest

from rospr.tune_memory import (RESERVE, T0_3B, BackboneShape, largest_micro_batch, memory_table,
                               tuning_memory)
from unit.rospr.test_tuning import _kept_for_backward
from helpers import REPO

# D=4, d_ff=8, 2 heads of 2, one layer each side, vocabulary 10; P=1 + 3 input tokens (L=4), T=2, float32
MICRO = BackboneShape(d_model=4, d_ff=8, num_heads=2, d_kv=2, encoder_layers=1, decoder_layers=1, vocab_size=10)


def test_a_hand_computation():
    # parameters: embedding + LM head 2*10*4 = 80; encoder layer 4*4*4 + 3*4*8 + 2*4 = 168, its final
    # norm 4; decoder layer 2*64 + 96 + 3*4 = 236, final norm 4; position biases 2*32*2 = 128: 620
    assert MICRO.n_params == 620
    m = tuning_memory(MICRO, prompt_length=1, input_tokens=3, target_tokens=2, dtype="float32", layers="transformers4")
    assert m.weights == 620 * 4
    assert m.prompt_state == 4 * (2 * 1 * 4 + 1 + 4)  # master and gradient, Adafactor's row + column
    # encoder layer: 4 B x (2 norms 2*16 + probabilities 2*16) + 4 B x (q,k,v 3*16 + gated GELU 6*32) = 1216
    # decoder layer: self 4*(8 + 8) + 4*24 = 160; cross 4*(8 + 16) + 4*(8 + 32) = 256; FFN 4*8 + 4*96 = 416
    # once: final norm 4*16 + log-softmax 4*2*10 = 144
    assert m.kept_per_example == 144 + 1216 + 832 and m.recompute_per_example == 0
    assert m.peak(3) == 2480 + 52 + 3 * 2192
    c = tuning_memory(MICRO, 1, 3, 2, "float32", checkpointing=True, layers="transformers4")
    # block inputs 4*(16 + 8) and the shared position bias 4*2*16; backward recomputes the larger block
    assert (c.kept_per_example, c.recompute_per_example) == (144 + 96 + 128, 1216)
    # transformers 5: the bias is kept once per micro-batch (no padding mask folded in), not per example
    c5 = tuning_memory(MICRO, 1, 3, 2, "float32", checkpointing=True, layers="transformers5")
    assert (c5.kept_per_example, c5.kept_per_step, c5.peak(3)) == (144 + 96, 128, 2480 + 52 + 128 + 3 * (240 + 1216))
    # and in bfloat16 its softmax keeps the probabilities once, 2 bytes (4 + 2 under transformers 4), 4 bytes
    # saved per probability: encoder H L^2 = 2*16 = 32, decoder self H T^2 = 2*4 = 8 and cross H T L = 2*2*4 = 16
    h4, h5 = (tuning_memory(MICRO, 1, 3, 2, "bfloat16", layers=v) for v in ("transformers4", "transformers5"))
    assert h4.kept_per_example - h5.kept_per_example == 4 * (32 + 8 + 16)
    assert largest_micro_batch(m, (2480 + 52 + 2 * 2192) / (1 - RESERVE), batch_size=8) == 2
    assert largest_micro_batch(m, 1000, batch_size=8) == 0


def test_parameter_count_is_the_models(tiny_backbone):
    model = tiny_backbone[0]
    assert BackboneShape.from_config(model.config).n_params == sum(p.numel() for p in model.parameters())
    assert T0_3B.n_params == 2_849_757_184  # T0-3B's ~2.85B (t5-v1_1-xl)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_kept_bytes_match_what_autograd_keeps(tiny_model_dir, monkeypatch, dtype, checkpointing):
    import torch

    from rospr.backbone import load_backbone

    model = load_backbone(tiny_model_dir, dtype=getattr(torch, dtype))[0]
    measured = _kept_for_backward(model, checkpointing, monkeypatch)  # 8 examples, P=20, S=200, T=10
    m = tuning_memory(BackboneShape.from_config(model.config), 20, 200, 10, dtype, checkpointing)  # the installed layers
    computed = 8 * m.kept_per_example + m.kept_per_step
    # measured: within 2.1% each way under transformers 4 (float32 50.0 / 51.0 MB, checkpointed 10.35 / 10.29;
    # bfloat16 43.3 / 43.9, 6.78 / 6.70); under 5 (bfloat16 30.94 / 30.90; checkpointed 4.06 / 3.99,
    # float32 4.92 / 4.87)
    assert abs(computed - measured) < 0.05 * measured, (measured, computed)


def test_the_tuning_guide_table_is_this_arithmetic():
    from pathlib import Path

    guide = (REPO / "docs" / "tuning.md").read_text()
    assert memory_table() in guide


def test_refusals():
    with pytest.raises(ValueError, match="choose float32 or bfloat16"):
        tuning_memory(MICRO, 1, 3, 2, dtype="float16")
    with pytest.raises(ValueError, match="choose adafactor or adamw"):
        tuning_memory(MICRO, 1, 3, 2, optimizer="sgd")
