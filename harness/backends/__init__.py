"""Implementations of the ``rospr.scoring.Scorer`` protocol: torch (reference), onnxruntime, Triton.

``base.py`` defines ``Backend`` and ``BackendUnavailable``; one module per backend holds its scorer,
its embedder and its typed factory (the config sections it reads, not the whole run config); the
two functions here pick the backend a ``RunConfig`` names. Each backend module is imported only
when chosen: they pull heavy, optional libraries (torch, onnxruntime, tritonclient).
"""

from __future__ import annotations

from harness.backends.base import Backend, BackendUnavailable
from harness.config import RunConfig

__all__ = ["Backend", "BackendUnavailable", "create_backend", "create_embedder"]


def create_backend(config: RunConfig) -> Backend:
    """Build the backend a ``RunConfig`` names. Refuses an unknown backend, and (``CheckpointError``,
    before any loading or hub lookup) a missing path or damaged checkpoint in ``model.name_or_path``."""
    from rospr.checkpoint import check_checkpoint

    check_checkpoint(config.model.name_or_path, "model.name_or_path")
    if config.backend == "torch":
        import torch

        from harness.backends.torch_backend import TorchScorer
        from rospr.backbone import load_backbone

        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[config.model.dtype]
        model, tokenizer, identity = load_backbone(config.model.name_or_path, dtype=dtype, revision=config.model.revision)
        scorer = TorchScorer(model, device=config.model.device, threads=config.scoring.threads)
        return Backend("torch", scorer, tokenizer, identity.as_dict(), model)
    if config.backend == "onnxruntime":
        from harness.backends.onnxruntime_backend import create_onnxruntime_backend

        return create_onnxruntime_backend(config.model, config.onnxruntime, config.scoring)
    if config.backend == "triton":
        from harness.backends.triton_backend import create_triton_backend

        urls = list(config.ray.triton_urls) if config.ray.enabled and config.ray.triton_urls else [config.triton.url]
        return create_triton_backend(config.model, config.triton, urls)
    raise ValueError(f"backend {config.backend!r}: not available")


def create_embedder(config: RunConfig, retriever: str):
    """An ``Embedder`` for the retriever checkpoint ``retriever`` on the backend ``config`` names
    (torch: in process; onnxruntime: the exported graph, cached; triton: the served ``retriever``).
    Returns ``(embedder, tokenizer)``. A hub retriever loads at ``checkpoint_revision``'s commit."""
    from harness.backends.tokenizer import load_tokenizer
    from harness.config import checkpoint_revision
    from rospr.checkpoint import check_checkpoint

    check_checkpoint(retriever, "rospr.retriever")
    revision = checkpoint_revision(config, retriever)
    if config.backend == "torch":
        from rospr.retriever import TorchEmbedder, load_encoder

        encoder, tokenizer = load_encoder(retriever, revision=revision)
        return TorchEmbedder(encoder, device=config.model.device), tokenizer
    tokenizer = load_tokenizer(retriever, revision)
    if config.backend == "onnxruntime":
        from harness.backends.onnxruntime_backend import create_onnxruntime_embedder

        return create_onnxruntime_embedder(retriever, config.model, config.onnxruntime, config.scoring,
                                           revision), tokenizer
    if config.backend == "triton":
        from harness.backends.triton_backend import TritonEmbedder

        return TritonEmbedder.from_config(config.triton), tokenizer
    raise ValueError(f"backend {config.backend!r}: not available")
