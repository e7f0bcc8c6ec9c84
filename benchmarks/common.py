"""What every benchmark records: the machine, the versions, and where results go."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
# The load average when the benchmark started (this module is imported first) and when it wrote its
# result: figures from a busy machine are recorded as such, not passed off as quiet ones.
START_LOAD = os.getloadavg()


def script_logging(*noisy: str) -> None:
    """How a benchmark run as a script logs: its own INFO lines, only errors of the libraries it drives."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in noisy or ("transformers", "optimum", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """Lay out, write and close a benchmark's matplotlib figure (closed: a long benchmark keeps no figures)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def warn_if_busy(start: tuple[float, ...]) -> None:
    """Log a warning when the machine was busy as the benchmark started (said with its result, so that
    a benchmark refused for a missing prerequisite prints its one error line only). The load at the
    end is recorded, not judged: it is mostly the benchmark's own."""
    cores = os.cpu_count() or 1
    if start[0] > 0.5 * cores:
        logging.getLogger("rospr_bench").warning(
            "load average %.2f on %d cores when this benchmark started: other work shared the machine, so "
            "times may be pessimistic and ratios skewed (the JSON records the load)", start[0], cores)


def _checked(kind, test, what):
    def parse(text: str):
        import argparse

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    parse.__name__ = what  # argparse names the type in its message
    return parse


# argparse types for the benchmarks' counts: a count of 0 or less is refused by argparse (exit 2, one
# line naming the flag) before anything is built or timed
positive_int = _checked(int, lambda v: v >= 1, "a whole number of 1 or more")
non_negative_int = _checked(int, lambda v: v >= 0, "a whole number of 0 or more")
positive_float = _checked(float, lambda v: v > 0 and v != float("inf"), "a number above 0")
non_negative_float = _checked(float, lambda v: 0 <= v < float("inf"), "a number of 0 or more")


def product_backend(name: str, model: str | Path, threads: int | None = None, device: str = "cpu", **sections):
    """The product's ``Backend`` ``name`` (torch, onnxruntime, triton) of checkpoint ``model``, built by
    ``rospr_harness.backends.create_backend`` as a run builds it, so a benchmark times the scorers runs use.
    ``threads``: intra-op threads (``scoring.threads``; 0 or None: the backend's default); ``sections``:
    more run-config sections (``triton={"url": ..., "concurrency": c}``)."""
    from rospr_harness.backends import create_backend
    from rospr_harness.config import load_config

    tree = {"model": {"name_or_path": str(model), "device": device}, "backend": name,
            "scoring": {"threads": threads or None}, **sections,
            "tasks": ["builtin/sentiment"]}  # a run config names a task; building a backend reads none
    return create_backend(load_config(None, tree=tree))


def machine() -> dict:
    """CPU model, cores, memory, and the versions of the libraries that do the work."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    from rospr_harness.provenance import git_state, package_versions

    rev, dirty = git_state(ignore=("benchmarks/results",))  # the benchmarks' own results are not code measured
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_revision": rev,
        "git_dirty": dirty,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_at_start": [round(x, 2) for x in START_LOAD],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(name: str, payload: dict, out_dir: Path | None = None) -> Path:
    out_dir = Path(out_dir or RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **payload}
    warn_if_busy(START_LOAD)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
