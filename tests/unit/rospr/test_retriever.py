"""The dense retriever: its two poolings against PyTorch computed by hand, and a retriever given as a
weights file (the authors' T0-small) against the same weights loaded directly."""

from __future__ import annotations

import argparse
import hashlib

import numpy as np
import pytest
import torch

from rospr.retriever import PADDED_WIDTH, TorchEmbedder, embed_padded, embed_texts, load_encoder, token_ids

TEXTS = ["a short one", "the second text is a little longer than the first", "x"]


@pytest.fixture(scope="module")
def encoder(tiny_model_dir):
    return load_encoder(str(tiny_model_dir))


def _states(encoder, ids: list[int], width: int) -> torch.Tensor:
    """The encoder's last hidden states [width, D] of ``ids`` right-padded to ``width``, pads masked."""
    x = torch.zeros(1, width, dtype=torch.long)
    m = torch.zeros(1, width, dtype=torch.long)
    x[0, : len(ids)], m[0, : len(ids)] = torch.tensor(ids), 1
    with torch.no_grad():
        return encoder(input_ids=x, attention_mask=m).last_hidden_state[0]


def test_masked_pooling_is_the_mean_over_real_tokens(encoder):
    enc, tok = encoder
    got = embed_texts(TorchEmbedder(enc), tok, TEXTS, batch_size=2)
    for text, row in zip(TEXTS, got):
        ids = tok(text, add_special_tokens=False)["input_ids"]  # ours: no EOS
        want = _states(enc, ids, 64)[: len(ids)].mean(0)
        np.testing.assert_allclose(row, want.numpy(), rtol=1e-5, atol=1e-5)


def test_padded_pooling_is_the_labs_mean_over_every_padded_position(encoder):
    enc, tok = encoder
    got = embed_padded(TorchEmbedder(enc), tok, TEXTS, batch_size=2)
    for text, row in zip(TEXTS, got):
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # EOS last, as the lab's
        want = _states(enc, ids, PADDED_WIDTH).mean(0)  # all 256 positions, pads included
        np.testing.assert_allclose(row, want.numpy(), rtol=1e-5, atol=1e-5)
        masked = _states(enc, ids, PADDED_WIDTH)[: len(ids)].mean(0)
        assert not np.allclose(row, masked.numpy(), atol=1e-4)  # the pads' states do count
    # the padded pooling's queries: EOS appended, the mean over their tokens (the lab's queries are unpadded)
    queries = embed_texts(TorchEmbedder(enc), tok, TEXTS, eos=True)
    ids = tok(TEXTS[0], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    np.testing.assert_allclose(queries[0], _states(enc, ids, 64)[: len(ids)].mean(0).numpy(), rtol=1e-5, atol=1e-5)


def test_token_ids_truncation_keeps_the_eos(encoder):
    _, tok = encoder
    plain = tok(TEXTS[1], add_special_tokens=False)["input_ids"]
    assert token_ids(tok, [TEXTS[1]], 4) == [plain[:4]]
    assert token_ids(tok, [TEXTS[1]], 4, eos=True) == [plain[:3] + [tok.eos_token_id]]
    assert token_ids(tok, [""], 4) == [[tok.eos_token_id]] == token_ids(tok, [""], 4, eos=True)


# -- a retriever given as a weights file for a base's architecture (the authors' T0-small) -------------------
def _published(tiny_model_dir, path, lightning: bool = True, edit=None):
    """The tiny model's whole seq2seq state dict, its weights moved off the base's (so loading the base
    alone would not pass), saved as the authors saved T0_small.pt: a Lightning checkpoint whose
    ``state_dict`` has ``model.``-prefixed keys (``lightning``), or a plain state dict."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir))
    state = {k: v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
             for i, (k, v) in enumerate(model.state_dict().items())}
    for tied in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):  # one tensor in the model
        state[tied] = state["shared.weight"]
    if edit:
        edit(state)
    torch.save({"epoch": 3, "global_step": 100, "state_dict": {f"model.{k}": v for k, v in state.items()}}
               if lightning else state, path)
    return state


@pytest.mark.parametrize("lightning", [True, False])
def test_a_weights_file_becomes_the_encoder_it_holds(tiny_model_dir, tmp_path, lightning):
    from transformers import AutoConfig, T5ForConditionalGeneration

    from rospr.identity import retriever_identity
    from rospr.retriever import weights_checkpoint

    weights = tmp_path / "T0_small.pt"
    state = _published(tiny_model_dir, weights, lightning)
    folder = weights_checkpoint(str(tiny_model_dir), weights, cache_dir=tmp_path / "cache")
    # the same weights loaded directly into the base's architecture, by transformers' own loading
    config = AutoConfig.from_pretrained(str(tiny_model_dir))
    config._attn_implementation = "eager"  # as rospr loads encoders (transformers 5 would build sdpa)
    direct = T5ForConditionalGeneration(config)
    if direct.lm_head.weight is direct.shared.weight:  # transformers 5 ties T5's head at construction: the
        direct.lm_head.weight = torch.nn.Parameter(direct.shared.weight.clone())  # file's own head must not overwrite shared
    direct.load_state_dict(state)
    got, tok = load_encoder(str(folder))
    for name, tensor in direct.get_encoder().state_dict().items():
        assert torch.equal(got.get_encoder().state_dict()[name], tensor), name
    np.testing.assert_array_equal(embed_texts(TorchEmbedder(got), tok, TEXTS),
                                  embed_texts(TorchEmbedder(direct.get_encoder().eval()), tok, TEXTS))
    assert weights_checkpoint(str(tiny_model_dir), weights, cache_dir=tmp_path / "cache") == folder  # reused
    # its identity: the file's name and digest, the base's config
    identity = retriever_identity(str(tiny_model_dir), weights=weights)
    assert identity["name"] == "T0_small.pt" and identity["base"] == tiny_model_dir.name
    assert identity["weights"] == hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert identity["config_hash"] == retriever_identity(str(tiny_model_dir))["config_hash"]


def test_missing_and_unexpected_encoder_keys_are_refused_by_name(tiny_model_dir, tmp_path):
    from rospr.retriever import weights_checkpoint

    def drop(state):
        del state["encoder.block.0.layer.1.DenseReluDense.wo.weight"]

    def extra(state):
        state["encoder.block.9.layer.0.SelfAttention.q.weight"] = torch.zeros(2, 2)

    _published(tiny_model_dir, tmp_path / "drop.pt", edit=drop)
    with pytest.raises(ValueError, match=r"missing encoder\.block\.0\.layer\.1\.DenseReluDense\.wo\.weight$|"
                                         r"missing encoder\.block\.0\.layer\.1\.DenseReluDense\.wo\.weight;"):
        weights_checkpoint(str(tiny_model_dir), tmp_path / "drop.pt", cache_dir=tmp_path / "cache")
    _published(tiny_model_dir, tmp_path / "extra.pt", edit=extra)
    with pytest.raises(ValueError, match=r"unexpected encoder\.block\.9\.layer\.0\.SelfAttention\.q\.weight"):
        weights_checkpoint(str(tiny_model_dir), tmp_path / "extra.pt", cache_dir=tmp_path / "cache")
    # a checkpoint that needs full unpickling (objects beside the tensors) is not read
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(lr=0.3)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="not readable as weights only"):
        weights_checkpoint(str(tiny_model_dir), tmp_path / "pickled.pt", cache_dir=tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # nothing half-written is left
