"""``rospr_bench.common.product_backend``: the benchmarks' scorers, built by ``create_backend``, score
exactly as the scorers the benchmarks used to build by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rospr_bench.common import product_backend
from rospr_bench.workload import examples


@pytest.fixture(scope="module")
def batches(tiny_model_dir):
    from rospr.backbone import load_backbone
    from rospr.scoring import Convention, collate, encode_examples, plan_batches

    _, tok, identity = load_backbone(tiny_model_dir)
    encoded = encode_examples(tok, examples(4), Convention())
    prompt = (np.random.default_rng(0).normal(size=(5, identity.d_model)) * 0.5).astype(np.float32)
    return [collate([encoded[i] for i in idx], [prompt] * len(idx), identity.d_model)
            for idx in plan_batches(encoded, 4)]


def scores(scorer, batches) -> list[np.ndarray]:
    return [scorer.score(b) for b in batches]


def test_torch_scores_as_the_hand_built_scorer(tiny_model_dir, batches):
    from rospr_harness.backends.torch_backend import TorchScorer
    from rospr.backbone import load_backbone

    built = product_backend("torch", tiny_model_dir, threads=1)
    assert built.name == "torch" and built.scorer.threads == 1
    by_hand = TorchScorer(load_backbone(tiny_model_dir)[0], threads=1)
    for got, want in zip(scores(built.scorer, batches), scores(by_hand, batches)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # an export and a scoring pass: seconds each (the fast tier stays under 90 s; make test runs it)
def test_onnxruntime_scores_as_the_hand_built_scorer(tiny_model_dir, batches):
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer, ensure_export, make_session

    built = product_backend("onnxruntime", tiny_model_dir, threads=0)  # 0: the default, as --threads 0
    by_hand = OnnxScorer(make_session(ensure_export(tiny_model_dir) / "t0_scorer.onnx"))
    for got, want in zip(scores(built.scorer, batches), scores(by_hand, batches)):
        np.testing.assert_array_equal(got, want)


def test_sections_reach_the_config(tiny_model_dir):
    with pytest.raises(Exception, match="triton"):  # a section the run config checks: refused as a run refuses it
        product_backend("onnxruntime", tiny_model_dir, triton={"concurrency": 0})
