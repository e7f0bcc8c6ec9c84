"""The condition ``bench_peers`` states for lm-eval's predictions to equal ours, checked on lm-eval's
own encoding (``HFLM._encode_pair``, seq2seq) of the tiny model: with no trailing whitespace in the
context and an empty target delimiter, lm-eval scores exactly the tokens we score under
``input_eos=True, choice_eos=False``; with BIG-bench's "…A: " it does not."""

from __future__ import annotations

import pytest

from rospr.data import Example
from rospr.scoring import Convention, encode_examples

CONTEXTS = ["Q: Is the sky blue?\nA:", "Which fruit is yellow? Answer:"]
CHOICES = ["yes", "banana split", "no"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    pytest.importorskip("lm_eval")
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_model_dir), backend="seq2seq", batch_size=1, device="cpu")


def ours(lm, context: str):
    (enc,) = encode_examples(lm.tokenizer, [Example("t", "p", 0, context, tuple(CHOICES))],
                             Convention(input_eos=True, choice_eos=False))
    return enc


@pytest.mark.parametrize("context", CONTEXTS)
def test_right_stripped_contexts_are_scored_on_our_tokens(lm, context):
    enc = ours(lm, context)
    for choice, choice_ids in zip(CHOICES, enc.choice_ids):
        ctx, cont = lm._encode_pair(context, choice)  # target_delimiter "": the choice as it is
        assert ctx == enc.input_ids and cont == choice_ids


def test_bigbench_trailing_space_moves_into_lm_evals_continuation(lm):
    context = CONTEXTS[0] + " "  # BIG-bench renders "…A: "
    enc = ours(lm, context)
    ctx, cont = lm._encode_pair(context, CHOICES[0])
    assert ctx == ours(lm, CONTEXTS[0]).input_ids  # lm-eval's context lost its space into the continuation ...
    # ... and T5's sentencepiece normalisation drops whitespace at either end of a text (T0's real
    # tokenizer does the same), so the moved space changes no id: the pair is what we score
    assert lm.tokenizer(" " + CHOICES[0], add_special_tokens=False)["input_ids"] == \
        lm.tokenizer(CHOICES[0], add_special_tokens=False)["input_ids"]
    assert (ctx, cont) == (enc.input_ids, enc.choice_ids[0])


def test_the_heldout_shape_takes_the_t0_bigbench_tasks_no_other_shape_uses():
    from rospr_bench.bench_peers import SHAPES
    from rospr_harness.tasks.bigbench import T0_TASKS

    others = {t for name, (tasks, *_rest) in SHAPES.items() if name != "heldout" for t in tasks}
    heldout = set(SHAPES["heldout"][0])
    assert not heldout & others
    assert heldout | others == {f"bigbench/{t}" for t in T0_TASKS}  # every task of the T0 evaluation, once
