"""Rewrite the figures table of ``benchmarks/README.md`` from the JSON files in ``results/``.

    python -m rospr_bench.summarize
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rospr_bench.common import RESULTS

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _machine(d: dict) -> str:
    m = d["machine"]
    load = ""
    if "load_average_at_start" in m:
        load = f", load {m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at end"
    return f"{m['cpu']}, {m['cores']} cores, {m['time'][:10]}, git {str(m.get('git_revision'))[:8]}{load}"


def targets() -> list[str]:
    """The project's performance targets, judged on the latest results."""
    out = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    if (d := _load("peers")):
        for w in d["workloads"]:
            rows = {r["system"]: r for r in w["rows"]}
            lm, naive = rows["lm-evaluation-harness"]["ours_speedup"], rows["naive per-choice HF loop"]["ours_speedup"]
            same = all(r["agreement_with_ours"] == 1.0 for r in w["rows"])
            preds = "identical" if same else "different"
            out.append(f"| onnxruntime >= 5x lm-evaluation-harness, same predictions ({w['workload']} workload) | "
                       f"{lm:.2f}x, {preds} predictions | {'yes' if lm >= 5 and same else 'no'} |")
            out.append(f"| onnxruntime >= 5x the naive per-choice loop, same predictions ({w['workload']} workload) | "
                       f"{naive:.2f}x, {preds} predictions | {'yes' if naive >= 5 and same else 'no'} |")
    if (d := _load("backends")):
        ort = next(r for r in d["results"] if r["backend"] == "onnxruntime" and r["concurrency"] == 4)
        tri = next(r for r in d["results"] if r["backend"] == "triton" and r["concurrency"] == 4)
        ratio = tri["choices_per_s"] / ort["choices_per_s"]
        out.append(f"| Triton at concurrency 4 within 20% of in-process onnxruntime | {100 * ratio:.0f}% of it | "
                   f"{'yes' if ratio >= 0.8 else 'no'} |")
    if (d := _load("throughput")):
        r = next((r for r in d["rows"] if r["model"] == "small" and r["backend"] == "onnxruntime" and r["batch_size"] == 32), None)
        if r:
            out.append(f"| MFU of onnxruntime, small model, batch 32 >= 40% of the measured GEMM rate | {100 * r['mfu']:.1f}% | "
                       f"{'yes' if r['mfu'] >= 0.4 else 'no'} |")
    return out + [""]


def section() -> str:
    out = targets()
    if (d := _load("throughput")):
        peak = d["gemm_peak"]["flops_per_s"] / 1e9
        out += [f"### Throughput and MFU (`rospr bench throughput`; {_machine(d)})", "",
                f"Measured float32 GEMM rate: {peak:.0f} GFLOP/s ({d['threads']} threads); soft prompt of "
                f"{d['prompt_length']} vectors on every row.", "",
                "| model | backend | batch | examples/s | choices/s | MFU |", "|---|---|---:|---:|---:|---:|"]
        for r in d["rows"]:
            out.append(f"| {r['model']} | {r['backend']} | {r['batch_size']} | {r['examples_per_s']:.1f} | "
                       f"{r['choices_per_s']:.1f} | {100 * r['mfu']:.1f}% |")
        out.append("")
    if (d := _load("latency")):
        out += [f"### Triton latency by concurrency (`rospr bench latency`; {_machine(d)})", "",
                f"{d['request_batch']} example(s) per request, {d['seconds_per_level']:.0f} s per level. {d['server']}.", "",
                "| in flight | req/s | choices/s | p50 ms | p90 ms | p99 ms | server request ms | queue ms | compute ms |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            out.append(f"| {r['concurrency']} | {r['requests_per_s']:.1f} | {r['choices_per_s']:.1f} | {r['client_p50_ms']:.1f} | "
                       f"{r['client_p90_ms']:.1f} | {r['client_p99_ms']:.1f} | {r['server_request_ms']:.1f} | "
                       f"{r['server_queue_ms']:.1f} | {r['server_compute_infer_ms']:.1f} |")
        out.append("")
    if (d := _load("backends")):
        out += [f"### Backends at concurrency 1, 4, 16 (`rospr bench backends`; {_machine(d)})", "",
                "| backend | callers | choices/s | batch p50 ms |", "|---|---:|---:|---:|"]
        for r in d["results"]:
            out.append(f"| {r['backend']} | {r['concurrency']} | {r['choices_per_s']:.1f} | {r['batch_latency_ms_p50']:.1f} |")
        out.append("")
    if (d := _load("peers")):
        out += [f"### Peers on the same examples (`rospr bench peers`; {_machine(d)})", "",
                f"{d['model']} model, batch size {d['batch_size']}, {d['threads']} threads, scorer export version "
                f"{d['export_version']}, convention {d['convention']}.", "",
                "| workload | system | seconds | choices/s | rospr speed-up | same predictions |",
                "|---|---|---:|---:|---:|---:|"]
        for w in d["workloads"]:
            what = (f"{w['workload']}: {w['n_examples']} examples, {w['n_choices']} choices, "
                    f"{w['mean_input_tokens']:.0f} input tokens on average")
            for r in w["rows"]:
                out.append(f"| {what} | {r['system']} | {r['seconds']:.1f} | {r['choices_per_s']:.1f} | "
                           f"{r['ours_speedup']:.1f}x | {100 * r['agreement_with_ours']:.1f}% |")
        out.append("")
    if (d := _load("retrieval")):
        rk = [k for k in d["rows"][0] if k.startswith("recall_at_")][0]
        out += [f"### FAISS indexes (`rospr bench retrieval`; {_machine(d)})", "",
                f"d={d['dim']}, {d['n_queries']} queries, top-{d['top_n']}, {d['threads']} threads.", "",
                f"| keys | index | build s | query ms (batched) | single query p50 ms | {rk.replace('_', ' ')} | memory MB |",
                "|---:|---|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            out.append(f"| {r['n_keys']:,} | {r['index']} | {r['build_s']:.1f} | {r['batch_query_ms_per_query']:.3f} | "
                       f"{r['single_query_p50_ms']:.2f} | {r[rk]:.3f} | {r['memory_mb']:.0f} |")
        out.append("")
    if (d := _load("scaling")):
        out += [f"### Ray scaling (`rospr bench scaling`; {_machine(d)})", "", "```", json.dumps(d.get("rows", d.get("results")), indent=1)[:2000], "```", ""]
    return "\n".join(out)


def main(argv=None) -> None:
    text = README.read_text()
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), BEGIN + "\n" + section() + "\n" + END, text, flags=re.S)
    README.write_text(new)


if __name__ == "__main__":
    main()
