"""FAISS exact vs IVF vs HNSW on a library-shaped key set: build time, query latency, recall, memory.

Keys are shaped like a Source Prompt Library: ``n_keys / 100`` prompts with 100 instances each,
instances scattered around their prompt's centre (unit-normalised, inner product = cosine), so
approximate indexes see the cluster structure a real library has. Queries come from the same
distribution. Recall is recall@N of each index's top-N against exact search.

    python -m rospr_bench.bench_retrieval [--sizes 10000 100000 1000000] [--dim 512]
"""

from __future__ import annotations

import argparse
import logging
import math

import numpy as np

from rospr_bench.common import RESULTS, Timer, non_negative_int, positive_int, write_result

log = logging.getLogger(__name__)


def library_keys(n: int, dim: int, rng: np.random.Generator, per_prompt: int = 100, spread: float = 0.35):
    n_prompts = max(1, n // per_prompt)
    centres = rng.standard_normal((n_prompts, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owner = np.repeat(np.arange(n_prompts), per_prompt)[:n]
    x = centres[owner] + spread * rng.standard_normal((n, dim), dtype=np.float32) / math.sqrt(dim) * 4
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), centres


def build(kind: str, keys: np.ndarray, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    n, d = keys.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        nlist = int(4 * math.sqrt(n))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        train = keys[np.random.default_rng(1).choice(n, size=min(n, 64 * nlist), replace=False)]
        index.train(train)
        index.nprobe = max(1, nlist // 64)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
    else:
        raise ValueError(kind)
    index.add(keys)
    return index


def memory_mb(index) -> float:
    import faiss

    return float(faiss.serialize_index(index).nbytes) / 2**20


def run(sizes: list[int], dim: int, n_queries: int, top_n: int, threads: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        keys, centres = library_keys(n, dim, rng)
        owner = rng.integers(0, len(centres), n_queries)
        queries = centres[owner] + 0.35 * rng.standard_normal((n_queries, dim), dtype=np.float32) / math.sqrt(dim) * 4
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        truth = None
        for kind in ("exact", "ivf", "hnsw"):
            with Timer() as tb:
                index = build(kind, keys, threads)
            index.search(queries[:8], top_n)  # warm-up
            with Timer() as tq:
                _, ids = index.search(queries, top_n)
            single = []
            for q in queries[:64]:  # one query at a time: the latency a single request sees
                with Timer() as t1:
                    index.search(q[None], top_n)
                single.append(t1.s)
            if kind == "exact":
                truth = ids
            recall = float(np.mean([len(set(a) & set(b)) / top_n for a, b in zip(ids, truth)]))
            row = {"n_keys": n, "index": kind, "build_s": tb.s, "batch_query_ms_per_query": 1e3 * tq.s / n_queries,
                   "single_query_p50_ms": 1e3 * float(np.median(single)),
                   "single_query_p99_ms": 1e3 * float(np.quantile(single, 0.99)),
                   f"recall_at_{top_n}": recall, "memory_mb": memory_mb(index)}
            log.info("%s", row)
            rows.append(row)
            del index
    return {"dim": dim, "n_queries": n_queries, "top_n": top_n, "threads": threads, "rows": rows}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    rows = result["rows"]
    rk = [k for k in rows[0] if k.startswith("recall_at_")][0]
    for kind in ("exact", "ivf", "hnsw"):
        sub = [r for r in rows if r["index"] == kind]
        xs = [r["n_keys"] for r in sub]
        axes[0].plot(xs, [r["build_s"] for r in sub], "o-", label=kind)
        axes[1].plot(xs, [r["single_query_p50_ms"] for r in sub], "o-", label=kind)
        axes[2].plot(xs, [r[rk] for r in sub], "o-", label=kind)
    for ax, title in zip(axes, ("build time (s)", "single-query p50 latency (ms)", rk.replace("_", " "))):
        ax.set_xscale("log")
        ax.set_xlabel("keys")
        ax.set_title(title)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    fig.suptitle(f"FAISS on a library-shaped key set (d={result['dim']}, {result['threads']} threads)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=positive_int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--dim", type=positive_int, default=512, help="retriever width (T0-small: 512)")
    ap.add_argument("--queries", type=positive_int, default=1024)
    ap.add_argument("--top-n", type=positive_int, default=10)
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    import os

    threads = args.threads or os.cpu_count() or 1
    result = run(args.sizes, args.dim, args.queries, args.top_n, threads)
    path = write_result("retrieval", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
