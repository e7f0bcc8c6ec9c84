"""Scored choices per second of the three backends at concurrency 1, 4 and 16 (not a test).

    python -m rospr_bench.bench_backends [--size small] [--batch-size 8] [--prompt-length 100]

The same length-bucketed batches (built-in + BIG-bench examples, every row with a soft prompt of
``--prompt-length`` vectors) are scored by ``c`` threads calling ``Scorer.score`` at once:

Each scorer is built by ``create_backend``, as a run builds it (``rospr_bench.common.product_backend``):

- torch: ``TorchScorer`` (eager PyTorch, the reference) shared by the threads;
- onnxruntime: ``OnnxScorer`` on one ``InferenceSession`` (thread-safe ``run``), exported on demand;
- triton: ``TritonScorer`` (gRPC, ``concurrency=c`` requests in flight) to a real server started with
  ``TritonServer`` (the python-backend twin running the same ONNX graph) on this same machine, so
  client and server share its cores.

Writes ``benchmarks/results/backends.json`` (machine, workload, figures) and ``backends.png``.
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from rospr_bench.common import RESULTS, non_negative_int, positive_int, product_backend, write_result
from rospr_bench.workload import examples, model_dir

log = logging.getLogger("bench_backends")
CONCURRENCY = (1, 4, 16)


def measure(scorer, batches, concurrency: int, n_choices: int) -> dict:
    """Score every batch once with ``concurrency`` threads; throughput and per-batch latency."""
    latencies: list[float] = []

    def one(batch):
        t = time.perf_counter()
        scorer.score(batch)
        latencies.append(time.perf_counter() - t)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, batches[:concurrency]))  # warm-up: sessions, connections, allocator
        latencies.clear()
        t0 = time.perf_counter()
        list(pool.map(one, batches))
        wall = time.perf_counter() - t0
    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "choices_per_s": round(n_choices / wall, 1),
        "examples_per_s": round(sum(b.size for b in batches) / wall, 1),
        "batch_latency_ms_p50": round(1000 * float(np.percentile(latencies, 50)), 1),
        "batch_latency_ms_p95": round(1000 * float(np.percentile(latencies, 95)), 1),
    }


def plot(results: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for backend in dict.fromkeys(r["backend"] for r in results):
        rows = [r for r in results if r["backend"] == backend]
        ax.plot([r["concurrency"] for r in rows], [r["choices_per_s"] for r in rows], marker="o", label=backend)
    ax.set_xscale("log", base=2)
    ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
    ax.set_xlabel("concurrent callers")
    ax.set_ylabel("scored choices / s")
    ax.set_title("rospr backends, small T5, CPU")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--prompt-length", type=non_negative_int, default=100)
    ap.add_argument("--per-task", type=positive_int, default=16)
    ap.add_argument("--backends", default="torch,onnxruntime,triton")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("transformers", "optimum", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from rospr_export.repository import write_repository
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr_harness.serve import TritonServer
    from rospr.backbone import load_backbone
    from rospr.scoring import Convention, collate, encode_examples, plan_batches

    path = model_dir(args.size)
    _, tokenizer, identity = load_backbone(path)
    encoded = encode_examples(tokenizer, examples(args.per_task), Convention())
    prompt = (np.random.default_rng(0).normal(size=(args.prompt_length, identity.d_model)) * 0.5).astype(np.float32)
    batches = [collate([encoded[i] for i in idx], [prompt] * len(idx), identity.d_model)
               for idx in plan_batches(encoded, args.batch_size)]
    n_choices = int(sum(int(b.n_choices.sum()) for b in batches))
    log.info("%d examples, %d choices, %d batches of <= %d", len(encoded), n_choices, len(batches), args.batch_size)

    wanted = args.backends.split(",")
    results = []

    def run_all(name: str, make):
        for c in CONCURRENCY:
            scorer = make(c)
            r = {"backend": name, **measure(scorer, batches, c, n_choices)}
            getattr(scorer, "close", lambda: None)()
            log.info("%s", r)
            results.append(r)

    if "torch" in wanted:
        torch_scorer = product_backend("torch", path).scorer
        run_all("torch", lambda c: torch_scorer)
    if "onnxruntime" in wanted:
        onnx_scorer = product_backend("onnxruntime", path).scorer  # one session, shared by the threads
        run_all("onnxruntime", lambda c: onnx_scorer)
    if "triton" in wanted:
        build = write_repository(ensure_export(path, None, "float32"),
                                 RESULTS.parent.parent / "model_repo_build" / f"bench-{args.size}")
        with TritonServer(build) as server:
            run_all("triton", lambda c: product_backend(
                "triton", path, triton={"url": server.grpc_url, "concurrency": c}).scorer)

    workload = {"model": identity.as_dict(), "examples": len(encoded), "choices": n_choices,
                "batches": len(batches), "batch_size": args.batch_size, "prompt_length": args.prompt_length,
                "threads": "one caller thread per concurrency level; backends at their default intra-op threads",
                "triton": "python-backend twin (onnxruntime CPU) from nvidia-pytriton, same host, gRPC"}
    out = write_result("backends", {"workload": workload, "results": results}, args.out)
    plot(results, out.with_suffix(".png"))
    log.info("wrote %s and %s", out, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
