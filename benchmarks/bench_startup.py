"""Cached runs as whole processes (not a test): what a run costs when there is (almost) nothing to do.

    rospr bench startup [--model tiny] [--runs 5] [--no-paper] [--out DIR]

Every figure is one ``rospr run`` (the CLI, a fresh process each time) timed from outside, interpreter
start to exit, the runs of the cases interleaved (A B A B ...) and the median quoted:

- ``t0``: one example of ``builtin/sentiment`` with ``t0`` on the onnxruntime backend, in process,
  the unit cache off, the export cache and the weight-digest memo warm (filled by a first run that is
  not counted). Target (issue 20): at most 1.2 s on the tiny model.
- ``rospr+var``: the same example with ``rospr+var`` (retrieval, VAR scoring of the queries, scoring),
  its bank (three built-in sources, tuned by the warm-up run) and library ready. Target: at most 1 s
  more than ``t0``.
- ``paper`` (unless ``--no-paper``): the paper's pipeline offline (``configs/paper.yaml``'s recipe:
  synthesised rows for the T0 training mixture and the held-out datasets, 313 source prompts tuned on
  the tiny model, the 116 held-out targets, its five methods), every unit from the unit cache, against
  ``paper-t0``: the same targets with ``t0`` alone, every unit from the cache. Target: at most 2x.

Each run's ``execution.time`` (``rospr_harness.runner.stages``) is kept beside its wall time. Writes
``benchmarks/results/startup.json`` with the load average before and after. Caches (export, units,
digests) live in a temporary ``$ROSPR_HOME``, so nothing of the user's is read or changed.
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
import time
from pathlib import Path

from rospr_bench.common import RESULTS, positive_int, write_result
from rospr_bench.workload import REPO, model_dir

log = logging.getLogger("bench_startup")
T0_TARGET_S = 1.2
ROSPR_EXTRA_S = 1.0
PAPER_RATIO = 2.0
METHODS = ["t0", "rospr", "rospr+inter", "rospr+var", "rospr+var+inter"]


def one_run(config: Path, out: Path, env: dict) -> dict:
    """One CLI run: its whole-process wall time and ``execution.time``. Refuses (``RuntimeError``) a
    run that fails."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "run", str(config), "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"rospr run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    execution = json.loads((out / "results.json").read_text())["execution"]
    return {"process_s": round(wall, 3), "computed": execution["computed"], "cached": execution["cached"],
            "time": execution["time"]}


def one_example(model: Path, method: str, root: Path) -> dict:
    """The one-example config of ``method`` (bank and library under ``root`` for RoSPr)."""
    tree = {"model": {"name_or_path": str(model)}, "backend": "onnxruntime", "method": [method],
            "tasks": [{"name": "builtin/sentiment", "limit": 1, "prompts": ["review_sentiment"]}],
            "cache": {"enabled": False}}
    if method != "t0":
        tree["rospr"] = {"sources": ["builtin/nli", "builtin/animals", "builtin/topic"],
                         "prompt_bank": str(root / "bank"), "library": str(root / "library"),
                         "tune": {"steps": 2, "prompt_length": 4, "batch_size": 8, "source_rows": 24, "parallel": "off"},
                         "library_n": 16, "top_n": 5}
    return tree


def paper(model: Path, root: Path, env: dict, methods: list[str]) -> dict:
    """The paper config (``configs/paper.yaml``) on synthesised rows and the tiny model, held-out
    targets, ``methods``, the unit cache on."""
    import yaml

    data = root / "synth"
    if not (data / "rows").is_dir():
        (data / "promptsource").mkdir(parents=True)
        templates = Path(os.environ.get("ROSPR_DATA_DIR") or REPO.parent / "shared" / "data") / "promptsource" / "templates"
        (data / "promptsource" / "templates").symlink_to(templates)
        subprocess.run([sys.executable, "-m", "rospr_harness.cli", "data", "synth", "--data-dir", str(data), "t0_train",
                        "heldout"], cwd=REPO, env=env, check=True, capture_output=True)
    tree = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
    tree["model"]["name_or_path"] = str(model)
    tree["method"] = methods
    tree["tasks"] = ["heldout"]
    tree["data"] = {"data_dir": str(data)}
    tree["rospr"].update(prompt_bank=str(root / "paper-bank"), library=str(root / "paper-library"))
    tree["rospr"]["tune"].update(steps=2, prompt_length=4, source_rows=8)
    tree["cache"] = {"enabled": True}
    return tree


def interleaved(cases: dict[str, Path], root: Path, env: dict, runs: int) -> dict[str, list[dict]]:
    """Each case once to warm it up (not counted), then ``runs`` rounds of every case in turn."""
    for name, config in cases.items():
        warm = one_run(config, root / f"{name}-warm", env)
        log.info("%s: warm-up %.2f s (%d computed, %d cached)", name, warm["process_s"], warm["computed"],
                 warm["cached"])
    out: dict[str, list[dict]] = {name: [] for name in cases}
    for i in range(runs):
        for name, config in cases.items():
            out[name].append(one_run(config, root / f"{name}-{i}", env))
    return out


def summary(runs: list[dict]) -> dict:
    walls = [r["process_s"] for r in runs]
    return {"median_s": round(statistics.median(walls), 3), "min_s": min(walls), "max_s": max(walls),
            "runs": [{"process_s": r["process_s"], "computed": r["computed"], "cached": r["cached"],
                      "startup_s": r["time"].get("startup_s"), "first_batch_s": r["time"].get("first_batch_s"),
                      "wall_s": r["time"].get("wall_s"), "stages_s": r["time"].get("stages_s")} for r in runs]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="rospr bench startup", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="build/<model>-t0 (built when absent)")
    ap.add_argument("--runs", type=positive_int, default=5)
    ap.add_argument("--no-paper", action="store_true", help="leave out the paper pipeline (its warm-up tunes 313 prompts)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    model = model_dir(args.model)
    with tempfile.TemporaryDirectory(prefix="rospr-startup-") as tmp:
        root = Path(tmp)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "ROSPR_HOME": str(root / "home")}
        for var in ("ROSPR_UNIT_CACHE", "ROSPR_ONNX_CACHE", "ROSPR_DIGEST_MEMO"):
            env.pop(var, None)
        trees = {"t0": one_example(model, "t0", root), "rospr+var": one_example(model, "rospr+var", root)}
        if not args.no_paper:
            trees["paper"] = paper(model, root, env, METHODS)
            trees["paper-t0"] = paper(model, root, env, ["t0"])
        cases = {}
        for name, tree in trees.items():
            cases[name] = root / f"{name}.json"  # JSON is YAML: the CLI reads it as a config
            cases[name].write_text(json.dumps(tree))
        load_before = os.getloadavg()
        runs = interleaved(cases, root, env, args.runs)
        load_after = os.getloadavg()
    figures = {name: summary(r) for name, r in runs.items()}
    t0, rv = figures["t0"]["median_s"], figures["rospr+var"]["median_s"]
    targets = {"t0_s": {"target": T0_TARGET_S, "median": t0, "met": t0 <= T0_TARGET_S},
               "rospr_var_extra_s": {"target": ROSPR_EXTRA_S, "median": round(rv - t0, 3), "met": rv - t0 <= ROSPR_EXTRA_S}}
    if "paper" in figures:
        ratios = [p["process_s"] / q["process_s"] for p, q in zip(runs["paper"], runs["paper-t0"])]
        ratio = statistics.median(ratios)
        targets["paper_over_t0"] = {"target": PAPER_RATIO, "median": round(ratio, 3),
                                    "pairs": [round(x, 3) for x in ratios], "met": ratio <= PAPER_RATIO}
    result = {
        "command": f"rospr bench startup --model {args.model} --runs {args.runs}" + (" --no-paper" if args.no_paper else ""),
        "run_command": "rospr run CONFIG --out DIR, a fresh process per run, timed interpreter start to exit",
        "configs": trees,
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "figures": figures,
        "targets": targets,
    }
    path = write_result("startup", result, args.out)
    log.info("startup: t0 %.2f s (target %.1f), rospr+var %+.2f s (target +%.1f)%s; %s", t0, T0_TARGET_S, rv - t0,
             ROSPR_EXTRA_S, f", paper / t0 {targets['paper_over_t0']['median']:.2f}x (target {PAPER_RATIO:g}x)"
             if "paper_over_t0" in targets else "", path)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
