"""harness/tiny_model.py: the tiny offline T0 is T5 v1.1-shaped under transformers 4 and 5 alike."""

from __future__ import annotations

import json


def test_the_head_is_untied_and_the_decoder_output_not_rescaled(tiny_model_dir, tiny_backbone):
    """T5 v1.1 / T0 keep a head of their own (transformers 5 ties T5's head at construction whatever the
    config says: the builder unties it) and do not rescale the decoder output (rospr.backbone reads it from
    the config of either major)."""
    from rospr.backbone import PromptedT5

    model = tiny_backbone[0]
    assert json.loads((tiny_model_dir / "config.json").read_text())["tie_word_embeddings"] is False
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    assert not PromptedT5(model).rescale


def test_the_tokenizer_files_are_written_from_the_model_file(tiny_model_dir):
    config = json.loads((tiny_model_dir / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "T5Tokenizer" and config["eos_token"] == "</s>"
    assert (tiny_model_dir / "spiece.model").is_file() and (tiny_model_dir / "tokenizer.json").is_file()
