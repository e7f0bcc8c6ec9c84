"""A full BIG-bench run of T0 on the small model, end to end, with where its time went (not a test).

    rospr bench fullrun [--limit 400] [--batch-size 16] [--model small] [--out DIR]

One ``rospr run`` (the CLI, a fresh process, as a user runs it) of the 14 BIG-bench tasks of T0's
evaluation with the ``t0`` method on the onnxruntime backend, in process, the unit cache off (every
unit is computed). BIG-bench comes from ``$ROSPR_DATA_DIR`` or ``../shared/data`` when it has a
``bigbench/`` folder, else from the fetched sdist (``rospr data fetch bigbench``). The export cache is
the usual one: a first run exports the model (its time is the ``setup`` stage), later runs reuse it.

What it reports (``benchmarks/results/fullrun.json`` and ``fullrun.png``): examples/s end to end
(examples over the command's wall time, interpreter start to exit), over the run's own wall time
(``execution.time.wall_s``), and the scorer's own rate (examples over the workers' scoring seconds,
and over the seconds inside the scorer's session calls), with every stage of
``execution.time`` (``rospr_harness.runner.stages``). ``--limit N`` scores the first N rows of each task
(the 14 tasks hold 137,158 examples, hours on 2 cores); the JSON says which limit was used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rospr_bench.common import RESULTS, non_negative_int, positive_int, write_result
from rospr_bench.workload import REPO, model_dir

log = logging.getLogger("bench_fullrun")


def data_dir() -> str | None:
    """The data root holding ``bigbench/`` (``$ROSPR_DATA_DIR``, else ``../shared/data``), or None: the
    fetched sdist."""
    data = os.environ.get("ROSPR_DATA_DIR") or str(REPO.parent / "shared" / "data")
    return data if Path(data, "bigbench").is_dir() else None


def run_config(model: Path, limit: int, batch_size: int) -> dict:
    """The run: the 14 BIG-bench tasks (``limit`` rows each; 0: all), t0, onnxruntime in process."""
    from rospr_harness.tasks import group

    tasks = [{"name": name, **({"limit": limit} if limit else {})} for name in group("bigbench")]
    tree = {"model": {"name_or_path": str(model)}, "backend": "onnxruntime", "method": ["t0"], "tasks": tasks,
            "scoring": {"batch_size": batch_size}, "cache": {"enabled": False}}
    if data_dir():
        tree["data"] = {"data_dir": data_dir()}
    return tree


def load() -> float:
    return os.getloadavg()[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="rospr bench fullrun", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="small", help="build/<model>-t0 (built when absent)")
    ap.add_argument("--limit", type=non_negative_int, default=400, help="rows per task (0: every row)")
    ap.add_argument("--batch-size", type=positive_int, default=16)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    model = model_dir(args.model)
    with tempfile.TemporaryDirectory(prefix="rospr-fullrun-") as tmp:
        config = Path(tmp) / "fullrun.json"  # JSON is YAML: the CLI reads it as a config
        config.write_text(json.dumps(run_config(model, args.limit, args.batch_size), indent=1))
        out = Path(tmp) / "run"
        argv_run = [sys.executable, "-m", "rospr_harness.cli", "run", str(config), "--out", str(out)]
        load_before = load()
        log.info("fullrun: %s (load %.2f)", " ".join(argv_run[1:]), load_before)
        t0 = time.time()
        proc = subprocess.run(argv_run, cwd=REPO, capture_output=True, text=True)
        command_s = time.time() - t0
        if proc.returncode:
            raise RuntimeError(f"rospr run failed ({proc.returncode}): {proc.stderr[-2000:]}")
        res = json.loads((out / "results.json").read_text())
    t = res["execution"]["time"]
    n = sum(u["n"] for u in res["units"])
    work = t["work_s"]
    result = {
        "command": f"rospr bench fullrun --model {args.model} --limit {args.limit} --batch-size {args.batch_size}",
        "run_command": "rospr run CONFIG --out DIR (CONFIG: the run_config below)",
        "run_config": run_config(model, args.limit, args.batch_size),
        "limit_per_task": args.limit or None,
        "note": (f"the first {args.limit} rows of each of the 14 tasks (all 14 hold 137,158 examples; hours on "
                 "this machine), so this is a sample of the full run" if args.limit else "every row of every task"),
        "load_before": round(load_before, 2), "load_after": round(load(), 2),
        "units": len(res["units"]), "examples": n,
        "command_wall_s": round(command_s, 3),
        "run_wall_s": t["wall_s"],
        "examples_per_s": {
            "end_to_end": round(n / command_s, 2),
            "run": round(n / t["wall_s"], 2),
            "scorer": round(n / work["scoring"], 2) if work["scoring"] else None,
            "model": round(n / work["model"], 2) if work["model"] else None,
        },
        "model_share": t["model_share"],
        "time": t,
        "accuracy_t0": res["overall"].get("t0"),
        "per_task": {s["task"]: s["mean"] for s in res["tasks"]},
    }
    path = write_result("fullrun", result, args.out)
    plot(result, path.with_suffix(".png"))
    log.info("fullrun: %d examples, %.1f ex/s end to end, %.1f ex/s the scorer's own; %s", n,
             result["examples_per_s"]["end_to_end"], result["examples_per_s"]["scorer"] or 0, path)


def plot(result: dict, path: Path) -> None:
    """The wall time split into the driver's stages, and the four rates side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result["time"]
    stages = {"startup (imports)": t.get("startup_s") or 0.0, **t["stages_s"], "other": t["other_s"]}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    left = 0.0
    for name, secs in stages.items():
        if secs > 0:
            ax1.barh([0], [secs], left=left, label=f"{name} {secs:.1f} s")
            left += secs
    inside = t["work_s"]["model"]
    ax1.barh([-1], [inside], color="k", label=f"inside the scorer's session calls {inside:.1f} s")
    ax1.set_yticks([0, -1], ["command", "model"])
    ax1.set_xlabel("seconds")
    ax1.set_title(f"{result['examples']} examples, {result['units']} tasks (limit {result['limit_per_task']})")
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    rates = result["examples_per_s"]
    ax2.bar(list(rates), [v or 0 for v in rates.values()], color=["C0", "C1", "C2", "k"])
    ax2.set_ylabel("examples / s")
    ax2.set_title("end to end vs the scorer's own rate")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
