"""`bench_profile`: op-time shares are read from onnxruntime's profile as it writes them (kernel events
by op type, per-layer nodes folded), a profile without kernel events is refused, and the top-level
imports come from `-X importtime`'s own lines."""

from __future__ import annotations

import pytest

from rospr_bench.bench_profile import op_shares, top_imports


def kernel(name: str, op: str, us: int) -> dict:
    return {"cat": "Node", "name": f"{name}_kernel_time", "dur": us, "args": {"op_name": op}}


def test_op_shares_split_matmul_from_the_rest_and_fold_layers():
    events = [
        {"cat": "Session", "name": "model_run", "dur": 1100},
        {"cat": "Node", "name": "/enc/block.0/q/MatMul_fence_before", "dur": 0, "args": {"op_name": "MatMul"}},
        kernel("/enc/block.0/q/MatMul", "MatMul", 600),
        kernel("/enc/block.1/q/MatMul", "MatMul", 200),
        kernel("/enc/block.0/SelfAttention/Softmax", "Softmax", 100),
        kernel("/enc/block.1/SelfAttention/Softmax", "Softmax", 50),
        kernel("/LogSoftmax", "LogSoftmax", 50),
    ]
    got = op_shares(events)
    assert got["kernel_ms"] == 1.0 and got["model_run_ms"] == 1.1 and got["runs"] == 1
    assert got["matmul_share"] == pytest.approx(0.8)
    assert got["by_op"]["Softmax"] == {"ms": 0.15, "share": pytest.approx(0.15), "node_runs": 2}
    assert list(got["by_op"]) == ["MatMul", "Softmax", "LogSoftmax"]  # by time
    assert got["top_non_matmul_nodes"][0] == {"node": "/enc/block.#/SelfAttention/Softmax", "ms": 0.15,
                                              "share": pytest.approx(0.15)}
    assert all("MatMul" not in n["node"] for n in got["top_non_matmul_nodes"])


def test_a_profile_without_kernels_is_refused():
    with pytest.raises(ValueError, match="no kernel events"):
        op_shares([{"cat": "Session", "name": "model_run", "dur": 10}])


def test_top_imports_keeps_top_level_lines_over_the_threshold():
    log = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:      1000 |      30000 |   yaml",  # nested: not top level
        "import time:      2000 |      25000 | numpy",
        "import time:       500 |       5000 | json",
        "import time:      9000 |     250000 | rospr_harness.config",
    ])
    assert top_imports(log) == [{"module": "rospr_harness.config", "cumulative_ms": 250.0},
                                {"module": "numpy", "cumulative_ms": 25.0}]
