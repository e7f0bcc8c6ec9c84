"""Trace the ``t0_scorer`` and ``retriever`` graphs through Optimum (``rospr_export.onnx_config``)
and validate each against PyTorch (``rospr_export.validate``).

Half precision (GPU only). T5 v1.1 / T0 overflow float16: activations of the feed-forward output
projection exceed 65504 in the larger checkpoints. What the float16 export does about it: the model
is loaded with Hugging Face's ``_keep_in_fp32_modules`` (T5's ``wo`` projections stay float32 and
their input is cast up), the clamp that ``T5Block`` applies to float16 hidden states is traced into
the graph, and the choice log-probabilities (logits, log-sum-exp, the sum) are computed in float32 /
float64 by ``PromptedT5`` itself, so ``scores`` stay FP32. ``bfloat16`` has float32's range and does
not overflow: prefer it on GPUs that have it (Ampere and later). Half-precision graphs are validated
with a looser tolerance (``HALF_TOLERANCE``) against the float32 PyTorch model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from rospr.errors import SettingError
from rospr_export.validate import (RETRIEVER_TOLERANCE, ExportValidationError, Validation, check,
                                   expected_tolerance, validate_retriever, validate_scorer)

log = logging.getLogger(__name__)

# Bump when the graphs or their inputs change: it is part of the cache key of on-demand exports.
# 2: packed decoder and LM head (only real choices and tokens); 3: cross-attention keys and values
# projected once per input and shared by its choices (rospr.backbone.PromptedT5._decode); 4: the decoder's
# residual stream packed to real tokens (no projection or feed-forward on a choice's padding), LogSoftmax.
EXPORT_VERSION = "4"
OPSET = 17
TWO_GB = 2**31
DTYPES = ("float32", "float16", "bfloat16")


def torch_dtype(dtype: str):
    """The torch dtype of an export ``dtype``; refuses (``SettingError``) one not in ``DTYPES``."""
    import torch

    if dtype not in DTYPES:
        raise SettingError(f"export dtype {dtype!r}: choose one of {list(DTYPES)}")
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _float_tag(dtype: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]


@contextlib.contextmanager
def _force_external_data(enabled: bool):
    """Optimum rewrites the graph with all weights in one ``<name>_data`` file when this is set."""
    old = os.environ.get("FORCE_ONNX_EXTERNAL_DATA")
    if enabled:
        os.environ["FORCE_ONNX_EXTERNAL_DATA"] = "1"
    try:
        yield
    finally:
        if enabled:
            if old is None:
                os.environ.pop("FORCE_ONNX_EXTERNAL_DATA", None)
            else:
                os.environ["FORCE_ONNX_EXTERNAL_DATA"] = old


def _parameter_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _optimum_export(wrapper, onnx_config, path: Path, external_data: bool | None, device: str, dtype: str) -> None:
    from optimum.exporters.onnx import export

    # Protobuf cannot hold a model over 2 GB: such models are always written with external data.
    external = external_data if external_data is not None else _parameter_bytes(wrapper) >= TWO_GB
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # Optimum's export sets config.use_cache = False on the model it is given; the caller's model
    # (a shared backbone, say) must come back as it went in.
    configs = [m.config for m in wrapper.modules() if hasattr(getattr(m, "config", None), "use_cache")]
    saved = [c.use_cache for c in configs]
    try:
        with _force_external_data(external):
            export(wrapper, onnx_config, path, opset=OPSET, device=device,
                   dtype="fp16" if dtype == "float16" else None)
    except Exception as exc:  # Optimum opens an onnxruntime session on the new graph (fix_dynamic_axes)
        if dtype == "float32" or not type(exc).__module__.startswith("onnxruntime"):
            raise
        raise ExportValidationError(
            f"{path}: the {dtype} graph cannot be built here: onnxruntime on {device} has no kernel for one of "
            f"its ops ({str(exc).strip().splitlines()[0][:200]}). Export half precision where it will be served: "
            "--device cuda with onnxruntime-gpu."
        ) from None
    finally:
        for c, v in zip(configs, saved):
            c.use_cache = v
    log.info("exported %s in %.1fs%s", path.name, time.time() - t0, " (external data)" if external else "")


def default_prompt_dtype(dtype: str) -> str:
    """The data type of the ``prompt_embeds`` input: float16 for a float16 graph, else float32
    (numpy, hence the wire, has no bfloat16; a bfloat16 graph casts its float32 prompt inside)."""
    return "float16" if dtype == "float16" else "float32"


def export_scorer(model, out: Path, dtype: str = "float32", reference=None, external_data: bool | None = None,
                  device: str = "cpu", tolerance: float | None = None, providers: Sequence[str] | None = None,
                  prompt_dtype: str | None = None) -> Validation:
    """Export ``PromptedT5(model)`` to ``out`` (an .onnx file) and validate it.

    ``model`` is loaded in the export ``dtype``; ``reference`` is the float32 model to check against
    (``model`` itself when None). ``prompt_dtype`` (float32 or float16) is the type of the
    ``prompt_embeds`` input (the graph casts it to the model's type). Returns the ``Validation``;
    raises ``ExportValidationError``.
    """
    from rospr_export.onnx_config import ScorerForExport, ScorerOnnxConfig

    prompt_dtype = prompt_dtype or default_prompt_dtype(dtype)
    if prompt_dtype not in ("float32", "float16"):
        raise SettingError(f"prompt dtype {prompt_dtype!r}: choose float32 or float16")
    cfg = ScorerOnnxConfig(model.config, task="feature-extraction", float_dtype=_float_tag(prompt_dtype))
    _optimum_export(ScorerForExport(model), cfg, out, external_data, device, dtype)
    tol = tolerance if tolerance is not None else expected_tolerance("t0_scorer", dtype, prompt_dtype)
    try:
        v = validate_scorer(reference if reference is not None else model, out, tol, providers,
                            float_dtype=np.dtype(prompt_dtype).type)
    except Exception as exc:  # onnxruntime has no kernel for an op in this precision on this provider
        if dtype == "float32":
            raise
        raise ExportValidationError(
            f"{out}: the {dtype} graph cannot be checked here: onnxruntime failed to run it ({exc}). Export "
            "half precision where it will be served: --device cuda with onnxruntime-gpu."
        ) from None
    return check(v, out)


def export_retriever(encoder, out: Path, external_data: bool | None = None, device: str = "cpu",
                     tolerance: float | None = None, providers: Sequence[str] | None = None) -> Validation:
    """Export ``MeanPoolEncoder(encoder)`` (always float32: it is small) and validate it."""
    from rospr_export.onnx_config import RetrieverForExport, RetrieverOnnxConfig

    cfg = RetrieverOnnxConfig(encoder.config, task="feature-extraction")
    _optimum_export(RetrieverForExport(encoder), cfg, out, external_data, device, "float32")
    return check(validate_retriever(encoder, out, tolerance if tolerance is not None else RETRIEVER_TOLERANCE,
                                    providers), out)
