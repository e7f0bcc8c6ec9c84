"""The PyTorch backend: the reference implementation of the Scorer protocol."""

from __future__ import annotations

import numpy as np
import torch

from rospr_harness.backends.base import Backend, check_device
from rospr_harness.config import ModelConfig, ScoringConfig
from rospr.backbone import PromptedT5
from rospr.scoring import ScoreBatch
from rospr.tuning import torch_threads

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cuda_devices() -> tuple[int, str]:
    """How many CUDA devices torch can score on here, and what torch is (for ``check_device``)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return count, f"torch {torch.__version__}, CUDA {'available' if count else 'not available'}"


class TorchScorer:
    """``Scorer`` over a Hugging Face T5/T0 model in eager PyTorch (CPU, or CUDA when asked)."""

    def __init__(self, model, device: str = "cpu", threads: int | None = None) -> None:
        """Takes the model, ``device`` (``model.device``) and intra-op ``threads``. Refuses (``ValueError``)
        a device this machine does not have."""
        self.threads = threads  # set around each call (torch's thread count is per process), then restored
        check_device(device, "torch", cuda_devices)
        self.device = torch.device(device)
        self.module = PromptedT5(model).to(self.device).eval()
        self.prompt_dim = int(model.config.d_model)
        self.dtype = next(model.parameters()).dtype

    @torch.inference_mode()
    def score(self, batch: ScoreBatch) -> np.ndarray:
        dev = self.device
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
        with torch_threads(self.threads):
            scores = self.module(
                t(batch.input_ids),
                t(batch.attention_mask),
                t(batch.prompt_embeds).to(self.dtype),
                t(batch.prompt_mask),
                t(batch.choice_ids),
                t(batch.choice_mask),
            )
        return scores.float().cpu().numpy()


def create_torch_backend(model: ModelConfig, scoring: ScoringConfig) -> Backend:
    """The torch ``Backend``: ``model.name_or_path`` loaded in process (``model.dtype``, hub commit
    ``model.revision``) and scored on ``model.device`` with ``scoring.threads`` intra-op threads. Its
    identity (provenance, and the unit cache's key) holds the precision and the device class, whose
    numerics differ (bfloat16 scores are not float32's; CUDA's kernels are not the CPU's), beside the
    checkpoint's. Refuses what ``load_backbone`` and ``TorchScorer`` refuse."""
    from rospr.backbone import load_backbone

    loaded, tokenizer, identity = load_backbone(model.name_or_path, dtype=DTYPES[model.dtype], revision=model.revision)
    scorer = TorchScorer(loaded, device=model.device, threads=scoring.threads)
    numerics = {"dtype": model.dtype, "device": scorer.device.type}
    return Backend("torch", scorer, tokenizer, {**identity.as_dict(), **numerics}, loaded)


def create_torch_embedder(retriever: str, model: ModelConfig, revision: str | None = None):
    """``(TorchEmbedder, tokenizer)``: the encoder of ``retriever`` (at hub ``revision``) on ``model.device``."""
    from rospr.retriever import TorchEmbedder, load_encoder

    encoder, tokenizer = load_encoder(retriever, revision=revision)
    return TorchEmbedder(encoder, device=model.device), tokenizer
