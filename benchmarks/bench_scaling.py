"""Units per second of a run with 1, 2 and 4 Ray scoring actors, next to the in-process run (not a test).

    python -m rospr_bench.bench_scaling [--size tiny] [--actors 1 2 4] [--limit 200] [--batch-size 8]
    rospr bench scaling [--model small]

The workload is a demo-like run: the five built-in tasks, every prompt, ``--limit`` rows of their
train split each (validation has only 64), methods t0 and rospr (a bank of quickly tuned prompts and its library are built once, under
build/bench_scaling/SIZE/). It runs first in process (the reference), then on a local Ray with
``num_cpus`` = this machine's cores, once per actor count; each scoring actor gets cores / actors
CPUs and that many onnxruntime threads (at least 1). Throughput is units (and examples) per second of
the driver's streaming, ``execution.driver_s`` (actors started, bank and library ready); the wall
time with actor start-up is recorded too. Every Ray run is checked against the in-process one
(identical predictions, largest score difference).

Writes ``benchmarks/results/scaling.json`` (machine with its core count, workload, rows) and
``scaling.png``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path

from rospr_bench.common import RESULTS, positive_int, write_result
from rospr_bench.workload import REPO, model_dir

log = logging.getLogger("bench_scaling")
TASKS = ("builtin/sentiment", "builtin/topic", "builtin/animals", "builtin/nli", "builtin/fruit_choice")


def workload(model: Path, work: Path, limit: int, batch_size: int) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "method": ["t0", "rospr"],
        "tasks": [{"name": t, "split": "train", "limit": limit} for t in TASKS],  # validation has 64 rows
        "scoring": {"batch_size": batch_size},
        "rospr": {"sources": "builtin", "prompt_bank": str(work / "bank"), "library": str(work / "library"),
                  "tune": {"steps": 5, "prompt_length": 20, "batch_size": 8, "source_rows": 32, "parallel": "off"},
                  "library_n": 32, "queries": 16, "top_n": 10},
    }


def compare(run_dir: Path, ref_dir: Path) -> tuple[bool, float]:
    """(identical predictions, largest |score difference|) of two runs, unit by unit."""
    from rospr_harness.schema import read_records, read_results

    got, ref = read_results(run_dir / "results.json"), read_results(ref_dir / "results.json")
    same, diff = len(got.units) == len(ref.units), 0.0
    for g, r in zip(got.units, ref.units):
        for a, b in zip(read_records(run_dir / g.records), read_records(ref_dir / r.records)):
            same &= a.prediction == b.prediction
            diff = max(diff, max(abs(x - y) for x, y in zip(a.scores, b.scores)))
    return same, diff


def row(label: str, actors: int | None, res, wall: float, examples: int) -> dict:
    ex = res.execution.model_dump()
    units = ex["computed"]
    return {"executor": label, "actors": actors, "units": units, "examples": examples,
            "driver_s": ex["driver_s"], "wall_s": round(wall, 2),
            "units_per_s": round(units / ex["driver_s"], 3), "examples_per_s": round(examples / ex["driver_s"], 1)}


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rays = [r for r in d["rows"] if r["executor"] == "ray"]
    base = next(r for r in d["rows"] if r["executor"] == "in_process")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["actors"] for r in rays], [r["units_per_s"] for r in rays], "o-", label="Ray scoring actors")
    ax.axhline(base["units_per_s"], color="grey", ls="--", label="in process (all cores)")
    ax.set_xticks([r["actors"] for r in rays])
    ax.set_xlabel("scoring actors")
    ax.set_ylabel("units / s (driver streaming)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"rospr run scaling, {d['size']} model, {d['machine']['cores']} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--actors", type=positive_int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--limit", type=positive_int, default=200, help="rows per (task, prompt)")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from rospr_harness.config import load_config
    from rospr_harness.runner import run

    cores = os.cpu_count() or 1
    work = REPO / "build" / "bench_scaling" / args.size
    tree = workload(model_dir(args.size), work, args.limit, args.batch_size)
    runs = work / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    t = time.time()
    ref = run(load_config(None, tree=tree), runs / "in_process")
    examples = sum(u.n for u in ref.units)
    rows = [row("in_process", None, ref, time.time() - t, examples)]
    rows[0].update(same_predictions=True, max_abs_score_diff=0.0)
    log.info("in process: %s", rows[0])
    from rospr_harness.ray_session import ray_started

    with ray_started(None, num_cpus=cores):  # loopback only, as a run starts it
        for n in args.actors:
            t = time.time()
            res = run(load_config(None, ["ray.enabled=true", f"ray.scorers={n}"], tree=tree), runs / f"ray{n}")
            r = row("ray", n, res, time.time() - t, examples)
            same, diff = compare(runs / f"ray{n}", runs / "in_process")
            r.update(same_predictions=same, max_abs_score_diff=diff, cpus_per_actor=round(cores / n, 2),
                     threads_per_actor=max(1, cores // n))
            rows.append(r)
            log.info("%d actors: %s", n, r)
    payload = {"size": args.size, "cores": cores, "workload": {"tasks": list(TASKS), "limit": args.limit,
               "methods": tree["method"], "batch_size": args.batch_size, "units": rows[0]["units"],
               "examples_per_method": examples // len(tree["method"])}, "rows": rows}
    path = write_result("scaling", payload, args.out)
    import json

    plot(json.loads(path.read_text()), path.with_suffix(".png"))
    print(f"cores: {cores}")
    for r in rows:
        print(f"{r['executor']:>10} {str(r['actors'] or ''):>2} actors: {r['units_per_s']:.2f} units/s, "
              f"{r['examples_per_s']:.0f} examples/s (driver {r['driver_s']:.1f} s, wall {r['wall_s']:.1f} s), "
              f"same predictions: {r['same_predictions']}, max |score diff| {r['max_abs_score_diff']:.2g}")
    log.info("wrote %s and %s", path, path.with_suffix(".png"))


if __name__ == "__main__":
    main()
