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


# Figures measured before the last changes of issue 20 (cached units linked, the session's open, the
# peers' model-only timer, the default batching) are not shown: a result file older than this (UTC) is
# listed as not re-run, its figure dropped.
SINCE = "2026-12-03T12:30"
_DROPPED: list[str] = []


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    if d.get("machine", {}).get("time", "")[:16] < SINCE:
        if name not in _DROPPED:
            _DROPPED.append(name)
        return None
    return d


def _machine(d: dict) -> str:
    m = d["machine"]
    load = ""
    if "load_average_at_start" in m:
        load = f", load {m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at end"
    dirty = " with uncommitted changes in the tree" if m.get("git_dirty") else ""
    return f"{m['cpu']}, {m['cores']} cores, {m['time'][:10]}, git {str(m.get('git_revision'))[:8]}{dirty}{load}"


def targets() -> list[str]:
    """The project's performance targets, judged on the latest results."""
    out = ["### Targets", "", "| target | measured | met |", "|---|---|---|"]
    if (d := _load("peers")):
        for w in d["shapes"]:
            rows = {r["system"]: r for r in w["rows"]}
            n = w["n_examples"]
            for peer, what in (("lm-evaluation-harness", "lm-evaluation-harness"), ("naive per-choice HF loop", "the naive per-choice loop")):
                r = rows[peer]
                same = r["same_predictions"] == n
                out.append(f"| >= 6x {what}, whole process, same predictions ({w['shape']}: {n} examples) | "
                           f"{r['whole_speedup']:.2f}x whole process ({r['model_speedup']:.2f}x model only), "
                           f"{r['same_predictions']}/{n} same predictions | "
                           f"{'yes' if r['whole_speedup'] >= 6 and same else 'no'} |")
    if (d := _load("backends")):
        ort = next(r for r in d["results"] if r["backend"] == "onnxruntime" and r["concurrency"] == 4)
        tri = next(r for r in d["results"] if r["backend"] == "triton" and r["concurrency"] == 4)
        ratio = tri["choices_per_s"] / ort["choices_per_s"]
        out.append(f"| Triton at concurrency 4 within 20% of in-process onnxruntime | {100 * ratio:.0f}% of it | "
                   f"{'yes' if ratio >= 0.8 else 'no'} |")
    if (d := _load("startup")):
        t = d["targets"]
        out.append(f"| cached one-example `t0` run <= {t['t0_s']['target']:g} s whole process (tiny) | "
                   f"{t['t0_s']['median']:.2f} s | {'yes' if t['t0_s']['met'] else 'no'} |")
        out.append(f"| cached one-example `rospr+var` run <= `t0` + {t['rospr_var_extra_s']['target']:g} s | "
                   f"+{t['rospr_var_extra_s']['median']:.2f} s | {'yes' if t['rospr_var_extra_s']['met'] else 'no'} |")
        if "paper_over_t0" in t:
            out.append(f"| fully cached paper pipeline <= {t['paper_over_t0']['target']:g}x a fully cached `t0` run of "
                       f"the same targets | {t['paper_over_t0']['median']:.2f}x | "
                       f"{'yes' if t['paper_over_t0']['met'] else 'no'} |")
    if (d := _load("throughput")):
        r = next((r for r in d["rows"] if r["model"] == "small" and r["backend"] == "onnxruntime"
                  and r.get("default_batching")), None)
        if r:
            out.append(f"| MFU of onnxruntime, small model, default batching (batch {r['batch_size']}, budget "
                       f"{d.get('default_batch_tokens')}) >= 70% of onnxruntime's own MatMul on its shapes | "
                       f"{100 * r['mfu']:.1f}% | {'yes' if r['mfu'] >= 0.7 else 'no'} |")
    return out + [""]


def section() -> str:
    _DROPPED.clear()
    out = targets()
    if (d := _load("throughput")):
        out += [f"### Throughput and MFU (`rospr bench throughput`; {_machine(d)})", "",
                f"Default batching: batch_size {d['default_batch_size']}, batch_tokens {d['default_batch_tokens']} "
                "(the row marked budget; the other rows have no token budget).", "",
                f"{d['threads']} threads; soft prompt of {d['prompt_length']} vectors on every row. MFU: useful FLOPs "
                "per second over onnxruntime's own MatMul rate on the GEMM shapes of the same batches, measured in "
                "the same run (`rospr_bench/ceiling.py`).", "",
                "| model | backend | batch | examples/s | choices/s | ceiling GFLOP/s | MFU |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            batch = r["batch_size"] if r.get("batch_tokens") is None else f"{r['batch_size']}, budget {r['batch_tokens']}"
            out.append(f"| {r['model']} | {r['backend']} | {batch} | {r['examples_per_s']:.1f} | "
                       f"{r['choices_per_s']:.1f} | {r['ceiling_flops_per_s'] / 1e9:.0f} | {100 * r['mfu']:.1f}% |")
        out.append("")
    if (d := _load("startup")):
        names = {"t0": "one example, `t0` (unit cache off; export cached)",
                 "rospr+var": "one example, `rospr+var` (bank and library ready)",
                 "paper": "paper pipeline offline, 580 units all from the unit cache",
                 "paper-t0": "the same 116 targets with `t0`, all from the unit cache"}
        out += [f"### Cached runs (`{d['command']}`; {_machine(d)})", "",
                "Each figure is a fresh `rospr run` timed from outside (interpreter start to exit), the cases "
                "interleaved after one warm-up each; median (min to max).", "",
                "| case | whole process s |", "|---|---:|"]
        for name, f in d["figures"].items():
            out.append(f"| {names.get(name, name)} | {f['median_s']:.2f} ({f['min_s']:.2f} to {f['max_s']:.2f}) |")
        if "paper_over_t0" in d["targets"]:
            pairs = d["targets"]["paper_over_t0"]["pairs"]
            out.append(f"| paper / t0, pair by pair | {d['targets']['paper_over_t0']['median']:.2f}x "
                       f"({min(pairs):.2f}x to {max(pairs):.2f}x) |")
        out.append("")
    if (d := _load("batching")):
        rows = d["rows"]
        out += [f"### Token-budget batches on long inputs (`rospr bench batching`; {_machine(d)})", "",
                f"{d['model']} model, {rows[0]['examples']} BIG-bench logic_grid_puzzle inputs of "
                f"{rows[0]['mean_input_tokens']:.0f} tokens on average + {d['prompt_length']} prompt vectors, "
                f"batch_size {rows[0]['batch_size']}, {d['threads']} threads, each budget a fresh process.", "",
                "| batch_tokens | rows per batch | examples/s | ceiling GFLOP/s | MFU | peak RSS MiB | score diff vs first |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {r['batch_tokens'] or 'none'} | {r['rows_per_batch']:.1f} | {r['examples_per_s']:.2f} | "
                       f"{r['ceiling_flops_per_s'] / 1e9:.0f} | {100 * r['mfu']:.1f}% | {r['peak_rss_mib']:.0f} | "
                       f"{r['max_abs_score_diff_vs_first']:.1e} |")
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
                f"{d['model']} model, {d['threads']} threads, scorer export version {d['export_version']}, ours at "
                f"batch_size {d['ours_batch_size']}, batch_tokens {d['ours_batch_tokens']}; lm-eval batch size "
                f"{d['lm_eval_batch_size']}; convention {d['convention']}. Whole process: a fresh process per "
                "system, interpreter start to exit (imports, model load, tokenising, scoring); model only: texts "
                "to scores inside it. Inputs right-stripped (the condition under which lm-eval scores what we "
                "score).", "",
                "| shape | system | whole s | model s | whole-process speed-up | model-only speed-up | same predictions |",
                "|---|---|---:|---:|---:|---:|---:|"]
        for w in d["shapes"]:
            what = (f"{w['shape']}: {w['n_examples']} examples, {w['mean_choices']:.1f} choices, "
                    f"{w['mean_input_tokens']:.0f} tokens")
            for r in w["rows"]:
                out.append(f"| {what} | {r['system']} | {r['whole_s']:.1f} | {r['model_s']:.1f} | "
                           f"{r['whole_speedup']:.1f}x | {r['model_speedup']:.1f}x | {r['same_predictions']}/{w['n_examples']} |")
        if all("bound" in w for w in d["shapes"]):
            out += ["", "What no scorer of ours could beat here: our batches' GEMMs at onnxruntime's own MatMul rate on "
                    "their shapes (measured in the same run) plus our fixed cost as measured (whole minus model only). "
                    "A whole-process ratio above the best possible one cannot be reached by faster code of ours:", "",
                    "| shape | our model-only MFU | GEMMs at the ceiling s | our fixed s | best possible whole s | "
                    "best possible vs lm-eval | best possible vs naive |", "|---|---:|---:|---:|---:|---:|---:|"]
            for w in d["shapes"]:
                b = w["bound"]
                out.append(f"| {w['shape']} | {100 * b['ours_model_mfu']:.0f}% | {b['gemm_s_at_ceiling']:.2f} | "
                           f"{b['ours_fixed_s']:.2f} | {b['best_whole_s']:.2f} | {b['best_whole_speedup']['lm_eval']:.1f}x | "
                           f"{b['best_whole_speedup']['naive']:.1f}x |")
        out += ["", "On BIG-bench's own formatting (the input as rendered, e.g. ending in \"A: \"; lm-eval moves the "
                "trailing space into the continuation):", "",
                "| shape | lm-eval and ours agree | ours changed vs right-stripped | accuracy ours / lm-eval |",
                "|---|---:|---:|---:|"]
        for w in d["shapes"]:
            b = w["bigbench_format"]
            out.append(f"| {w['shape']} | {b['same_predictions_lm_eval_vs_ours']}/{w['n_examples']} | "
                       f"{b['ours_changed_vs_plain']} | {100 * b['accuracy_ours']:.0f}% / {100 * b['accuracy_lm_eval']:.0f}% |")
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
    if _DROPPED:
        out += [f"Not re-run since {SINCE} (their figures are dropped; the old JSON stays in `results/`): "
                + ", ".join(f"`{n}`" for n in _DROPPED) + ".", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    """``python -m rospr_bench.summarize [--check]``: rewrite the figures block of benchmarks/README.md
    from ``results/*.json``; ``--check`` writes nothing and exits 1 when the block is not what it would write."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m rospr_bench.summarize", description=main.__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1, writing nothing, if README.md's figures are stale")
    args = ap.parse_args(argv)
    text = README.read_text()
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), BEGIN + "\n" + section() + "\n" + END, text, flags=re.S)
    if args.check:
        if new != text:
            print(f"{README}: the figures block differs from results/*.json; run python -m rospr_bench.summarize")
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
