"""Before any unit: the prompt bank and the library a run's RoSPr methods need, and the retriever.

Two calls, each computing its artifact's one key once and either opening an intact entry or
building and publishing one: ``ensure_bank`` (``rospr_harness.method.bank``: the source prompts,
tuned where the bank lacks them under their ``train_key``) and ``ensure_library``
(``rospr_harness.method.library``: the library of those prompts under its ``build_key``). A missing
retriever weights file is refused before any tuning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rospr_harness.backends import Backend, create_embedder
from rospr_harness.config import RosprConfig, RunConfig
from rospr_harness.method.bank import bank_spec, ensure_bank
from rospr_harness.method.library import ensure_library, library_spec, retriever_checkpoint
from rospr_harness.tasks.base import DataSettings
from rospr.library import Library
from rospr.retriever import Embedder
from rospr.softprompt import PromptBank


@dataclass
class RosprContext:
    """What the RoSPr methods need during a run: their settings, the bank, the library, the retriever."""

    rc: RosprConfig
    bank: PromptBank
    library: Library
    embedder: Embedder
    retriever_tokenizer: Any

    def provenance(self) -> dict:
        """The retriever's identity as the library records it, with the device classes the artifacts were
        made on where recorded (never in their keys, by design: docs/tuning.md): ``library_device`` (the
        keys embedded), ``bank_devices`` (the library's prompts tuned)."""
        out = dict(self.library.manifest.get("retriever") or {})
        if self.library.manifest.get("device"):
            out["library_device"] = self.library.manifest["device"]
        ids = set(self.library.manifest.get("prompt_ids") or ())
        devices = sorted({e["device"] for e in self.bank.entries if e["id"] in ids and e.get("device")})
        if devices:
            out["bank_devices"] = devices
        return out


def prepare(config: RunConfig, backend: Backend, data_settings: DataSettings) -> RosprContext:
    """The bank (missing prompts tuned), the library (reused or built) and the retriever loaded on
    ``backend``'s kind; only the source prompts whose source key the bank does not hold are rendered.
    Returns the context the run's units use."""
    checkpoint = retriever_checkpoint(config)  # a missing or wrong weights file is refused before any tuning
    bank_in = bank_spec(config, backend, data_settings)
    bank, ids = ensure_bank(bank_in)
    embedder, rtok = create_embedder(config, checkpoint)
    spec = library_spec(config, bank, ids, bank_in.sources.keys, bank_in.sources.jobs, checkpoint)
    return RosprContext(config.rospr, bank, ensure_library(spec, embedder, rtok), embedder, rtok)
