"""`bench_fusions`: the T5 transformer optimizer's graph of the tiny model's export fuses the residual
norms, opens on onnxruntime's CPU provider, and scores as PyTorch does at the export's tolerance."""

from __future__ import annotations

import pytest

from rospr_bench.bench_fusions import fused_graph, session


@pytest.mark.slow  # an export and onnxruntime's transformer optimizer: 3-4 s (the fast tier stays under 90 s; make test runs it)
def test_the_fused_graph_opens_on_the_cpu_and_matches_pytorch(tiny_model_dir, tmp_path):
    pytest.importorskip("onnxruntime.transformers")
    from transformers import AutoModelForSeq2SeqLM

    from rospr_export.validate import SCORER_TOLERANCE, validate_scorer
    from rospr_harness.backends.onnxruntime_backend import ensure_export

    export = ensure_export(tiny_model_dir) / "t0_scorer.onnx"
    fused = tmp_path / "fused.onnx"
    counts = fused_graph(export, fused)
    assert counts.get("SkipSimplifiedLayerNormalization", 0) > 0
    session(fused, 1)  # no RelativePositionBias: the CPU provider opens it
    check = validate_scorer(AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).eval(), fused, SCORER_TOLERANCE)
    assert check.ok, check
