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
from pathlib import Path
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
    from transformers import AutoConfig, AutoModel, T5EncoderModel

    from rospr.tokenizer import load_tokenizer

    dtype = dtype or torch.float32
    name = str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name, revision=revision)
        tokenizer = load_tokenizer(name, revision=revision)
        if config.model_type in ("t5", "mt5", "umt5"):
            encoder = T5EncoderModel.from_pretrained(name, dtype=dtype, revision=revision, attn_implementation="eager")
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


# -- a retriever published as a weights file (the authors' T0-small) ------------------------------------
WEIGHTS_FORMAT = "rospr-retriever-from-weights"
# keys of a seq2seq state dict that are not the encoder's: left out, not refused
OTHER_HALF = ("decoder.", "lm_head.")
# the encoder's token embedding is tied to the model's shared one: a file may hold either name
TIED = {"encoder.embed_tokens.weight": "shared.weight", "shared.weight": "encoder.embed_tokens.weight"}


def read_state_dict(path: str | Path) -> dict:
    """The tensors of a weights file, read with ``torch.load(weights_only=True)``: a Lightning
    checkpoint's ``state_dict`` or a plain state dict, the ``model.`` prefix of a Lightning module's
    attribute removed. Refuses (``SettingError`` naming the file and the fix) a file that cannot be
    read as weights only, and one holding no tensors."""
    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle's UnpicklingError (a global weights_only refuses), RuntimeError, EOFError, OSError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(f"{path}: not readable as weights only ({first[:160]}); if you trust the file, load it "
                           "whole in PyTorch and save its 'state_dict' alone, then give that file") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise SettingError(f"{path}: holds no state dict of tensors (a Lightning checkpoint's 'state_dict' or a "
                           "plain state dict); give the retriever's weights file")
    return {k.removeprefix("model."): v for k, v in state.items()}


def encoder_state(state: dict, expected: Sequence[str], where: str | Path) -> dict:
    """The tensors of ``state`` that an encoder whose state dict has the keys ``expected`` loads: the
    seq2seq model's other half (``OTHER_HALF``) left out, a tied embedding (``TIED``) taken from the
    other name when one is missing. Refuses (``SettingError`` naming them) missing and unexpected keys."""
    kept = {k: v for k, v in state.items() if not k.startswith(OTHER_HALF)}
    for key, twin in TIED.items():
        if key in expected and key not in kept and twin in kept:
            kept[key] = kept[twin]
    missing = sorted(set(expected) - set(kept))
    unexpected = sorted(set(kept) - set(expected))
    if missing or unexpected:
        def names(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        raise SettingError(f"{where}: not the encoder of rospr.retriever's base: "
                           + "; ".join(f"{what} {names(keys)}" for what, keys in
                                       (("missing", missing), ("unexpected", unexpected)) if keys)
                           + "; give the base checkpoint these weights were trained from")
    return kept


def weights_checkpoint(base: str, weights: str | Path, revision: str | None = None,
                       cache_dir: str | Path | None = None) -> Path:
    """A checkpoint folder of the encoder of ``base``'s architecture holding the weights file
    ``weights`` (``read_state_dict``, ``encoder_state``), with base's tokenizer files: what every backend
    loads and exports like any encoder checkpoint. Written once into the ``retrievers`` cache
    (``rospr.cachedirs``), keyed by base's config and tokenizer (``base_tokenizer_digest``: the folder
    holds its files) and the file's sha256, and reused. ``revision`` pins
    a hub base. Refuses (``SettingError``) a file that is not that encoder's weights."""
    from rospr.cachedirs import cache_path
    from rospr.canonical import digest_json
    from rospr.identity import base_tokenizer_digest, config_digest, file_sha256
    from rospr.store import ContentStore

    sha = file_sha256(weights)
    key = digest_json({"base_config": config_digest(base, revision), "base_tokenizer": base_tokenizer_digest(base, revision),
                       "weights_sha256": sha})[:32]
    store = ContentStore(cache_path("retrievers", cache_dir), WEIGHTS_FORMAT, 1, fix="it is written again")
    if store.open(key) is not None:
        return store.path(key)
    stage = store.stage(key)
    try:
        _write_encoder(base, weights, revision, stage)
        return store.publish(stage, {"base": str(base), "revision": revision, "weights": Path(weights).name,
                                     "weights_sha256": sha})
    finally:
        store.drop(stage)


def _write_encoder(base: str, weights: str | Path, revision: str | None, stage) -> None:
    """Write ``weights_checkpoint``'s files into ``stage``: the encoder (config and safetensors) and
    base's tokenizer files (``*.model``, ``*.txt``, and ``*.json`` but its configs)."""
    import tempfile

    from huggingface_hub import snapshot_download
    from transformers import AutoConfig, AutoModel, T5EncoderModel

    config = AutoConfig.from_pretrained(base, revision=revision)
    encoder = T5EncoderModel(config) if config.model_type in ("t5", "mt5", "umt5") else AutoModel.from_config(config)
    if getattr(config, "is_encoder_decoder", False) and not isinstance(encoder, T5EncoderModel):
        encoder = encoder.get_encoder()
    encoder.load_state_dict(encoder_state(read_state_dict(weights), list(encoder.state_dict()), weights))
    folder = Path(base) if Path(base).is_dir() else Path(snapshot_download(
        base, revision=revision, allow_patterns=["*.json", "*.model", "*.txt"]))
    with tempfile.TemporaryDirectory(dir=stage.path.parent) as tmp:
        encoder.save_pretrained(tmp, safe_serialization=True)
        for f in sorted(Path(tmp).iterdir()):
            stage.adopt(f.name, f)
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.suffix in (".model", ".txt", ".json") and f.name not in (
                "config.json", "generation_config.json") and not f.name.endswith(".index.json"):
            stage.write_bytes(f.name, f.read_bytes())
