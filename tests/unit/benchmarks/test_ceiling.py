"""``rospr_bench.ceiling``: the one-MatMul graphs compute the product they stand for, a workload is
charged its exact FLOPs at its shapes' rates, and an MFU above 100% is refused."""

from __future__ import annotations

import numpy as np
import pytest

from rospr.errors import StateError
from rospr.flops import Gemm
from rospr_bench.ceiling import Ceiling, check_mfu, feeds_for, matmul_graph, rounded, workload_ceiling


def _session(graph: bytes):
    from rospr_harness.backends.onnxruntime_backend import make_session

    return make_session(graph, threads=1)


def test_weight_matmul_graph_is_a_times_its_weights():
    import onnx
    from onnx import numpy_helper

    graph = matmul_graph(1, 5, 3, 4, copies=2)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(graph).graph.initializer}
    feeds = feeds_for(1, 5, 3, 4, copies=2)
    y0, y1 = _session(graph).run(None, feeds)
    np.testing.assert_allclose(y0, feeds["a"] @ weights["w0"], rtol=1e-5)
    np.testing.assert_allclose(y1, feeds["a"] @ weights["w1"], rtol=1e-5)
    assert not np.allclose(weights["w0"], weights["w1"])  # distinct copies: no optimiser may merge them


def test_batched_matmul_graph_multiplies_per_batch():
    feeds = feeds_for(3, 4, 2, 5, copies=2)
    ys = _session(matmul_graph(3, 4, 2, 5, copies=2)).run(None, feeds)
    for i, y in enumerate(ys):
        assert y.shape == (3, 4, 5)
        np.testing.assert_allclose(y, np.matmul(feeds[f"a{i}"], feeds[f"b{i}"]), rtol=1e-5)


def test_rounding_keeps_small_sizes_and_stays_within_a_tenth():
    assert [rounded(x) for x in (1, 7, 16)] == [1, 7, 16]
    for x in (17, 100, 333, 4097, 32128):
        assert abs(rounded(x) - x) / x < 0.1
    assert rounded(300) == rounded(310)  # nearby lengths share one measured shape


def test_a_workload_is_charged_its_exact_flops_at_its_shapes_rates():
    c = Ceiling(threads=1)
    g1, g2 = Gemm("x", 1, 100, 64, 64, count=3), Gemm("y", 8, 20, 64, 20)
    c.rates = {(1, rounded(100), rounded(64), rounded(64)): 2e9, (8, rounded(20), rounded(64), rounded(20)): 1e9}
    out = workload_ceiling(c, [[g1, g2], [g1]])
    flops = 2 * g1.flops + g2.flops
    assert out["executed_flops"] == flops == 2 * (2 * 3 * 100 * 64 * 64) + 2 * 8 * 20 * 64 * 20
    assert out["gemm_seconds"] == pytest.approx(2 * g1.flops / 2e9 + g2.flops / 1e9)
    assert out["flops_per_s"] == pytest.approx(flops / out["gemm_seconds"])


def test_an_mfu_above_100_percent_is_refused():
    check_mfu([{"model": "small", "backend": "onnxruntime", "batch_size": 4, "mfu": 0.99}])
    with pytest.raises(StateError, match=r"MFU 104.6% \(model=small, backend=onnxruntime, batch_size=4\)"):
        check_mfu([{"model": "small", "backend": "onnxruntime", "batch_size": 4, "mfu": 1.046},
                   {"model": "small", "backend": "torch", "batch_size": 8, "mfu": 0.5}])
