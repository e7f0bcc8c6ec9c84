"""Scoring throughput of torch, onnxruntime and Triton by batch size, and model FLOP utilisation.

For each model size and backend, the same workload (built-in + BIG-bench examples: 2 to 7 choices
each, every row with a soft prompt of ``--prompt-length`` vectors, as RoSPr feeds T0) is cut into
length-bucketed batches of B = 1 .. 64 examples and scored one batch at a time.

Model FLOP utilisation (MFU) = the workload's *useful* FLOPs per second (counted analytically from
the real token counts: no padding, the encoder once per input, the cross-attention keys/values once
per input, every decoder token of every choice, the LM head) divided by the GEMM FLOPs per second
this machine reaches in this same process (float32 matmul, all cores; best of several shapes).

    python -m rospr_bench.bench_throughput [--sizes tiny small] [--backends torch onnxruntime triton]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from rospr_bench.common import RESULTS, non_negative_int, positive_int, product_backend, write_result
from rospr_bench.workload import examples, model_dir

log = logging.getLogger("bench_throughput")
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def gemm_peak(threads: int, repeats: int = 5) -> dict:
    """Best float32 GEMM rate (FLOP/s) over a few square and model-like shapes."""
    import torch

    torch.set_num_threads(threads)
    best, shapes = 0.0, {}
    for m, k, n in ((2048, 2048, 2048), (1024, 1024, 1024), (4096, 512, 2048), (2048, 512, 32128)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.matmul(a, b)
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            torch.matmul(a, b)
            rates.append(2.0 * m * k * n / (time.perf_counter() - t))
        shapes[f"{m}x{k}x{n}"] = max(rates)
        best = max(best, max(rates))
    return {"flops_per_s": best, "by_shape": shapes, "threads": threads}


def example_flops(cfg, s: int, p: int, choice_lens: list[int]) -> float:
    """Useful forward FLOPs of scoring one example (input S tokens + P prompt vectors) and its choices."""
    d, dff, L, vocab = cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.vocab_size
    inner = cfg.num_heads * cfg.d_kv
    ld = cfg.num_decoder_layers
    n = s + p
    ff = 2 * (3 if cfg.is_gated_act else 2) * d * dff  # per token
    enc = n * L * (2 * 4 * d * inner + ff) + L * 2 * 2 * n * n * inner
    cross_kv = ld * 2 * 2 * d * inner * n  # K and V of the encoder output, once per input
    dec = 0.0
    for t in choice_lens:
        per_tok = ld * (2 * 4 * d * inner + 2 * 2 * d * inner + ff) + 2 * d * vocab
        dec += t * per_tok + ld * (2 * 2 * t * t * inner + 2 * 2 * t * n * inner)
    return float(enc + cross_kv + dec)


def measure(scorer, batches) -> float:
    scorer.score(batches[0])  # warm-up
    t = time.perf_counter()
    for b in batches:
        scorer.score(b)
    return time.perf_counter() - t


def run(sizes, backends, batch_sizes, per_task: int, prompt_length: int, threads: int) -> dict:
    from transformers import AutoConfig

    from rospr_export.repository import write_repository
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr.backbone import load_backbone
    from rospr.scoring import Convention, collate, encode_examples, plan_batches

    peak = gemm_peak(threads)
    log.info("GEMM peak %.1f GFLOP/s", peak["flops_per_s"] / 1e9)
    rows = []
    for size in sizes:
        path = model_dir(size)
        cfg = AutoConfig.from_pretrained(path)
        _, tok, identity = load_backbone(path)
        encoded = encode_examples(tok, examples(per_task), Convention())
        prompt = (np.random.default_rng(0).normal(size=(prompt_length, cfg.d_model)) * 0.5).astype(np.float32)
        flops = sum(example_flops(cfg, len(e.input_ids), prompt_length, [len(c) for c in e.choice_ids]) for e in encoded)
        n_choices = sum(len(e.choice_ids) for e in encoded)
        scorers = {}
        if "torch" in backends:
            scorers["torch"] = lambda: product_backend("torch", path, threads=threads).scorer
        export_dir = ensure_export(path) if "triton" in backends else None  # what the server serves
        if "onnxruntime" in backends:
            scorers["onnxruntime"] = lambda: product_backend("onnxruntime", path, threads=threads).scorer
        server = None
        if "triton" in backends:
            from rospr_harness.serve import TritonServer

            build = write_repository(export_dir, RESULTS.parent.parent / "model_repo_build" / f"bench-{size}")
            server = TritonServer(build).start()
            scorers["triton"] = lambda: product_backend(
                "triton", path, triton={"url": server.grpc_url, "concurrency": 1}).scorer
        try:
            for name, make in scorers.items():
                scorer = make()
                for bs in batch_sizes:
                    batches = [collate([encoded[i] for i in idx], [prompt] * len(idx), cfg.d_model)
                               for idx in plan_batches(encoded, bs)]
                    wall = measure(scorer, batches)
                    row = {"model": size, "backend": name, "batch_size": bs, "wall_s": wall,
                           "examples_per_s": len(encoded) / wall, "choices_per_s": n_choices / wall,
                           "model_flops_per_s": flops / wall, "mfu": flops / wall / peak["flops_per_s"]}
                    log.info("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
                    rows.append(row)
                getattr(scorer, "close", lambda: None)()
        finally:
            if server is not None:
                server.stop()
    return {"gemm_peak": peak, "threads": threads, "prompt_length": prompt_length, "per_task": per_task,
            "rows": rows}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["model"] for r in result["rows"]))
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.5 * len(sizes), 7), squeeze=False)
    for j, size in enumerate(sizes):
        for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
            rs = [r for r in result["rows"] if r["model"] == size and r["backend"] == backend]
            axes[0][j].plot([r["batch_size"] for r in rs], [r["choices_per_s"] for r in rs], "o-", label=backend)
            axes[1][j].plot([r["batch_size"] for r in rs], [100 * r["mfu"] for r in rs], "o-", label=backend)
        axes[0][j].set_title(f"{size} model: scored choices / s")
        axes[1][j].set_title(f"{size} model: MFU (% of measured GEMM rate)")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size (examples)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"GEMM peak {result['gemm_peak']['flops_per_s'] / 1e9:.0f} GFLOP/s, {result['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    ap.add_argument("--backends", nargs="+", default=["torch", "onnxruntime", "triton"])
    ap.add_argument("--batch-sizes", type=positive_int, nargs="+", default=list(BATCH_SIZES))
    ap.add_argument("--per-task", type=positive_int, default=12)
    ap.add_argument("--prompt-length", type=non_negative_int, default=100)
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    result = run(args.sizes, args.backends, args.batch_sizes, args.per_task, args.prompt_length,
                 args.threads or os.cpu_count() or 1)
    path = write_result("throughput", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("transformers", "optimum", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    main()
