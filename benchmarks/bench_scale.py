"""A T0-large-shaped checkpoint (3.1 GB of float32 weights) through every step, with wall time and peak
memory of each process (not a test).

    python -m rospr_bench.bench_scale [--size large] [--rows 32] [--skip-triton] [--out DIR]

Each step runs as its own command (the ``rospr`` CLI, a fresh process, as a user runs it) while a
sampler records every process of its tree every 0.2 s (psutil RSS; Ray's GCS, raylet and actors are
children of the driver of a local Ray, the Triton server and its python-backend stubs children of
``rospr serve``):

1. ``build``: ``rospr tiny --size SIZE`` (random weights, saved as safetensors);
2. ``export``: ``rospr export`` (Optimum, external data, validated against PyTorch) into a Triton
   repository and its python-backend twin;
3. ``first run``: ``rospr run`` on onnxruntime with an empty export cache (exports on first use);
4. ``cached run``: the same again (the export cache is verified and reused);
5. ``ray run``: the cached run on local Ray with 2 scoring actors;
6. ``triton``: ``rospr serve`` on the twin, and a run with ``backend: triton`` against it.

Memory is reported per role (driver, scoring actor, retrieval actor, raylet/gcs, server): it should be
the model once per process that holds a session, and nothing for a process that does not. Each
process's last sample is recorded too (``last_rss_mib``): a first run's peak holds the export's
torch copy and its validation session together, and its last sample shows what scoring kept.
Writes ``benchmarks/results/scale.json`` and ``scale.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from rospr_bench.common import RESULTS, positive_int, write_result

log = logging.getLogger("bench_scale")
REPO = Path(__file__).resolve().parents[1]
ROSPR = [sys.executable, "-m", "rospr_harness.cli"]


def role(proc) -> str:
    """What a process of a step's tree is, from its command line."""
    try:
        cmd = " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - gone while we looked
        return "gone"
    for key, name in ROLES:
        if key in cmd:
            return name
    return "other"


# Most specific first. A Ray worker starts as default_worker.py (its arguments name the raylet) and
# retitles itself ray::<Actor> once it holds an actor: a process keeps the most specific role seen.
ROLES = (("ScoringActor", "scoring actor"), ("RetrievalActor", "retrieval actor"),
         ("tritonserver", "triton server"), ("triton_python_backend_stub", "triton stub"),
         ("ray::", "ray worker"), ("default_worker.py", "ray worker"), ("gcs_server", "ray system"),
         ("/raylet", "ray system"), ("dashboard", "ray system"), ("runtime_env", "ray system"),
         ("log_monitor", "ray system"), ("monitor.py", "ray system"))
RANK = {name: i for i, (_, name) in enumerate(ROLES)}


class Sampler:
    """Peak RSS per process of a tree (and per role), sampled in a thread."""

    def __init__(self, root_pid: int, interval: float = 0.2) -> None:
        import psutil

        self.psutil = psutil
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.peak: dict[int, tuple[str, int]] = {}
        self.last: dict[int, int] = {}  # the latest sample: what a process held at the end of its work
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except self.psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except self.psutil.Error:
                    continue
                if rss == 0:  # exited, not yet reaped: keep the last sample it had while alive
                    continue
                name = "driver" if p.pid == self.root.pid else role(p)
                old = self.peak.get(p.pid, (name, 0))
                keep = old[0] if RANK.get(old[0], 99) <= RANK.get(name, 99) else name
                self.peak[p.pid] = (keep, max(old[1], rss))
                self.last[p.pid] = rss
            self._stop.wait(self.interval)

    def stop(self) -> dict:
        """Peak RSS (MiB) per role, largest first."""
        self._stop.set()
        self._thread.join()
        return self._by_role({pid: rss for pid, (_, rss) in self.peak.items()})

    def last_by_role(self) -> dict:
        """Each process's RSS (MiB) at its last sample (within ``interval`` of its exit or of ``stop``),
        per role: a peak well above it was transient (an export's torch copy, say), one equal to it held."""
        return self._by_role(self.last)

    def _by_role(self, values: dict[int, int]) -> dict:
        by_role: dict[str, list[float]] = {}
        for pid, rss in values.items():
            by_role.setdefault(self.peak[pid][0], []).append(round(rss / 2**20, 1))
        return {name: sorted(v, reverse=True) for name, v in sorted(by_role.items())}


def step(name: str, argv: list[str], env: dict, log_dir: Path) -> dict:
    """Run one command, sampling its process tree; its wall time and peak RSS (MiB) per role."""
    log.info("%s: %s", name, " ".join(argv))
    out = open(log_dir / f"{name.replace(' ', '_')}.log", "w")
    t = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    sampler = Sampler(proc.pid)
    rc = proc.wait()
    wall = time.perf_counter() - t
    rss = sampler.stop()
    out.close()
    if rc != 0:
        tail = (log_dir / f"{name.replace(' ', '_')}.log").read_text()[-3000:]
        raise SystemExit(f"step {name!r} failed (exit {rc}):\n{tail}")
    row = {"step": name, "wall_s": round(wall, 1), "peak_rss_mib": rss, "last_rss_mib": sampler.last_by_role()}
    log.info("%s: %.1f s, %s", name, wall, rss)
    return row


def run_config(model: Path, rows: int) -> dict:
    return {
        "model": {"name_or_path": str(model)},
        "backend": "onnxruntime",
        "method": ["t0"],
        "tasks": [{"name": "builtin/sentiment", "limit": rows}, {"name": "builtin/topic", "limit": rows}],
        "scoring": {"batch_size": 8},
    }


def examples_per_s(run_dir: Path) -> tuple[int, float | None]:
    res = json.loads((run_dir / "results.json").read_text())
    n = sum(u["n"] for u in res["units"])
    driver_s = res.get("execution", {}).get("driver_s")
    return n, (round(n / driver_s, 2) if driver_s else None)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="large")
    ap.add_argument("--rows", type=positive_int, default=32, help="rows per task (two built-in tasks)")
    ap.add_argument("--skip-triton", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import yaml

    work = REPO / "build" / "bench_scale" / args.size
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    model = REPO / "build" / f"{args.size}-t0"
    env = {**os.environ, "ROSPR_ONNX_CACHE": str(work / "onnx-cache"), "PYTHONUNBUFFERED": "1"}
    rows: list[dict] = []
    if not (model / "config.json").is_file():
        rows.append(step("build", [*ROSPR, "tiny", "--size", args.size, "--out", str(model)], env, work / "logs"))
    weights = sum(p.stat().st_size for p in model.glob("*.safetensors"))
    # the Triton repository (graph + twin share one copy of the weights as external data) and the run's
    # export cache each hold the weights once more; a full disk half-way through wastes the export
    free = shutil.disk_usage(work).free
    if free < 3 * weights:
        raise ValueError(f"{work}: {free / 2**30:.1f} GiB free, the scale benchmark needs about "
                         f"{3 * weights / 2**30:.1f} GiB (the {weights / 2**30:.1f} GiB of weights exported twice, and room)")
    rows.append(step("export", [*ROSPR, "export", "--model", str(model), "--retriever", str(model),
                                "--out", str(work / "repo")], env, work / "logs"))
    config = work / "run.yaml"
    config.write_text(yaml.safe_dump(run_config(model, args.rows)))
    for name, extra in (("first run", []), ("cached run", []),
                        ("ray run (2 scoring actors)", ["--set", "ray.enabled=true", "--set", "ray.scorers=2"])):
        out = work / name.split(" (")[0].replace(" ", "_")
        row = step(name, [*ROSPR, "run", str(config), "--out", str(out), *extra], env, work / "logs")
        row["examples"], row["examples_per_s"] = examples_per_s(out)
        rows.append(row)
    if not args.skip_triton:
        from rospr_harness.serve import free_port

        http, grpc = free_port(), free_port()
        serve = subprocess.Popen([*ROSPR, "serve", "--repo", str(work / "repo"), "--http-port", str(http),
                                  "--grpc-port", str(grpc), "--startup-timeout", "900"], env=env, cwd=REPO,
                                 stdout=open(work / "logs" / "serve.log", "w"), stderr=subprocess.STDOUT)
        server = Sampler(serve.pid)
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and "ready" not in (work / "logs" / "serve.log").read_text():
                if serve.poll() is not None:
                    raise SystemExit("rospr serve exited:\n" + (work / "logs" / "serve.log").read_text()[-3000:])
                time.sleep(1)
            row = step("triton run", [*ROSPR, "run", str(config), "--out", str(work / "triton"), "--set",
                                      "backend=triton", "--set", f"triton.url=127.0.0.1:{grpc}"], env, work / "logs")
            row["examples"], row["examples_per_s"] = examples_per_s(work / "triton")
        finally:
            serve.terminate()
            serve.wait(timeout=120)
        row["server_peak_rss_mib"] = server.stop()
        row["server_last_rss_mib"] = server.last_by_role()
        rows.append(row)
    payload = {"size": args.size, "weights_bytes": weights, "rows_per_task": args.rows, "steps": rows}
    path = write_result("scale", payload, args.out)
    plot(json.loads(path.read_text()), path.with_suffix(".png"))
    for r in rows:
        print(f"{r['step']:>28}: {r['wall_s']:7.1f} s  peak RSS {r['peak_rss_mib']}"
              + (f"  server {r['server_peak_rss_mib']}" if "server_peak_rss_mib" in r else ""))


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.barh([s["step"] for s in steps], [s["wall_s"] for s in steps], color="#4c72b0")
    a.set_xlabel("wall time (s)")
    a.invert_yaxis()
    roles = sorted({r for s in steps for r in s["peak_rss_mib"]})
    left = [0.0] * len(steps)
    for r in roles:
        vals = [sum(s["peak_rss_mib"].get(r, [])) / 1024 for s in steps]
        b.barh([s["step"] for s in steps], vals, left=left, label=r)
        left = [x + v for x, v in zip(left, vals)]
    b.axvline(result["weights_bytes"] / 2**30, color="k", ls="--", lw=1, label="model weights")
    b.set_xlabel("peak RSS summed over processes (GiB)")
    b.invert_yaxis()
    b.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result['size']} model ({result['weights_bytes'] / 2**30:.1f} GiB float32) on "
                 f"{result['machine'].get('cores', '?')} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
