"""Implementations of the ``rospr.scoring.Scorer`` protocol: torch (reference), onnxruntime, Triton.

``base.py`` defines ``Backend`` and ``BackendUnavailable``; one module per backend holds its scorer,
its embedder and its typed factories (the config sections they read, not the whole run config).
``BACKENDS`` names each backend's module and which sections of a ``RunConfig`` its factories take;
the two functions here pick the entry a ``RunConfig`` names. A backend's module is imported only
when chosen: they pull heavy, optional libraries (torch, onnxruntime, tritonclient).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from rospr_harness.backends.base import Backend, BackendUnavailable, check_device
from rospr_harness.config import RunConfig
from rospr.errors import SettingError

__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "create_backend", "create_embedder"]


@dataclass(frozen=True)
class BackendModule:
    """One backend: its module, and its factories called with that module and a ``RunConfig``.

    ``backend(module, config)`` returns the ``Backend``; ``embedder(module, config, retriever,
    revision)`` the ``Embedder`` of checkpoint ``retriever``; ``tokenizer`` is None when the embedder's
    tokenizer comes with it (``embedder`` then returns ``(embedder, tokenizer)``), else how it is
    loaded, before the embedder. ``cuda(module)``: the CUDA devices it can score on here and what it has
    (``base.check_device``); None for a backend whose device is not ours to choose (Triton: the server's)."""

    module: str
    backend: Callable[[ModuleType, RunConfig], Backend]
    embedder: Callable[[ModuleType, RunConfig, str, str | None], Any]
    tokenizer: Callable[[str, str | None], Any] | None = None
    cuda: Callable[[ModuleType], tuple[int | None, str]] | None = None


def _tokenizer_json(retriever: str, revision: str | None):
    from rospr.tokenizer import load_tokenizer

    return load_tokenizer(retriever, revision)


def _triton_urls(config: RunConfig) -> list[str]:
    """The servers a triton run may talk to: ``ray.triton_urls`` on Ray, else ``triton.url``."""
    return list(config.ray.triton_urls) if config.ray.enabled is not False and config.ray.triton_urls else [config.triton.url]


BACKENDS: dict[str, BackendModule] = {
    "torch": BackendModule(
        "rospr_harness.backends.torch_backend",
        backend=lambda m, c: m.create_torch_backend(c.model, c.scoring),
        embedder=lambda m, c, retriever, revision: m.create_torch_embedder(retriever, c.model, revision),
        cuda=lambda m: m.cuda_devices()),
    "onnxruntime": BackendModule(
        "rospr_harness.backends.onnxruntime_backend",
        backend=lambda m, c: m.create_onnxruntime_backend(c.model, c.onnxruntime, c.scoring),
        embedder=lambda m, c, retriever, revision: m.create_onnxruntime_embedder(
            retriever, c.model, c.onnxruntime, c.scoring, revision),
        tokenizer=_tokenizer_json,
        cuda=lambda m: m.cuda_devices()),
    "triton": BackendModule(
        "rospr_harness.backends.triton_backend",
        backend=lambda m, c: m.create_triton_backend(c.model, c.triton, _triton_urls(c)),
        embedder=lambda m, c, retriever, revision: m.TritonEmbedder.from_config(c.triton, retriever, revision),
        tokenizer=_tokenizer_json),
}


def _entry(config: RunConfig) -> tuple[BackendModule, ModuleType]:
    """The table's entry for ``config.backend`` and its module (imported now), ``model.device`` checked
    against what the backend has here (``check_device``). Refuses (``ValueError``, one line listing the known
    ones) a name the table lacks."""
    entry = BACKENDS.get(config.backend)
    if entry is None:
        raise SettingError(f"backend {config.backend!r}: not available; the backends are {', '.join(BACKENDS)}")
    module = importlib.import_module(entry.module)
    if entry.cuda is not None:
        check_device(config.model.device, config.backend, lambda: entry.cuda(module))
    return entry, module


def create_backend(config: RunConfig) -> Backend:
    """Build the backend a ``RunConfig`` names. Refuses an unknown backend, and (``CheckpointError``,
    before any loading or hub lookup) a missing path or damaged checkpoint in ``model.name_or_path``."""
    from rospr.checkpoint import check_checkpoint

    check_checkpoint(config.model.name_or_path, "model.name_or_path")
    entry, module = _entry(config)
    return entry.backend(module, config)


def create_embedder(config: RunConfig, retriever: str):
    """An ``Embedder`` for the retriever checkpoint ``retriever`` on the backend ``config`` names
    (torch: in process; onnxruntime: the exported graph, cached; triton: the served ``retriever``).
    Returns ``(embedder, tokenizer)``. A hub retriever loads at ``checkpoint_revision``'s commit."""
    from rospr_harness.config import checkpoint_revision
    from rospr.checkpoint import check_checkpoint

    check_checkpoint(retriever, "rospr.retriever")
    revision = checkpoint_revision(config, retriever)
    entry, module = _entry(config)
    if entry.tokenizer is None:
        return entry.embedder(module, config, retriever, revision)
    tokenizer = entry.tokenizer(retriever, revision)
    return entry.embedder(module, config, retriever, revision), tokenizer
