"""Token-budget batches on long inputs: MFU and peak memory by ``scoring.batch_tokens``.

The long inputs are BIG-bench's ``logic_grid_puzzle`` rows of 550 to 800 tokens (about 670 on
average, 2 to 5 choices), each with a soft prompt of ``--prompt-length`` vectors, scored by the
product's onnxruntime scorer (``scoring.batch_size`` rows at most, ``plan_batches(max_tokens=...)``).
Each budget runs in a fresh process, so that its peak RSS (``ru_maxrss``) is its own: the process
loads the examples, opens the session, scores one untimed batch, then times the whole workload and
measures the MFU ceiling on the same batches' GEMM shapes (``rospr_bench.ceiling``). The scores of
every budget must equal the first's (batch invariance; the benchmark fails otherwise), and an MFU
above 100% fails it too.

    python -m rospr_bench.bench_batching [--size small] [--budgets none 2048 4096 8192 16384] [-n 48]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rospr_bench.common import RESULTS, non_negative_int, positive_int, write_result, save_figure, script_logging
from rospr_bench.workload import model_dir

log = logging.getLogger("bench_batching")
BUDGETS = ("none", "1024", "2048", "4096", "8192", "16384")
LONG = ("bigbench/logic_grid_puzzle",)


def budget_arg(text: str) -> int | None:
    if text.lower() in ("none", "null"):
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a token budget is 1 or more, or none")
    return value


def long_inputs(tokenizer, n: int, min_tokens: int = 550, max_tokens: int = 800):
    from rospr_bench.workload import _settings
    from rospr_harness.tasks import get_task

    settings = _settings()
    if not settings.bigbench:
        raise ValueError("the batching benchmark needs BIG-bench: run `rospr data fetch bigbench`, or set "
                         "ROSPR_DATA_DIR to a folder with bigbench/ (e.g. ../shared/data)")
    out = []
    for name in LONG:
        task = get_task(name, settings)
        for e in task.load("bigbench").examples:
            if min_tokens < len(tokenizer(e.input_text).input_ids) <= max_tokens:
                out.append(e)
                if len(out) == n:
                    return out
    raise ValueError(f"only {len(out)} inputs of {min_tokens}-{max_tokens} tokens in {LONG} (asked for {n})")


def child(size: str, budget: int | None, batch_size: int, n: int, prompt_length: int, threads: int) -> dict:
    """One budget in this process: time, ceiling, peak RSS and the scores."""
    from transformers import AutoTokenizer

    from rospr.flops import ModelShape
    from rospr.scoring import Convention, encode_examples, plan_batches, score_encoded
    from rospr_bench.bench_throughput import batch_gemms, example_flops
    from rospr_bench.ceiling import Ceiling, workload_ceiling
    from rospr_bench.common import product_backend

    path = model_dir(size)
    shape = ModelShape.from_config(json.loads((path / "config.json").read_text()), str(path / "config.json"))
    tok = AutoTokenizer.from_pretrained(path)
    encoded = encode_examples(tok, long_inputs(tok, n), Convention())
    prompt = (np.random.default_rng(0).normal(size=(prompt_length, shape.d_model)) * 0.5).astype(np.float32)
    scorer = product_backend("onnxruntime", path, threads=threads).scorer
    plan = plan_batches(encoded, batch_size, max_tokens=budget)
    score_encoded(scorer, [encoded[i] for i in plan[-1]], prompt, batch_size)  # warm-up: the session opens
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    scores = score_encoded(scorer, encoded, prompt, batch_size, max_tokens=budget)
    wall = time.perf_counter() - t
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ceil = workload_ceiling(c := Ceiling(threads), batch_gemms(shape, encoded, plan, prompt_length))
    flops = example_flops(shape, encoded, prompt_length)
    return {"batch_tokens": budget, "batch_size": batch_size, "batches": len(plan),
            "rows_per_batch": float(np.mean([len(b) for b in plan])), "examples": len(encoded),
            "mean_input_tokens": float(np.mean([len(e.input_ids) for e in encoded])),
            "wall_s": wall, "examples_per_s": len(encoded) / wall, "useful_flops": flops,
            "model_flops_per_s": flops / wall, "ceiling_flops_per_s": ceil["flops_per_s"],
            "mfu": flops / wall / ceil["flops_per_s"], "peak_rss_mib_before_scoring": rss_before,
            "peak_rss_mib": rss_peak, "ceiling": c.summary(), "scores": [s.tolist() for s in scores]}


def run(size: str, budgets, batch_size: int, n: int, prompt_length: int, threads: int) -> dict:
    from rospr_bench.ceiling import check_mfu

    rows = []
    for budget in budgets:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "row.json"
            cmd = [sys.executable, "-m", "rospr_bench.bench_batching", "--child", str(out), "--size", size,
                   "--budgets", str(budget).lower(), "--batch-size", str(batch_size), "-n", str(n),
                   "--prompt-length", str(prompt_length), "--threads", str(threads)]
            subprocess.run(cmd, check=True)
            row = json.loads(out.read_text())
        log.info("%s", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                        if k not in ("scores", "ceiling")})
        rows.append(row)
    first = rows[0]["scores"]
    for r in rows:
        diff = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in zip(first, r.pop("scores")))
        r["max_abs_score_diff_vs_first"] = diff
        if diff > 1e-4:
            raise RuntimeError(f"batch_tokens={r['batch_tokens']}: scores differ from batch_tokens="
                               f"{rows[0]['batch_tokens']} by {diff:.2e} (batch invariance broken)")
    check_mfu(rows)
    return {"model": size, "threads": threads, "prompt_length": prompt_length, "rows": rows}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    labels = [f"{r['batch_tokens'] or 'none'}\n({r['rows_per_batch']:.1f} rows)" for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    a.bar(labels, [100 * r["mfu"] for r in rows])
    a.set_title("MFU (% of onnxruntime MatMul on the same shapes)")
    b.bar(labels, [r["peak_rss_mib"] for r in rows])
    b.set_title("peak RSS of the process (MiB)")
    for ax in (a, b):
        ax.set_xlabel(f"scoring.batch_tokens (batch_size {rows[0]['batch_size']})")
        ax.tick_params(labelsize=8)
    fig.suptitle(f"{result['model']} model, {rows[0]['examples']} inputs of {rows[0]['mean_input_tokens']:.0f} tokens "
                 f"+ {result['prompt_length']} prompt vectors, {result['threads']} threads")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--budgets", type=budget_arg, nargs="+", default=[budget_arg(b) for b in BUDGETS])
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("-n", type=positive_int, default=48, help="long inputs to score")
    ap.add_argument("--prompt-length", type=non_negative_int, default=100)
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    if args.child:
        row = child(args.size, args.budgets[0], args.batch_size, args.n, args.prompt_length, threads)
        Path(args.child).write_text(json.dumps(row))
        return row
    result = run(args.size, args.budgets, args.batch_size, args.n, args.prompt_length, threads)
    path = write_result("batching", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    script_logging()
    main()
