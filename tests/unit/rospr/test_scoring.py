"""Rank-classification scores against the Hugging Face model's own loss, token by token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import scoring_examples

from rospr_harness.backends.torch_backend import TorchScorer
from rospr.data import Example
from rospr.scoring import Convention, ScoreBatch, encode_examples, rank_classify, score_encoded

EXAMPLES = scoring_examples()


def reference_scores(model, tokenizer, example: Example, prompt: torch.Tensor | None) -> list[float]:
    """Sum of token log-likelihoods from HF's forward with ``labels``: -loss * n_tokens, one choice at a time."""
    ids = torch.tensor([tokenizer(example.input_text, add_special_tokens=False)["input_ids"]])
    out = []
    for choice in example.choices:
        labels = torch.tensor([tokenizer(choice, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
        with torch.no_grad():
            if prompt is None:
                loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
            else:
                emb = torch.cat([prompt[None], model.get_input_embeddings()(ids)], dim=1)
                mask = torch.ones(emb.shape[:2], dtype=torch.long)
                loss = model(inputs_embeds=emb, attention_mask=mask, labels=labels).loss
        out.append(-float(loss) * labels.shape[1])
    return out


@pytest.fixture(scope="module")
def setup(tiny_backbone):
    model, tokenizer, _ = tiny_backbone
    scorer = TorchScorer(model)
    encoded = encode_examples(tokenizer, EXAMPLES, Convention())
    return model, tokenizer, scorer, encoded


@pytest.mark.parametrize("with_prompt", [False, True])
def test_scores_match_hf_loss(setup, with_prompt):
    model, tokenizer, scorer, encoded = setup
    g = torch.Generator().manual_seed(0)
    prompt = torch.randn(5, model.config.d_model, generator=g) * 0.5 if with_prompt else None
    ours = score_encoded(scorer, encoded, None if prompt is None else prompt.numpy(), batch_size=4)
    for ex, got in zip(EXAMPLES, ours):
        ref = reference_scores(model, tokenizer, ex, prompt)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_zero_prompt_mask_equals_no_prompt(setup):
    model, _, scorer, encoded = setup
    from rospr.scoring import collate

    rng = np.random.default_rng(0)
    junk = rng.normal(size=(7, model.config.d_model)).astype(np.float32) * 3
    plain = collate(encoded, [None] * len(encoded), scorer.prompt_dim)
    masked = collate(encoded, [junk] * len(encoded), scorer.prompt_dim)
    masked.prompt_mask[:] = 0  # the prompt is present but switched off
    a, b = scorer.score(plain), scorer.score(masked)
    valid = plain.choice_mask.any(-1)
    np.testing.assert_allclose(a[valid], b[valid], atol=1e-6, rtol=0)


def test_batch_invariance(setup, tiny_backbone):
    model, tokenizer, scorer, _ = setup
    many = [Example("t", "p", i, f"{EXAMPLES[i % 6].input_text} {'more ' * (i % 9)}", EXAMPLES[i % 6].choices) for i in range(40)]
    enc = encode_examples(tokenizer, many, Convention())
    prompt = np.random.default_rng(1).normal(size=(4, model.config.d_model)).astype(np.float32)
    runs = {bs: score_encoded(scorer, enc, prompt, batch_size=bs) for bs in (1, 7, 32)}
    for bs in (7, 32):
        for a, b, e in zip(runs[1], runs[bs], enc):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
            assert rank_classify(a, e, Convention()) == rank_classify(b, e, Convention())


def test_convention_eos_and_length_normalisation(tiny_backbone):
    _, tokenizer, _ = tiny_backbone
    ex = [Example("t", "p", 0, "the cat", ("yes", "no no no"))]
    t0 = encode_examples(tokenizer, ex, Convention())[0]
    assert t0.input_ids[-1] != tokenizer.eos_token_id
    assert all(c[-1] == tokenizer.eos_token_id for c in t0.choice_ids)
    other = encode_examples(tokenizer, ex, Convention(input_eos=True, choice_eos=False))[0]
    assert other.input_ids[-1] == tokenizer.eos_token_id
    assert all(c[-1] != tokenizer.eos_token_id for c in other.choice_ids)
    # Hand computation: -3 over 2 tokens (-1.5 per token) against -4 over 3 tokens (-1.33): the sum
    # prefers the first choice, the per-token mean the second.
    fake = type(t0)([1], [[5, 1], [6, 6, 1]])
    assert rank_classify(np.array([-3.0, -4.0]), fake, Convention()) == 0
    assert rank_classify(np.array([-3.0, -4.0]), fake, Convention(length_normalize=True)) == 1


def test_feeds_are_the_tensor_contract():
    # a batch of 2 without soft prompt (P=0, D=3), 2 choices of 2 tokens: written out by hand
    batch = ScoreBatch(np.array([[4, 5, 1]], np.int32).repeat(2, 0), np.ones((2, 3), np.int32),
                       np.zeros((2, 0, 3), np.float32), np.zeros((2, 0), np.int64),
                       np.array([[[7, 1], [8, 1]]] * 2), np.ones((2, 2, 2), np.int64), np.array([2, 2]))
    feeds = batch.feeds(np.float16)
    assert list(feeds) == ["input_ids", "attention_mask", "prompt_embeds", "prompt_mask", "choice_ids", "choice_mask"]
    assert feeds["prompt_embeds"].shape == (2, 1, 3) and feeds["prompt_embeds"].dtype == np.float16
    assert not feeds["prompt_embeds"].any() and feeds["prompt_mask"].tolist() == [[0], [0]]
    assert all(feeds[k].dtype == np.int64 and feeds[k].flags.c_contiguous for k in feeds if k != "prompt_embeds")
    assert feeds["input_ids"].tolist() == [[4, 5, 1], [4, 5, 1]]


def _rows(*shapes):
    """Encoded rows of the given (input length, [choice lengths]) shapes (token ids do not matter)."""
    from rospr.scoring import EncodedExample

    return [EncodedExample([5] * s, [[6] * t for t in choices]) for s, choices in shapes]


def test_token_budget_batches_by_hand():
    from rospr.scoring import batch_tokens, plan_batches

    rows = _rows((10, [2, 2]), (8, [3]), (8, [1, 1, 1]), (4, [2, 2]), (30, [1]))
    # sorted longest input first: 4 (30), 0 (10), 1 (8, choices 3), 2 (8, choices 3), 3 (4)
    assert plan_batches(rows, 16) == [[4, 0, 1, 2, 3]]
    # row 4 alone: 1 x (30 + 1 x 1) = 31; with row 0: 2 x (30 + 2 x 2) = 68 > 40
    # rows 0, 1: 2 x (10 + 2 x 3) = 32; + row 2: 3 x (10 + 3 x 3) = 57 > 40
    # rows 2, 3: 2 x (8 + 3 x 2) = 28
    assert plan_batches(rows, 16, max_tokens=40) == [[4], [0, 1], [2, 3]]
    assert [batch_tokens([rows[i] for i in b]) for b in plan_batches(rows, 16, max_tokens=40)] == [31, 32, 28]
    # a row over the budget is a batch of its own; the row limit still holds under the budget
    assert plan_batches(rows, 16, max_tokens=1) == [[4], [0], [1], [2], [3]]
    assert plan_batches(rows, 2, max_tokens=10_000) == [[4, 0], [1, 2], [3]]
    with pytest.raises(ValueError, match="max_tokens"):
        plan_batches(rows, 16, max_tokens=0)


def test_token_budget_keeps_scores(setup):
    """Batches cut by tokens score every row as one-row batches do (batch invariance)."""
    model, tokenizer, scorer, _ = setup
    many = [Example("t", "p", i, f"{EXAMPLES[i % 6].input_text} {'more ' * (i % 13)}", EXAMPLES[i % 6].choices)
            for i in range(40)]
    enc = encode_examples(tokenizer, many, Convention())
    prompt = np.random.default_rng(2).normal(size=(4, model.config.d_model)).astype(np.float32)
    alone = score_encoded(scorer, enc, prompt, batch_size=1)
    for budget in (64, 300, 5000):
        for a, b, e in zip(alone, score_encoded(scorer, enc, prompt, batch_size=32, max_tokens=budget), enc):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
            assert rank_classify(a, e, Convention()) == rank_classify(b, e, Convention())


@pytest.mark.parametrize("choice_eos", [True, False])
@pytest.mark.parametrize("blank", ["", " ", "  \n"])
def test_class_4_no_figure_hides_what_happened_a_choice_without_a_token_is_refused(tiny_backbone, blank, choice_eos):
    """class 4: no figure hides what happened. A choice with no token of its own, from any task (a
    template's answer choices too), would be scored as its EOS alone (or as nothing) and win or lose on the
    model's wish to stop: refused, naming the task, prompt and example, under either EOS convention."""
    from rospr.errors import SettingError

    _, tokenizer, _ = tiny_backbone
    ok = Example(task="t", prompt="p", index=0, input_text="a question", choices=("yes", "no"), target_text="yes")
    bad = Example(task="mytask", prompt="my prompt", index=7, input_text="a question", choices=("yes", blank),
                  target_text="yes")
    assert tokenizer(blank, add_special_tokens=False)["input_ids"] == []  # the case: nothing of its own
    encode_examples(tokenizer, [ok], Convention(choice_eos=choice_eos))
    with pytest.raises(SettingError) as info:
        encode_examples(tokenizer, [ok, bad], Convention(choice_eos=choice_eos))
    msg = str(info.value)
    assert "task mytask, prompt my prompt, example 7" in msg and repr(blank) in msg and "no token of its own" in msg


def test_class_4_a_choice_cut_to_its_eos_alone_is_refused_as_a_setting():
    """class 4: with choice EOS, ``max_choice_tokens=1`` would cut every choice to its EOS alone (all tied)."""
    from rospr.errors import SettingError

    with pytest.raises(SettingError, match="max_choice_tokens must be >= 2"):
        Convention(max_choice_tokens=1)
    assert Convention(max_choice_tokens=1, choice_eos=False).max_choice_tokens == 1
