"""Scoring throughput of torch, onnxruntime and Triton by batch size, and model FLOP utilisation.

For each model size and backend, the same workload (built-in + BIG-bench examples: 2 to 7 choices
each, every row with a soft prompt of ``--prompt-length`` vectors, as RoSPr feeds T0) is cut into
length-bucketed batches of B = 1 .. 64 examples and scored one batch at a time.

Model FLOP utilisation (MFU) = the workload's *useful* FLOPs per second (``rospr.flops.score_row``,
from the real token counts: no padding, the encoder once per input, the cross-attention keys/values
once per input, every decoder token of every choice, the LM head) divided by the rate onnxruntime's
own MatMul reaches on the GEMM shapes of the same batches (``rospr_bench.ceiling``), measured in this
same process with the same threads and session options, right after the batch size's first
backend. An MFU above 100% fails the benchmark (exit 1, nothing written).

    python -m rospr_bench.bench_throughput [--sizes tiny small] [--backends torch onnxruntime triton]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

from rospr_bench.common import RESULTS, non_negative_int, positive_int, product_backend, write_result, save_figure, script_logging
from rospr_bench.workload import examples, model_dir

log = logging.getLogger("bench_throughput")
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def example_flops(shape, encoded, prompt_length: int) -> float:
    """Useful forward FLOPs of scoring ``encoded`` with ``prompt_length`` prompt vectors on every row."""
    from rospr.flops import score_row

    return sum(score_row(shape, len(e.input_ids), prompt_length, [len(c) for c in e.choice_ids]) for e in encoded)


def batch_gemms(shape, encoded, plan, prompt_length: int):
    """The ``score_gemms`` of each planned batch."""
    from rospr.flops import score_gemms

    return [score_gemms(shape, [len(encoded[i].input_ids) for i in idx], prompt_length,
                        [[len(c) for c in encoded[i].choice_ids] for i in idx]) for idx in plan]


def measure(scorer, batches) -> float:
    scorer.score(batches[0])  # warm-up
    t = time.perf_counter()
    for b in batches:
        scorer.score(b)
    return time.perf_counter() - t


def run(sizes, backends, batch_sizes, per_task: int, prompt_length: int, threads: int) -> dict:
    import json

    from transformers import AutoTokenizer

    from rospr_export.repository import write_repository
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr.flops import ModelShape
    from rospr.scoring import Convention, collate, encode_examples, plan_batches
    from rospr_bench.ceiling import Ceiling, check_mfu, workload_ceiling

    from rospr_harness.config import ScoringConfig

    defaults = ScoringConfig()  # the shipped batching, measured as its own row
    plans = [(bs, None) for bs in batch_sizes]
    if (defaults.batch_size, defaults.batch_tokens) not in plans:
        plans.append((defaults.batch_size, defaults.batch_tokens))
    rows, ceilings = [], {}
    for size in sizes:
        path = model_dir(size)
        shape = ModelShape.from_config(json.loads((path / "config.json").read_text()), str(path / "config.json"))
        tok = AutoTokenizer.from_pretrained(path)
        encoded = encode_examples(tok, examples(per_task), Convention())
        prompt = (np.random.default_rng(0).normal(size=(prompt_length, shape.d_model)) * 0.5).astype(np.float32)
        flops = example_flops(shape, encoded, prompt_length)
        ceiling, by_batch = Ceiling(threads), {}
        ceilings[size] = ceiling
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
                for bs, budget in plans:
                    plan = plan_batches(encoded, bs, max_tokens=budget)
                    batches = [collate([encoded[i] for i in idx], [prompt] * len(idx), shape.d_model) for idx in plan]
                    wall = measure(scorer, batches)
                    if (bs, budget) not in by_batch:  # measured right after the first backend's pass at this batching
                        by_batch[bs, budget] = workload_ceiling(ceiling, batch_gemms(shape, encoded, plan, prompt_length))
                    ceil = by_batch[bs, budget]
                    row = {"model": size, "backend": name, "batch_size": bs, "batch_tokens": budget,
                           "default_batching": (bs, budget) == (defaults.batch_size, defaults.batch_tokens),
                           "wall_s": wall,
                           "examples_per_s": len(encoded) / wall, "choices_per_s": n_choices / wall,
                           "useful_flops": flops, "executed_gemm_flops": ceil["executed_flops"],
                           "model_flops_per_s": flops / wall, "ceiling_flops_per_s": ceil["flops_per_s"],
                           "ceiling_gemm_s": ceil["gemm_seconds"], "mfu": flops / wall / ceil["flops_per_s"]}
                    log.info("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
                    rows.append(row)
                getattr(scorer, "close", lambda: None)()
        finally:
            if server is not None:
                server.stop()
    check_mfu(rows)
    return {"ceiling": {size: c.summary() for size, c in ceilings.items()}, "threads": threads,
            "default_batch_size": defaults.batch_size, "default_batch_tokens": defaults.batch_tokens,
            "prompt_length": prompt_length, "per_task": per_task, "rows": rows}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(r["model"] for r in result["rows"]))
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.5 * len(sizes), 7), squeeze=False)
    for j, size in enumerate(sizes):
        for backend in dict.fromkeys(r["backend"] for r in result["rows"]):
            rs = [r for r in result["rows"] if r["model"] == size and r["backend"] == backend]
            rs = [r for r in rs if r.get("batch_tokens") is None]  # the budgeted default row is in the JSON
            axes[0][j].plot([r["batch_size"] for r in rs], [r["choices_per_s"] for r in rs], "o-", label=backend)
            axes[1][j].plot([r["batch_size"] for r in rs], [100 * r["mfu"] for r in rs], "o-", label=backend)
        axes[0][j].set_title(f"{size} model: scored choices / s")
        axes[1][j].set_title(f"{size} model: MFU (% of onnxruntime MatMul on its shapes)")
        for ax in (axes[0][j], axes[1][j]):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size (examples)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"{result['threads']} threads; soft prompt of {result['prompt_length']} vectors")
    save_figure(fig, path)


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
    script_logging()
    main()
