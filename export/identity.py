"""What an export is made from and its content address: the checkpoints' digests and ``cache_key``."""

from __future__ import annotations

import json
from pathlib import Path

from rospr.canonical import sha256_text
from rospr.identity import config_digest, weights_digest
from rospr_export.trace import EXPORT_VERSION, OPSET, default_prompt_dtype


def checkpoint_source(name_or_path: str | Path, revision: str | None = None) -> dict:
    """What an export of a checkpoint is made from: its config digest and weights digest
    (``rospr.identity.config_digest`` / ``weights_digest``: a local folder by its files, read without
    torch or transformers; a hub checkpoint by its commit at ``revision``)."""
    return {"config": config_digest(name_or_path, revision), "weights": weights_digest(name_or_path, revision=revision)}


def export_sources(model: str | Path | None, retriever: str | Path | None = None, revision: str | None = None,
                   retriever_revision: str | None = None) -> dict:
    """The checkpoints an export of ``model`` (and ``retriever``) must come from: ``{"model": ...,
    "retriever": ...}``, each ``checkpoint_source`` or None. The cache key is computed from it and
    ``verify_export`` checks a manifest against it."""
    return {"model": None if model is None else checkpoint_source(model, revision),
            "retriever": None if retriever is None else checkpoint_source(retriever, retriever_revision)}


def cache_key(model_name: str | Path | None, retriever_name: str | Path | None = None, dtype: str = "float32",
              prompt_dtype: str | None = None, revision: str | None = None,
              retriever_revision: str | None = None, sources: dict | None = None) -> str:
    """The content address of an export: configs and weights of the model (and retriever), the
    dtypes, the opset and ``EXPORT_VERSION``. Hub checkpoints are identified by the commit that
    ``revision`` (``retriever_revision``) resolves to; local ones by their files (the weights'
    digests remembered per file: ``weights_digest``). ``sources``: ``export_sources`` of these
    checkpoints when the caller has it already (it is computed otherwise)."""
    if sources is None:
        sources = export_sources(model_name, retriever_name, revision, retriever_revision)
    parts = {
        "model": sources["model"],
        "retriever": sources["retriever"],
        "dtype": dtype,
        "prompt_dtype": prompt_dtype or default_prompt_dtype(dtype),
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
    }
    return sha256_text(json.dumps(parts, sort_keys=True))[:20]  # json's default separators: the keys of existing caches
