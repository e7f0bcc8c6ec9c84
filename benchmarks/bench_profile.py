"""Where our scorer's time goes on the peers' shapes: op-time shares of the graph, and the fixed cost of a process.

Two parts, both as shares (which hold on a busy machine better than seconds do):

- **Op-time shares** per ``bench_peers`` shape: the product's session (the optimised copy from
  ``ort-optimized/``, opened with optimisation off, as a run opens it) rebuilt with onnxruntime's
  profiler on, scoring the shape's examples planned as a run plans them (``scoring.batch_size`` and
  ``batch_tokens``). Per op type: its kernel milliseconds, share and node runs; MatMul's share is the
  GEMM part, the rest is norms, softmax, adds, transposes, gathers. The non-GEMM nodes that cost most
  (layer numbers folded, so a per-layer op is one line), and how many graph nodes gather from a
  ``relative_attention_bias`` table (one per stack: the position bias is computed in the first layer
  and reused, as T5 does).
- **Fixed cost** of the ``bench_peers`` "ours" process (``--side ours``, everything but scoring):
  phases timed inside fresh processes (``--runs``, medians): imports, building the backend
  (``ensure_export``: the export's stat-keyed check), the tokenizer, opening the session (the two
  graph hashes and onnxruntime's open), encoding. Then the open's own split from onnxruntime's
  profiler (``model_loading_uri``: reading the protobuf; ``session_initialization``: kernels,
  weight pre-packing), one full sha256 of the export graph and of the optimised copy (the open runs
  both in threads beside onnxruntime's), and the imports over 20 ms of cumulative time
  (``python -X importtime``, top level).

    python -m rospr_bench.bench_profile [--size small] [--shapes heldout short] [--n 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rospr_bench.common import RESULTS, non_negative_int, positive_int, write_result
from rospr_bench.workload import model_dir

log = logging.getLogger("bench_profile")
PHASES = ("imports", "backend", "tokenizer", "session_open", "encode")


def op_shares(events: list[dict], top: int = 12) -> dict:
    """Aggregate onnxruntime profiler ``events``: kernel time by op type (ms, share of all kernel
    time, node runs), the MatMul share, the ``top`` non-MatMul nodes by time (``block.N`` folded to
    ``block.#``), and the session's ``model_run`` total and count."""
    by_op: collections.Counter = collections.Counter()
    runs_of: collections.Counter = collections.Counter()
    by_node: collections.Counter = collections.Counter()
    run_us = n_runs = 0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e["args"]["op_name"]
            by_op[op] += e["dur"]
            runs_of[op] += 1
            if op != "MatMul":
                by_node[re.sub(r"block\.\d+", "block.#", e["name"][: -len("_kernel_time")])] += e["dur"]
        elif e.get("cat") == "Session" and e.get("name") == "model_run":
            run_us += e["dur"]
            n_runs += 1
    total = sum(by_op.values())
    if not total:
        raise ValueError("no kernel events in the profile (was profiling on, and did the session run?)")
    return {
        "model_run_ms": run_us / 1e3, "runs": n_runs, "kernel_ms": total / 1e3,
        "matmul_share": by_op["MatMul"] / total,
        "by_op": {op: {"ms": us / 1e3, "share": us / total, "node_runs": runs_of[op]} for op, us in by_op.most_common()},
        "top_non_matmul_nodes": [{"node": n, "ms": us / 1e3, "share": us / total} for n, us in by_node.most_common(top)],
    }


def optimized_copy(size: str, threads: int) -> Path:
    """The optimised scorer graph a run of ``size`` opens (made now by opening the product's session
    when it is not there yet)."""
    from rospr_bench.common import product_backend
    from rospr_export.manifest import find_manifest
    from rospr_harness.backends.onnxruntime_backend import (OPTIMIZED_FILE, default_providers, ensure_export,
                                                            optimized_fields, optimized_name, optimized_store)

    model = model_dir(size)
    product_backend("onnxruntime", model, threads=threads).scorer.prompt_dim  # opens (and saves) the copy
    folder = ensure_export(model)
    graph = find_manifest(folder)["graphs"]["t0_scorer"]["file"]
    fields = optimized_fields(graph, find_manifest(folder)["files"][graph], "all", default_providers())
    return optimized_store(folder).path(optimized_name(fields)) / OPTIMIZED_FILE


def profiled_session(path: Path, threads: int, prefix: str):
    """``path`` opened as the product opens its optimised copy (``make_session``'s options,
    optimisation off), with onnxruntime's profiler writing to ``prefix``*."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = prefix
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def profile_shape(shape: str, n: int, size: str, threads: int, opt: Path, tmp: Path) -> dict:
    """Op-time shares of scoring ``n`` examples of ``shape`` (planned as a run plans them)."""
    from transformers import AutoTokenizer

    from rospr.data import Example
    from rospr.scoring import Convention, encode_examples, score_encoded
    from rospr.tokenizer import load_tokenizer
    from rospr_bench.bench_peers import shape_examples
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer
    from rospr_harness.config import ScoringConfig

    model = model_dir(size)
    rows = shape_examples(AutoTokenizer.from_pretrained(model), shape, n)
    exs = [Example(r["task"], "bigbench", i, r["input"].rstrip(), tuple(r["choices"])) for i, r in enumerate(rows)]
    enc = encode_examples(load_tokenizer(model), exs, Convention(input_eos=True, choice_eos=False))
    session = profiled_session(opt, threads, str(tmp / f"profile-{shape}"))
    defaults = ScoringConfig()
    t = time.perf_counter()
    score_encoded(OnnxScorer(session), enc, None, defaults.batch_size, max_tokens=defaults.batch_tokens)
    seconds = time.perf_counter() - t
    events = json.loads(Path(session.end_profiling()).read_text())
    bias = sorted({e["name"][: -len("_kernel_time")] for e in events if e.get("cat") == "Node"
                   and "relative_attention_bias" in e["name"]})
    return {"shape": shape, "n_examples": len(rows), "n_choices": sum(len(r["choices"]) for r in rows),
            "score_s": seconds, **op_shares(events), "position_bias_gathers": bias, "load_at_end": os.getloadavg()}


# --- fixed cost -----------------------------------------------------------------------------------

def phases_child(size: str, threads: int, examples: Path) -> dict:
    """In a fresh process (``--phases``): the fixed-cost phases of ``bench_peers``' "ours" side, timed."""
    t0 = time.perf_counter()
    import numpy  # noqa: F401  (the side's own imports, as bench_peers' side_ours makes them)

    from rospr.scoring import Convention, encode_examples
    from rospr.tokenizer import load_tokenizer
    from rospr_bench.bench_peers import read_examples
    from rospr_bench.common import product_backend
    from rospr_harness.config import ScoringConfig  # noqa: F401
    t1 = time.perf_counter()
    model = model_dir(size)
    scorer = product_backend("onnxruntime", model, threads=threads).scorer
    t2 = time.perf_counter()
    tok = load_tokenizer(model)
    t3 = time.perf_counter()
    scorer.prompt_dim  # opens the session
    t4 = time.perf_counter()
    encode_examples(tok, read_examples(examples, "plain"), Convention(input_eos=True, choice_eos=False))
    t5 = time.perf_counter()
    return dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)))


def top_imports(text: str, over_ms: float = 20.0) -> list[dict]:
    """Top-level imports of a ``python -X importtime`` log with over ``over_ms`` cumulative ms."""
    out = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)  # top level: one space before the name
        if m and int(m.group(1)) >= over_ms * 1e3:
            out.append({"module": m.group(2).strip(), "cumulative_ms": int(m.group(1)) / 1e3})
    return sorted(out, key=lambda r: -r["cumulative_ms"])


def fixed_cost(size: str, threads: int, runs: int, opt: Path, tmp: Path) -> dict:
    from rospr.artifacts import sha256_file
    from rospr_export.manifest import find_manifest
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr_bench.bench_peers import shape_examples
    from transformers import AutoTokenizer

    model = model_dir(size)
    examples = tmp / "short.jsonl"
    rows = shape_examples(AutoTokenizer.from_pretrained(model), "short", 100)
    examples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "rospr_bench.bench_profile", "--phases", str(examples), "--size", size,
           "--threads", str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    walls, phases = [], []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t)
        phases.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    imports = subprocess.run([sys.executable, "-X", "importtime", *cmd[1:]], env=env, capture_output=True, text=True,
                             check=True)
    folder = ensure_export(model)
    graph = folder / find_manifest(folder)["graphs"]["t0_scorer"]["file"]
    hashes = {}
    for name, path in (("export_graph", graph), ("optimized_copy", opt)):
        t = time.perf_counter()
        sha256_file(path)
        hashes[name] = {"bytes": path.stat().st_size, "sha256_s": time.perf_counter() - t}
    session = profiled_session(opt, threads, str(tmp / "open"))
    open_events = json.loads(Path(session.end_profiling()).read_text())
    split = {e["name"]: e["dur"] / 1e6 for e in open_events if e.get("name") in ("model_loading_uri", "session_initialization")}
    return {"process": "python -m rospr_bench.bench_profile --phases (bench_peers' ours side without the scoring)",
            "runs": runs, "whole_process_s": walls, "whole_process_median_s": statistics.median(walls),
            "phases_median_s": {p: statistics.median(r[p] for r in phases) for p in PHASES},
            "phases_runs_s": phases, "session_open_split_s": split, "full_sha256": hashes,
            "top_level_imports_over_20ms": top_imports(imports.stderr), "load_at_end": os.getloadavg()}


def main(argv: list[str] | None = None) -> dict | None:
    from rospr_bench.bench_peers import SHAPES

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--shapes", nargs="+", default=["heldout", "short"], choices=list(SHAPES))
    ap.add_argument("--n", type=positive_int, default=100, help="examples per shape")
    ap.add_argument("--runs", type=positive_int, default=3, help="fresh processes timed for the fixed cost")
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--phases", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads = args.threads or os.cpu_count() or 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.phases:
        print(json.dumps(phases_child(args.size, args.threads, Path(args.phases))))
        return None
    opt = optimized_copy(args.size, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        shapes = []
        for s in args.shapes:
            shapes.append(profile_shape(s, args.n, args.size, args.threads, opt, Path(tmp)))
            log.info("%s: MatMul %.1f%% of kernel time", s, 100 * shapes[-1]["matmul_share"])
        fixed = fixed_cost(args.size, args.threads, args.runs, opt, Path(tmp))
    result = {"model": args.size, "threads": args.threads, "shapes": shapes, "fixed_cost": fixed}
    write_result("profile", result, args.out)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
