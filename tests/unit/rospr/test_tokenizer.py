"""rospr/tokenizer.py: one tokenization whatever the transformers version.

The reference is sentencepiece itself on the checkpoint's ``spiece.model`` (and, where the installed
transformers is compared, its own ``AutoTokenizer``: CI runs this module under transformers 4 and 5). The
whole cached runs in fresh interpreters, which import no torch, are in tests/e2e/test_cached_start.py."""

from __future__ import annotations

import json
import shutil

import pytest

from rospr.tokenizer import FastTokenizer, SentencePieceTokenizer, load_tokenizer, tokenizer_digest

# leading spaces, empty, unicode (composed and not), a trailing space, runs of spaces, newlines and tabs
TEXTS = ["Hello world, is this fine?", " leading space", "   three leading", "", "Ünïcødé – déjà vu?",
         "cafe\u0301 \u00fcber", "ends with a space ", "two  spaces", "a\nb\tc", "1234 + 5678 = ?", "Yes", " no"]


@pytest.fixture(scope="module")
def spm(tiny_model_dir):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(tiny_model_dir / "spiece.model"))


def test_ids_are_sentencepieces_own_for_inputs_and_choices(tiny_model_dir, spm):
    tok = load_tokenizer(tiny_model_dir)
    assert isinstance(tok, SentencePieceTokenizer)
    eos = spm.piece_to_id("</s>")
    assert (tok.eos_token_id, tok.pad_token_id) == (eos, spm.piece_to_id("<pad>")) == (1, 0)
    for text in TEXTS:
        assert tok(text, add_special_tokens=False)["input_ids"] == spm.encode(text), text  # an input: no EOS
        assert tok(text)["input_ids"] == spm.encode(text) + [eos], text  # a choice: EOS appended
    assert tok(TEXTS, add_special_tokens=False)["input_ids"] == [spm.encode(t) for t in TEXTS]
    assert spm.id_to_piece(tok("Hello")["input_ids"][0]).startswith("\u2581")  # a real T5 prepends ▁


def test_the_installed_transformers_gives_the_same_ids(tiny_model_dir):
    """Under transformers 4 (tokenizer.json, fast) and 5 (rebuilt from spiece.model) alike."""
    from transformers import AutoTokenizer

    ours, ref = load_tokenizer(tiny_model_dir), AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert ours(TEXTS)["input_ids"] == ref(TEXTS)["input_ids"]
    assert ours(TEXTS, add_special_tokens=False)["input_ids"] == ref(TEXTS, add_special_tokens=False)["input_ids"]
    assert (ours.eos_token_id, ours.pad_token_id) == (ref.eos_token_id, ref.pad_token_id)
    assert ours.decode(ref("Yes")["input_ids"]) == ref.decode(ref("Yes")["input_ids"])


def test_the_tiny_models_two_tokenizer_files_agree(tiny_model_dir, spm, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "no-spiece")
    (folder / "spiece.model").unlink()
    fast = load_tokenizer(folder)  # tokenizer.json alone, read with the tokenizers library
    assert isinstance(fast, FastTokenizer)
    assert fast(TEXTS, add_special_tokens=False)["input_ids"] == [spm.encode(t) for t in TEXTS]


def test_the_digest_names_what_decides_the_ids(tiny_model_dir, tmp_path):
    from rospr.identity import weights_digest

    base = load_tokenizer(tiny_model_dir)
    other = shutil.copytree(tiny_model_dir, tmp_path / "other-eos")
    config = json.loads((other / "tokenizer_config.json").read_text())
    config["eos_token"] = "<pad>"
    (other / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(other).eos_token_id == 0
    assert tokenizer_digest(load_tokenizer(other)) != tokenizer_digest(base) == base.digest
    # the checkpoint digest every artifact key holds covers the tokenizer files with the weights
    assert weights_digest(other, full=True) != weights_digest(tiny_model_dir, full=True)


def test_a_special_token_the_model_file_lacks_is_refused(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "bad")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["eos_token"] = "<nowhere>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="eos_token '<nowhere>' is not a piece of spiece.model"):
        load_tokenizer(folder)
