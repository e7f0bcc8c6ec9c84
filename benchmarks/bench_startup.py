"""Command to first scored batch on cached artifacts (not a test).

    rospr bench startup [--model tiny] [--runs 5] [--out DIR]

``rospr run`` (the CLI, a fresh process each time) of one example with ``t0`` on the onnxruntime
backend, in process, the unit cache off: once to fill the export cache and the weight-digest memo,
then ``--runs`` times cached. Each run's ``execution.time`` (``rospr_harness.runner.stages``) gives
``first_batch_s`` (process start to the first scored batch back), ``startup_s`` (process start to
run start: interpreter and imports) and the ``setup`` stage (export cache verified, session opened,
tokenizer read). Writes ``benchmarks/results/startup.json``. Target (issue 12): <= 3 s on the tiny
model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rospr_bench.common import RESULTS, positive_int, write_result
from rospr_bench.workload import REPO, model_dir

log = logging.getLogger("bench_startup")
TARGET_S = 3.0


def one_run(config: Path, out: Path, env: dict) -> dict:
    """One CLI run; its ``execution.time``. Refuses (``RuntimeError``) a run that fails."""
    proc = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "run", str(config), "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"rospr run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads((out / "results.json").read_text())["execution"]["time"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="rospr bench startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="build/<model>-t0 (built when absent)")
    ap.add_argument("--runs", type=positive_int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    model = model_dir(args.model)
    tree = {"model": {"name_or_path": str(model)}, "backend": "onnxruntime", "method": ["t0"],
            "tasks": [{"name": "builtin/sentiment", "limit": 1, "prompts": ["review_sentiment"]}],
            "cache": {"enabled": False}}
    with tempfile.TemporaryDirectory(prefix="rospr-startup-") as tmp:
        config = Path(tmp) / "startup.json"  # JSON is YAML: the CLI reads it as a config
        config.write_text(json.dumps(tree))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        load_before = os.getloadavg()[0]
        warm = one_run(config, Path(tmp) / "warm", env)  # exports if needed, remembers the weight digests
        runs = [one_run(config, Path(tmp) / f"run{i}", env) for i in range(args.runs)]
    first = [r["first_batch_s"] for r in runs]
    result = {
        "command": f"rospr bench startup --model {args.model} --runs {args.runs}",
        "run_command": "rospr run CONFIG --out DIR (CONFIG: run_config; export cache and digest memo warm)",
        "run_config": tree,
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "warm_up": {"first_batch_s": warm["first_batch_s"], "setup_s": warm["stages_s"]["setup"]},
        "runs": [{"first_batch_s": r["first_batch_s"], "startup_s": r["startup_s"], "setup_s": r["stages_s"]["setup"],
                  "wall_s": r["wall_s"]} for r in runs],
        "first_batch_s": {"median": statistics.median(first), "min": min(first), "max": max(first)},
        "target_s": TARGET_S,
        "meets_target": statistics.median(first) <= TARGET_S,
    }
    path = write_result("startup", result, args.out)
    log.info("startup: first scored batch %.2f s after process start (median of %d; target %.1f s); %s",
             result["first_batch_s"]["median"], len(runs), TARGET_S, path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
