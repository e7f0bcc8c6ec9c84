"""Our exported scorer graph against onnxruntime's transformer optimizer for T5, A/B in one process.

The T5 transformer optimizer of onnxruntime (``onnxruntime.transformers``, ``fused_graph``) rewrites
the export's residual adds and RMS norms into ``SkipSimplifiedLayerNormalization`` (onnxruntime's own
optimisation already fuses ``SimplifiedLayerNormalization`` and ``FastGelu``; the attention fusion
for T5 needs ``RelativePositionBias``, a CUDA-only operator). Both graphs are opened as a run opens
the export (``graph_optimization_level`` ALL, ``--threads`` intra-op threads), so the comparison is what the
transformer optimizer adds on top of onnxruntime's own fusions. Reported:

- each graph's operator counts after onnxruntime's optimisation (what runs: GEMMs, norms, softmax,
  gathers, reshapes);
- parity: the fused graph against PyTorch at the export's tolerance (``rospr_export.validate``'s
  ``validate_scorer``, the check every export passes), and against the export on the workload;
- time: the workload (a ``bench_peers`` shape, planned into batches as a run plans them), the two
  sessions alternating batch by batch over ``--repeats`` passes; per graph the median pass, and the
  ratio per pass (export over fused), with ``os.getloadavg()``.

    python -m rospr_bench.bench_fusions [--size small] [--shape heldout] [--n 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rospr_bench.common import RESULTS, non_negative_int, positive_int, write_result
from rospr_bench.workload import model_dir

log = logging.getLogger(__name__)


def fused_graph(src: Path, out: Path) -> dict:
    """Write ``src`` through the T5 transformer optimizer (``T5OnnxModel.optimize``) to ``out``; its
    counts of what it fuses. Its pre-processing is left out, as is attention fusion: the first always
    fuses the position bias into ``RelativePositionBias``, which onnxruntime's CPU provider does not
    implement (the session refuses the graph: NOT_IMPLEMENTED), and the second needs that operator."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.onnx_model_t5 import T5OnnxModel

    class WithoutPositionBiasFusion(T5OnnxModel):
        def preprocess(self) -> None:
            self.adjust_reshape_and_expand()  # T5OnnxModel.preprocess without the RelativePositionBias fusion

    options = FusionOptions("t5")
    options.enable_attention = False
    model = WithoutPositionBiasFusion(onnx.load(str(src)))
    model.optimize(options)
    model.save_model_to_file(str(out))
    return {k: v for k, v in collections.Counter(n.op_type for n in model.nodes()).items()
            if k in ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "FastGelu")}


def session(path: Path, threads: int, optimized_to: Path | None = None):
    """An onnxruntime CPU session as a run opens the export (optimisation ALL)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    if optimized_to is not None:
        opts.optimized_model_filepath = str(optimized_to)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def op_counts(path: Path) -> dict[str, int]:
    """Operators of an ONNX graph, most frequent first."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(collections.Counter(n.op_type for n in graph.node).most_common())


def workload_feeds(size: str, shape: str, n: int) -> list[dict]:
    """The feeds of ``shape``'s ``n`` examples, batched as a run batches them (scoring defaults)."""
    from rospr.scoring import Convention, collate, encode_examples, plan_batches
    from rospr.tokenizer import load_tokenizer
    from rospr_bench.bench_peers import read_examples, shape_examples
    from rospr_harness.config import ScoringConfig
    from transformers import AutoTokenizer

    model = model_dir(size)
    rows = shape_examples(AutoTokenizer.from_pretrained(model), shape, n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rows.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        exs = read_examples(path, "plain")
    enc = encode_examples(load_tokenizer(model), exs, Convention(input_eos=True, choice_eos=False))
    d = ScoringConfig()
    dim = int(json.loads((model / "config.json").read_text())["d_model"])
    return [collate([enc[i] for i in idx], [None] * len(idx), dim).feeds()
            for idx in plan_batches(enc, d.batch_size, max_tokens=d.batch_tokens)]


def timed_passes(sessions: dict, feeds: list[dict], repeats: int) -> dict[str, list[float]]:
    """Seconds per pass over ``feeds`` of each session, alternating batch by batch."""
    spent = {name: [0.0] * repeats for name in sessions}
    for r in range(repeats):
        for f in feeds:
            for name, sess in sessions.items():
                t = time.perf_counter()
                sess.run(["scores"], f)
                spent[name][r] += time.perf_counter() - t
    return spent


def run(args) -> dict:
    from transformers import AutoModelForSeq2SeqLM

    from rospr_export.validate import SCORER_TOLERANCE, validate_scorer
    from rospr_harness.backends.onnxruntime_backend import ensure_export

    model = model_dir(args.size)
    export = Path(ensure_export(model)) / "t0_scorer.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fused = Path(tmp) / "t0_scorer_t5_fused.onnx"
        fused_ops = fused_graph(export, fused)
        parity = validate_scorer(AutoModelForSeq2SeqLM.from_pretrained(model).eval(), fused, SCORER_TOLERANCE)
        sessions = {"export": session(export, args.threads, Path(tmp) / "a.onnx"),
                    "t5_fused": session(fused, args.threads, Path(tmp) / "b.onnx")}
        ops = {"export": op_counts(Path(tmp) / "a.onnx"), "t5_fused": op_counts(Path(tmp) / "b.onnx")}
        feeds = workload_feeds(args.size, args.shape, args.n)
        diff = max(float(np.max(np.abs(sessions["export"].run(["scores"], f)[0]
                                      - sessions["t5_fused"].run(["scores"], f)[0]))) for f in feeds)
        spent = timed_passes(sessions, feeds, args.repeats)
    ratios = [a / b for a, b in zip(spent["export"], spent["t5_fused"])]
    return {"model": args.size, "shape": args.shape, "n": args.n, "threads": args.threads, "batches": len(feeds),
            "repeats": args.repeats, "machine_load": os.getloadavg(), "fused_operators": fused_ops,
            "operators_after_ort": ops, "parity_vs_pytorch": {"max_abs": parity.max_abs_diff,
                                                              "tolerance": SCORER_TOLERANCE, "ok": parity.ok},
            "max_abs_diff_vs_export_on_workload": diff,
            "pass_s": {k: {"median": statistics.median(v), "runs": v} for k, v in spent.items()},
            "export_over_fused": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}


def main(argv: list[str] | None = None) -> dict:
    from rospr_bench.bench_peers import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--shape", default="heldout", choices=list(SHAPES))
    ap.add_argument("--n", type=positive_int, default=100, help="examples of the shape")
    ap.add_argument("--repeats", type=positive_int, default=5, help="passes over the workload per graph")
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    args.threads = args.threads or os.cpu_count() or 1
    result = run(args)
    write_result("fusions", result, args.out)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
