"""Check an exported graph against PyTorch: the inputs, the figures, the tolerances.

Every export is validated on inputs of several shapes (batch 1 and more, one-token and longer
sequences and choices, prompt length 0 and more, rows with and without a soft prompt in one batch):
the maximum absolute difference to PyTorch is recorded in ``manifest.json`` and an export above the
tolerance raises ``ExportValidationError`` (the files are kept for inspection, the manifest is not
written, so a cache never serves a graph that failed). ``expected_tolerance`` is the tolerance of a graph and dtype, which ``rospr_export.manifest``
holds a manifest's figures to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rospr.errors import RosprError

log = logging.getLogger(__name__)

SCORER_TOLERANCE = 1e-4
RETRIEVER_TOLERANCE = 1e-5
HALF_TOLERANCE = 0.25  # summed log-probabilities of a few tokens, float16 weights vs float32 reference

# (batch, sequence, prompt length, choices, choice length) used to check the scorer graph.
SCORER_CHECK_SHAPES = ((1, 1, 1, 1, 1), (2, 13, 0, 3, 4), (4, 7, 3, 2, 1), (3, 21, 6, 5, 9))
# (batch, sequence) used to check the retriever graph.
RETRIEVER_CHECK_SHAPES = ((1, 1), (2, 9), (5, 23))
CHECK_SHAPES = {"t0_scorer": SCORER_CHECK_SHAPES, "retriever": RETRIEVER_CHECK_SHAPES}


class ExportValidationError(RosprError, RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance (the message gives both)."""


@dataclass
class Validation:
    """The result of checking one graph against PyTorch."""

    graph: str
    max_abs_diff: float
    tolerance: float
    shapes: list[list[int]]
    provider: str
    per_shape: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


def session_for_check(path: Path, providers: Sequence[str] | None = None):
    """An onnxruntime session for validation: all optimisations on, as the backend runs it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def scorer_check_inputs(shape: tuple[int, int, int, int, int], vocab_size: int, d_model: int, seed: int = 0) -> dict:
    """Inputs in the tensor contract with realistic padding: rows of different lengths, choices of
    different counts and lengths, and (when P > 0) one row of every batch without a soft prompt."""
    b, s, p, c, t = shape
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(3, vocab_size, size=(b, s), dtype=np.int64)
    lengths = rng.integers(1, s + 1, size=b)
    lengths[0] = s
    attention_mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int64)
    input_ids[attention_mask == 0] = 0
    prompt_embeds = (rng.normal(size=(b, p, d_model)) * 0.5).astype(np.float32)
    plen = rng.integers(1, p + 1, size=b) if p > 0 else np.zeros(b, dtype=np.int64)
    if p > 0:
        plen[0] = p
        if b > 1:
            plen[-1] = 0  # a row with no soft prompt in the same batch
    prompt_mask = (np.arange(p)[None] < plen[:, None]).astype(np.int64)
    choice_ids = rng.integers(3, vocab_size, size=(b, c, t), dtype=np.int64)
    clen = rng.integers(1, t + 1, size=(b, c))
    clen[0, 0] = t
    choice_mask = (np.arange(t)[None, None] < clen[..., None]).astype(np.int64)
    if c > 1 and b > 1:
        choice_mask[1, -1] = 0  # a padded choice row, as collate makes for examples with fewer choices
    choice_ids[choice_mask == 0] = 0
    return dict(input_ids=input_ids, attention_mask=attention_mask, prompt_embeds=prompt_embeds,
                prompt_mask=prompt_mask, choice_ids=choice_ids, choice_mask=choice_mask)


def validate_scorer(model, path: Path, tolerance: float, providers: Sequence[str] | None = None,
                    shapes=SCORER_CHECK_SHAPES, float_dtype=np.float32) -> Validation:
    """Max |ONNX - PyTorch| of ``scores`` over ``shapes`` (valid choice rows only)."""
    import torch

    from rospr.backbone import PromptedT5

    ref_module = PromptedT5(model).eval()
    sess = session_for_check(path, providers)
    per_shape = []
    for i, shape in enumerate(shapes):
        feeds = scorer_check_inputs(shape, int(model.config.vocab_size), int(model.config.d_model), seed=i)
        with torch.inference_mode():
            ref = ref_module(*(torch.from_numpy(feeds[k]) for k in feeds)).float().numpy()
        onnx_feeds = dict(feeds)
        onnx_feeds["prompt_embeds"] = feeds["prompt_embeds"].astype(float_dtype)
        got = sess.run(["scores"], onnx_feeds)[0]
        valid = feeds["choice_mask"].any(-1)
        per_shape.append(float(np.max(np.abs(got[valid].astype(np.float64) - ref[valid]))))
    return Validation("t0_scorer", max(per_shape), tolerance, [list(s) for s in shapes],
                      sess.get_providers()[0], per_shape)


def validate_retriever(encoder, path: Path, tolerance: float, providers: Sequence[str] | None = None,
                       shapes=RETRIEVER_CHECK_SHAPES) -> Validation:
    """Max |ONNX - PyTorch| of ``sentence_embedding`` over ``shapes``."""
    import torch

    from rospr.retriever import MeanPoolEncoder

    ref_module = MeanPoolEncoder(encoder).eval()
    sess = session_for_check(path, providers)
    vocab = int(encoder.config.vocab_size)
    per_shape = []
    for i, (b, s) in enumerate(shapes):
        rng = np.random.default_rng(100 + i)
        ids = rng.integers(3, vocab, size=(b, s), dtype=np.int64)
        lengths = rng.integers(1, s + 1, size=b)
        lengths[0] = s
        mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int64)
        ids[mask == 0] = 0
        with torch.inference_mode():
            ref = ref_module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
        got = sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        per_shape.append(float(np.max(np.abs(got.astype(np.float64) - ref))))
    return Validation("retriever", max(per_shape), tolerance, [list(s) for s in shapes],
                      sess.get_providers()[0], per_shape)


def check(v: Validation, path: Path) -> Validation:
    """``v`` once logged; refuses (``ExportValidationError``, with the figures) a graph above its tolerance."""
    log.info("%s: max |onnx - torch| = %.3g over %d shapes (tolerance %.1g, %s)",
             v.graph, v.max_abs_diff, len(v.shapes), v.tolerance, v.provider)
    if not v.ok:
        raise ExportValidationError(
            f"{path}: the exported {v.graph} graph differs from PyTorch by {v.max_abs_diff:.3g} "
            f"(tolerance {v.tolerance:.1g}; per shape {v.per_shape} for shapes {v.shapes}). The graph is "
            "kept for inspection and is not used; re-export with float32, or report the model."
        )
    return v


def expected_tolerance(graph: str, dtype: str, prompt_dtype: str | None) -> float:
    """The tolerance ``export_models`` validates ``graph`` with, for the export's dtypes."""
    if graph == "retriever":
        return RETRIEVER_TOLERANCE
    # an unset prompt dtype is the default (rospr_export.trace.default_prompt_dtype): float16 only for a
    # float16 graph, which is half already
    half = dtype != "float32" or (prompt_dtype or "float32") != "float32"
    return HALF_TOLERANCE if half else SCORER_TOLERANCE
