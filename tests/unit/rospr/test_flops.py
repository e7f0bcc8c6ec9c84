"""rospr.flops against hand computations, matmul by matmul (see the module docstring's formulas)."""

import pytest

from rospr.flops import Flops, ModelShape, decoder_forward, encoder_forward, score_row, train_step

# d_model 4, d_ff 8, one encoder and one decoder layer, 2 heads of d_kv 2 (h = 4), vocabulary 10, gated GELU
TINY = ModelShape(d_model=4, d_ff=8, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=2, vocab_size=10)


def test_encoder_over_input_and_prompt():
    # L = 3 input + 2 prompt tokens: Q,K,V,O 4*2*5*4*4 = 640; Q K^T and A V 2*2*5*5*4 = 400; FFN 3*2*5*4*8 = 960
    assert encoder_forward(TINY, 5) == 640 + 400 + 960
    relu = ModelShape(4, 8, 1, 1, 2, 2, 10, gated=False)
    assert encoder_forward(relu, 5) == 640 + 400 + 2 * 2 * 5 * 4 * 8


def test_scoring_shares_the_encoder_and_cross_kv_across_choices():
    # per choice of t tokens: self proj 4*2*t*4*4 = 128t, self attn 2*2*t*t*4 = 16t^2, cross Q,O 2*2*t*4*4 = 64t,
    # cross attn 2*2*t*5*4 = 80t, FFN 3*2*t*4*8 = 192t, LM head 2*t*4*10 = 80t: 544t + 16t^2
    # choices of 2 and 3 tokens: 1152 + 1776; encoder 2000; cross K,V once: 2*2*5*4*4 = 320
    assert score_row(TINY, 3, 2, [2, 3]) == 2000 + 320 + 1152 + 1776
    assert decoder_forward(TINY, 2, 5) == 1152 + 320
    # the T0 baseline: no prompt vectors, L = 3: encoder 384 + 144 + 576, cross K,V 2*2*3*4*4 = 192,
    # per choice 512t + 16t^2 (cross attn 2*2*t*3*4 = 48t): 1088 + 1680
    assert score_row(TINY, 3, 0, [2, 3]) == 1104 + 192 + 1088 + 1680


def test_training_step_counts_activation_gradients_only():
    f = train_step(TINY, 3, 2, 2)
    assert f.forward == 2000 + 320 + 1152  # encoder, decoder with its cross K,V, LM head
    # encoder: linears once (1600), attention matmuls twice (2 * 400)
    # the one decoder layer is the first: self-attention 0, cross Q 0, cross O 2*2*4*4 = 64, cross K,V 320,
    # Q K^T only for K: 80, A V for both: 2*80, FFN 384, LM head 160
    assert f.backward == 1600 + 800 + 64 + 320 + 80 + 160 + 384 + 160
    assert f.total == f.forward + f.backward
    # checkpointing recomputes every layer's forward (not the LM head: 2*2*4*10 = 160)
    assert train_step(TINY, 3, 2, 2, checkpointing=True).backward == f.backward + f.forward - 160


def test_a_second_decoder_layer_needs_every_activation_gradient():
    two = ModelShape(4, 8, 1, 2, 2, 2, 10)
    one = train_step(TINY, 3, 2, 2)
    f = train_step(two, 3, 2, 2)
    # its linears: self 256 + cross Q,O 128 + cross K,V 320 + FFN 384; attentions self 64 + cross 160, twice
    assert f.backward - one.backward == 1088 + 2 * 224
    assert f.forward - one.forward == 1088 + 224


def test_t0_3b_step_is_about_six_times_params_per_token_minus_weight_gradients():
    t0 = ModelShape(2048, 5120, 24, 24, 32, 64, 32128)
    f = train_step(t0, 512, 100, 8)
    # the encoder dominates: ~2 x its 1.2e9 matmul weights per token over 612 tokens, plus attention
    enc_weights = 24 * (4 * 2048 * 2048 + 3 * 2048 * 5120)
    assert 2 * enc_weights * 612 < f.forward < 1.3 * 2 * enc_weights * 612
    assert 1.0 < f.backward / f.forward < 1.3  # activation gradients only: ~1x, not 2x


def test_shape_from_a_t5_config_and_refusals():
    cfg = {"d_model": 2048, "d_ff": 5120, "num_layers": 24, "num_heads": 32, "d_kv": 64, "vocab_size": 32128,
           "feed_forward_proj": "gated-gelu"}
    s = ModelShape.from_config(cfg)
    assert (s.num_decoder_layers, s.inner, s.ffn_matrices) == (24, 2048, 3)
    assert not ModelShape.from_config({**cfg, "feed_forward_proj": "relu"}).gated
    with pytest.raises(ValueError, match="x/config.json: no 'd_ff'"):
        ModelShape.from_config({k: v for k, v in cfg.items() if k != "d_ff"}, "x/config.json")
    with pytest.raises(ValueError, match="num_heads must be >= 1"):
        ModelShape(4, 8, 1, 1, 0, 2, 10)
    assert Flops(1, 2) + Flops(3, 4) == Flops(4, 6) and 2 * Flops(1, 2) == Flops(2, 4)


def test_gemms_of_an_unpadded_batch_are_the_useful_flops():
    from rospr.flops import score_gemms

    # two rows of 3 input tokens + 2 prompt vectors, one choice of 2 tokens each: nothing is padded
    gemms = score_gemms(TINY, [3, 3], 2, [[2], [2]])
    assert sum(g.flops for g in gemms) == 2 * score_row(TINY, 3, 2, [2])
    # padding is executed, not useful: a shorter input and a second, shorter choice cost the padded grid
    padded = score_gemms(TINY, [3, 1], 2, [[2], [2, 1]])
    assert sum(g.flops for g in padded) > score_row(TINY, 3, 2, [2]) + score_row(TINY, 1, 2, [2, 1])
    enc_qkv = next(g for g in padded if g.kind == "encoder q, k, v")
    assert (enc_qkv.batch, enc_qkv.m, enc_qkv.k, enc_qkv.n, enc_qkv.count) == (1, 2 * 5, 4, 4, 3)
    head = next(g for g in padded if g.kind == "LM head")
    assert (head.m, head.n) == (2 + 2 + 1, 10)  # the real choice tokens only
    with pytest.raises(ValueError, match="2 inputs for 1 choice lists"):
        score_gemms(TINY, [3, 3], 2, [[2]])
