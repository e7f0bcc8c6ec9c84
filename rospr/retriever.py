"""The dense retriever: a sentence embedding from any encoder checkpoint.

The key of a library instance (and a query) is the mean of the encoder's last hidden states over
non-pad tokens (DESIGN.md section 1.2). ``MeanPoolEncoder`` is the one definition: the PyTorch
embedder runs it and the ONNX export traces it. ``Embedder`` is the protocol backends implement.
"""

from __future__ import annotations

import functools
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from rospr.errors import SettingError

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
        """Masked mean of an encoder's last hidden states: ``sum(h * m) / max(sum(m), 1)``."""

        def __init__(self, encoder: nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
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

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            ids = torch.from_numpy(np.ascontiguousarray(input_ids)).to(self.device)
            mask = torch.from_numpy(np.ascontiguousarray(attention_mask)).to(self.device)
            return self.module(ids, mask).float().cpu().numpy()


def embed_texts(embedder: Embedder, tokenizer, texts: Sequence[str], batch_size: int = 32,
                max_tokens: int = 512) -> np.ndarray:
    """Embed texts in length-sorted batches; returns float32 [len(texts), D_r] in input order.

    Inputs are tokenised without special tokens (like scorer inputs) and truncated to ``max_tokens``.
    """
    if not texts:
        return np.zeros((0, embedder.dim), dtype=np.float32)
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    ids = [list(x[:max_tokens]) or [tokenizer.eos_token_id] for x in ids]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    out = np.zeros((len(ids), embedder.dim), dtype=np.float32)
    pad = tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(ids[i]) for i in idx)
        batch = np.full((len(idx), width), pad, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            batch[row, : len(ids[i])] = ids[i]
            mask[row, : len(ids[i])] = 1
        out[idx] = embedder.embed(batch, mask)
    return out
