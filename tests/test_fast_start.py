"""The tokenizer read from tokenizer.json with the ``tokenizers`` library gives transformers' ids (the
whole cached runs in fresh interpreters, which import no torch, are in tests/e2e/test_cached_start.py)."""

from __future__ import annotations

from rospr_harness.backends.tokenizer import FastTokenizer, load_tokenizer


def test_fast_tokenizer_gives_transformers_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    fast, ref = load_tokenizer(tiny_model_dir), AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert isinstance(fast, FastTokenizer)
    texts = ["The movie was great.", "  spaced  out ", "", "Ünïcødé – déjà vu?", "a\nb\tc", "1234 + 5678 = ?"]
    assert fast(texts, add_special_tokens=False)["input_ids"] == ref(texts, add_special_tokens=False)["input_ids"]
    assert fast(texts)["input_ids"] == ref(texts)["input_ids"]
    assert fast(texts[0])["input_ids"] == ref(texts[0])["input_ids"]
    assert (fast.eos_token_id, fast.pad_token_id) == (ref.eos_token_id, ref.pad_token_id)
