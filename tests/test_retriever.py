"""The dense retriever: its two poolings against PyTorch computed by hand."""

from __future__ import annotations

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
