"""The dense retriever: a sentence embedding from any encoder checkpoint.

The key of a library instance (and a query) is the mean of the encoder's last hidden states over
non-pad tokens (docs/method.md, "Retriever"). ``MeanPoolEncoder`` is the one definition: the PyTorch
embedder runs it and the ONNX export traces it. ``Embedder`` is the protocol backends implement.

Pooling is a setting (``POOLINGS``): ``masked`` (ours: inputs without special tokens, as the
scorer's, mean over the real tokens) or ``padded`` (the lab's code: EOS appended; a key padded to
``PADDED_WIDTH`` tokens and averaged over every position, pads included, ``embed_padded``; a query
averaged over its tokens). The states at pad positions exist only in PyTorch (the exported graph
pools over its mask), so padded keys are embedded by a ``TorchEmbedder``.
"""

from __future__ import annotations

import functools
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from rospr.errors import SettingError

POOLINGS = ("masked", "padded")
PADDED_WIDTH = 256  # the lab's key width: every key padded (or truncated) to 256 tokens, EOS included
# torch is imported where it is used: a run on an exported retriever (onnxruntime, Triton) imports
# this module for ``Embedder`` and ``embed_texts`` and never needs torch.


@runtime_checkable
class Embedder(Protocol):
    """Turns token ids [B, S] and mask [B, S] into sentence embeddings float32 [B, D_r]."""

    dim: int

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


@functools.cache
def _mean_pool_encoder():
    from torch import nn

    class MeanPoolEncoder(nn.Module):
        """Masked mean of an encoder's last hidden states: ``sum(h * m) / max(sum(m), 1)``, ``m`` the
        attention mask, or ``pool_mask`` when given (the padded pooling: every position)."""

        def __init__(self, encoder: nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, pool_mask=None):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = (attention_mask if pool_mask is None else pool_mask).to(hidden.dtype).unsqueeze(-1)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    MeanPoolEncoder.__module__ = __name__  # pickles and prints as rospr.retriever.MeanPoolEncoder
    return MeanPoolEncoder


def __getattr__(name: str):
    # ``MeanPoolEncoder`` (a torch module) is defined on first use, so importing this module needs no torch
    if name == "MeanPoolEncoder":
        return _mean_pool_encoder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_encoder(name_or_path: str, dtype=None, revision: str | None = None):
    """Load the encoder of a checkpoint (the encoder half of a seq2seq model, or an encoder-only
    model) and its tokenizer; ``dtype`` a torch dtype (default float32), ``revision`` the hub commit
    (a local directory ignores it). Returns
    ``(encoder_module, tokenizer)``, frozen, in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

    dtype = dtype or torch.float32
    name = str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
        tokenizer = AutoTokenizer.from_pretrained(name, revision=revision)
        if config.model_type in ("t5", "mt5", "umt5"):
            encoder = T5EncoderModel.from_pretrained(name, dtype=dtype, revision=revision)
        else:
            model = AutoModel.from_pretrained(name, dtype=dtype, revision=revision)
            encoder = model.get_encoder() if getattr(config, "is_encoder_decoder", False) else model
    except OSError as exc:
        raise SettingError(f"retriever {name!r}: cannot load a checkpoint ({exc})") from exc
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder, tokenizer


class TorchEmbedder:
    """``Embedder`` over a PyTorch encoder (the reference for the exported retriever graph)."""

    def __init__(self, encoder, device: str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.module = _mean_pool_encoder()(encoder).to(self.device).eval()
        self.dim = int(encoder.config.d_model if hasattr(encoder.config, "d_model") else encoder.config.hidden_size)

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray,
              pool_mask: np.ndarray | None = None) -> np.ndarray:
        """Sentence embeddings float32 [B, D_r]; ``pool_mask``: the positions averaged (default the mask)."""
        import torch

        def tensor(x: np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        with torch.inference_mode():
            pool = None if pool_mask is None else tensor(pool_mask)
            return self.module(tensor(input_ids), tensor(attention_mask), pool).float().cpu().numpy()


def token_ids(tokenizer, texts: Sequence[str], max_tokens: int, eos: bool = False) -> list[list[int]]:
    """Token ids of ``texts`` truncated to ``max_tokens``: without special tokens (like scorer inputs),
    or with EOS last (``eos``: the padded pooling's tokenisation; truncation keeps the EOS). An empty
    text is one EOS."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if eos:
        return [list(x[: max_tokens - 1]) + [tokenizer.eos_token_id] for x in ids]
    return [list(x[:max_tokens]) or [tokenizer.eos_token_id] for x in ids]


def embed_texts(embedder: Embedder, tokenizer, texts: Sequence[str], batch_size: int = 32,
                max_tokens: int = 512, eos: bool = False) -> np.ndarray:
    """Embed texts (``token_ids``) in length-sorted batches, each the mean over its tokens; returns
    float32 [len(texts), D_r] in input order."""
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    ids = token_ids(tokenizer, texts, max_tokens, eos)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out = np.zeros((len(ids), embedder.dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch, mask = _padded([ids[i] for i in idx], max(len(ids[i]) for i in idx), tokenizer.pad_token_id or 0)
        out[idx] = embedder.embed(batch, mask)
    return out


def embed_padded(embedder: TorchEmbedder, tokenizer, texts: Sequence[str], width: int = PADDED_WIDTH,
                 batch_size: int = 32) -> np.ndarray:
    """The lab's keys: each text with EOS, truncated or padded to ``width`` tokens, the mean of the
    encoder's states over all ``width`` positions (pads attend to nothing but are averaged). Returns
    float32 [len(texts), D_r]. Refuses (``SettingError``) an embedder that is not PyTorch's."""
    if not isinstance(embedder, TorchEmbedder):
        raise SettingError("the padded pooling averages the encoder's states at pad positions, which only the "
                           "PyTorch retriever gives (an exported graph pools over its mask); embed keys with a "
                           "TorchEmbedder")
    ids = token_ids(tokenizer, texts, width, eos=True)
    out = np.zeros((len(ids), embedder.dim), dtype=np.float32)
    for start in range(0, len(ids), batch_size):
        batch, mask = _padded(ids[start : start + batch_size], width, tokenizer.pad_token_id or 0)
        out[start : start + len(batch)] = embedder.embed(batch, mask, np.ones_like(mask))
    return out


def _padded(rows: Sequence[Sequence[int]], width: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 ids and mask [len(rows), width]."""
    batch = np.full((len(rows), width), pad, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for row, x in enumerate(rows):
        batch[row, : len(x)] = x
        mask[row, : len(x)] = 1
    return batch, mask
