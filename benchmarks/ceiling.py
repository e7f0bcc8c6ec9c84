"""The ceiling an MFU is measured against: onnxruntime's own MatMul on the model's GEMM shapes.

For each matmul the scorer runs on a batch (``rospr.flops.score_gemms``: the encoder's projections
and feed-forward on the padded [B, S + P] grid, attention per head, the decoder and LM head on the
real choice tokens), a one-kernel ONNX graph of that shape (``onnx.helper``) runs in onnxruntime with
the session options of the product (``make_session``: the same threads, graph optimisation level,
sequential execution); its best time over a few runs gives the rate that shape can reach. The
ceiling of a workload is the time its GEMMs would take at those rates:

    ceiling seconds = sum over its matmuls of FLOPs / rate(shape),  ceiling rate = FLOPs / that

and MFU = the workload's useful FLOPs per second (``rospr.flops.score_row``: no padding) / the
ceiling rate, i.e. ceiling seconds over measured seconds when nothing is padded. Everything else the
graph does (layer norms, softmax, gathers, the work on padding) is inside the measured time, so an
MFU can only exceed 100% by error; ``check_mfu`` refuses it.

A weight matmul has its weight as an initializer (as in the exported graph, where onnxruntime may
pre-pack it); an attention matmul has both operands as inputs. Small shapes run as several copies
in one graph (distinct weights or inputs, so no optimiser merges them) so that the ``run`` call's
fixed cost does not count as MatMul time. Dimensions above 16 are rounded to the nearest point of a
geometric grid (4 points per octave) before measuring, so a workload of many lengths is measured on
a few dozen shapes; the FLOPs charged are the exact ones.
"""

from __future__ import annotations

import math
import time
from typing import Iterable, Sequence

import numpy as np

from rospr.errors import StateError
from rospr.flops import Gemm

STEPS_PER_OCTAVE = 4
MIN_GRAPH_FLOPS = 4e7  # copies of a small matmul per graph: at least this many FLOPs per run call
MAX_COPIES = 64


def rounded(x: int) -> int:
    """``x`` itself up to 16, else the nearest point of the grid 2^(i/4)."""
    if x <= 16:
        return x
    return max(17, round(2 ** (round(math.log2(x) * STEPS_PER_OCTAVE) / STEPS_PER_OCTAVE)))


def matmul_graph(batch: int, m: int, k: int, n: int, copies: int = 1, seed: int = 0) -> bytes:
    """A serialised ONNX model of ``copies`` MatMuls: [m, k] x [k, n] with the right operand an
    initializer (a weight) when ``batch`` is 1, else [batch, m, k] x [batch, k, n] with both operands
    inputs (attention). Inputs are named a (shared by the copies of a weight matmul) or a{i}, b{i}."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inputs, inits, outputs = [], [], [], []
    f32 = TensorProto.FLOAT
    if batch == 1:
        inputs.append(helper.make_tensor_value_info("a", f32, [m, k]))
    for i in range(copies):
        if batch == 1:
            inits.append(numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32), f"w{i}"))
            operands = ["a", f"w{i}"]
            out_shape = [m, n]
        else:
            inputs += [helper.make_tensor_value_info(f"a{i}", f32, [batch, m, k]),
                       helper.make_tensor_value_info(f"b{i}", f32, [batch, k, n])]
            operands = [f"a{i}", f"b{i}"]
            out_shape = [batch, m, n]
        nodes.append(helper.make_node("MatMul", operands, [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", f32, out_shape))
    graph = helper.make_graph(nodes, "matmul", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def feeds_for(batch: int, m: int, k: int, n: int, copies: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if batch == 1:
        return {"a": rng.standard_normal((m, k), dtype=np.float32)}
    out = {}
    for i in range(copies):
        out[f"a{i}"] = rng.standard_normal((batch, m, k), dtype=np.float32)
        out[f"b{i}"] = rng.standard_normal((batch, k, n), dtype=np.float32)
    return out


def measure_matmul(batch: int, m: int, k: int, n: int, threads: int, repeats: int = 5) -> float:
    """Best FLOP/s of onnxruntime's MatMul on this shape over ``repeats`` timed runs (after one
    untimed), with the product's session options and ``threads`` intra-op threads."""
    from rospr_harness.backends.onnxruntime_backend import make_session

    one = 2.0 * batch * m * k * n
    copies = int(min(MAX_COPIES, max(1, math.ceil(MIN_GRAPH_FLOPS / one))))
    session = make_session(matmul_graph(batch, m, k, n, copies), threads=threads)
    feeds = feeds_for(batch, m, k, n, copies)
    session.run(None, feeds)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - t)
    return one * copies / best


class Ceiling:
    """onnxruntime MatMul rates by (rounded) shape, measured once each and kept for the run."""

    def __init__(self, threads: int, repeats: int = 5) -> None:
        self.threads, self.repeats = threads, repeats
        self.rates: dict[tuple[int, int, int, int], float] = {}

    def rate(self, g: Gemm) -> float:
        key = (rounded(g.batch), rounded(g.m), rounded(g.k), rounded(g.n))
        if key not in self.rates:
            self.rates[key] = measure_matmul(*key, threads=self.threads, repeats=self.repeats)
        return self.rates[key]

    def seconds(self, gemms: Iterable[Gemm]) -> tuple[float, float]:
        """The executed FLOPs of ``gemms`` and the seconds they take at their shapes' rates."""
        flops = seconds = 0.0
        for g in gemms:
            if g.flops > 0:
                flops += g.flops
                seconds += g.flops / self.rate(g)
        return flops, seconds

    def summary(self) -> dict:
        """The measured shapes and rates (GFLOP/s), for the result file."""
        return {"threads": self.threads, "repeats": self.repeats,
                "gflops_by_shape": {"x".join(map(str, k)): round(v / 1e9, 2) for k, v in sorted(self.rates.items())}}


def workload_ceiling(ceiling: Ceiling, batches: Sequence[Sequence[Gemm]]) -> dict:
    """The ceiling of a workload of batches (each the ``score_gemms`` of one batch): executed FLOPs,
    seconds at onnxruntime's MatMul rates, and the rate (FLOP/s) that makes."""
    flops = seconds = 0.0
    for gemms in batches:
        f, s = ceiling.seconds(gemms)
        flops, seconds = flops + f, seconds + s
    return {"executed_flops": flops, "gemm_seconds": seconds, "flops_per_s": flops / seconds if seconds else 0.0}


def check_mfu(rows: Sequence[dict], limit: float = 1.0) -> None:
    """Refuse (``StateError``) a result with an MFU above ``limit``: the useful FLOPs cannot run
    faster than onnxruntime's own MatMul on the same shapes, so such a figure is a measurement error
    (a ceiling measured while the machine was busy, or a wrong FLOP count), not a result."""
    over = [r for r in rows if r.get("mfu") is not None and r["mfu"] > limit]
    if over:
        worst = max(over, key=lambda r: r["mfu"])
        where = ", ".join(f"{k}={worst[k]}" for k in ("model", "backend", "batch_size", "batch_tokens") if k in worst)
        raise StateError(f"MFU {100 * worst['mfu']:.1f}% ({where}) is above 100% of onnxruntime's own MatMul rate "
                         f"on the same shapes ({len(over)} row(s) over): the ceiling or the FLOP count is wrong, "
                         "or the machine's load changed between the two; the result is not written")
