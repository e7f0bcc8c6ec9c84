"""Implementations of the ``rospr.scoring.Scorer`` protocol: torch (reference), onnxruntime, Triton."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rospr.scoring import Scorer


@dataclass
class Backend:
    """What a run scores with: the scorer, the tokenizer that encodes for it, the model's identity."""

    name: str
    scorer: Scorer
    tokenizer: Any
    identity: dict
    model: Any = None  # the torch model when one was loaded in process (tuning, reference)
    embedder: Any = None  # a rospr.retriever.Embedder when the backend also serves the retriever


class BackendUnavailable(RuntimeError):
    """A backend cannot serve (server down, timed out after its retries): the message says which and why."""


def create_backend(config) -> Backend:
    """Build the backend a ``RunConfig`` names. Refuses an unknown backend, and (``CheckpointError``,
    before any loading or hub lookup) a missing path or damaged checkpoint in ``model.name_or_path``."""
    from rospr.backbone import check_checkpoint

    check_checkpoint(config.model.name_or_path, "model.name_or_path")
    if config.backend == "torch":
        import torch

        from harness.backends.torch_backend import TorchScorer
        from rospr.backbone import load_backbone

        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.model.dtype]
        model, tokenizer, identity = load_backbone(config.model.name_or_path, dtype=dtype)
        scorer = TorchScorer(model, device=config.model.device, threads=config.scoring.threads)
        return Backend("torch", scorer, tokenizer, identity.as_dict(), model)
    if config.backend == "onnxruntime":
        from harness.backends.onnxruntime_backend import create_onnxruntime_backend

        return create_onnxruntime_backend(config)
    if config.backend == "triton":
        from harness.backends.triton_backend import create_triton_backend

        return create_triton_backend(config)
    raise ValueError(f"backend {config.backend!r}: not available")


def create_embedder(config, retriever: str):
    """An ``Embedder`` for the retriever checkpoint ``retriever`` on the backend ``config`` names
    (torch: in process; onnxruntime: the exported graph, cached; triton: the served ``retriever``).
    Returns ``(embedder, tokenizer)``."""
    from transformers import AutoTokenizer

    from rospr.backbone import check_checkpoint

    check_checkpoint(retriever, "rospr.retriever")
    if config.backend == "torch":
        from rospr.retriever import TorchEmbedder, load_encoder

        encoder, tokenizer = load_encoder(retriever)
        return TorchEmbedder(encoder, device=config.model.device), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(retriever)
    if config.backend == "onnxruntime":
        from harness.backends.onnxruntime_backend import create_onnxruntime_embedder

        return create_onnxruntime_embedder(config, retriever), tokenizer
    if config.backend == "triton":
        from harness.backends.triton_backend import TritonEmbedder

        return TritonEmbedder.from_config(config.triton), tokenizer
    raise ValueError(f"backend {config.backend!r}: not available")
