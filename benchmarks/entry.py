"""``rospr-bench NAME [flags]``: the benchmarks' own console entry (``rospr bench`` calls ``main``).

Each benchmark is a module ``bench_<name>`` with ``main(argv)``; its flags are its own
(``rospr-bench NAME --help``). Results go to ``benchmarks/results/`` unless ``--out`` says otherwise.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable

from rospr.errors import RosprError, StateError
from rospr_bench import (bench_backends, bench_batching, bench_fullrun, bench_fusions, bench_gpu, bench_grouping,
                         bench_latency, bench_lmeval, bench_peers, bench_profile, bench_retrieval, bench_scale, bench_scaling, bench_startup, bench_throughput,
                         bench_tune)

BENCHMARKS: dict[str, Callable[[list[str]], object]] = {
    "throughput": bench_throughput.main, "latency": bench_latency.main, "retrieval": bench_retrieval.main,
    "peers": bench_peers.main, "backends": bench_backends.main, "scaling": bench_scaling.main, "gpu": bench_gpu.main,
    "scale": bench_scale.main, "fullrun": bench_fullrun.main, "startup": bench_startup.main,
    "tune": bench_tune.main, "batching": bench_batching.main, "lmeval": bench_lmeval.main,
    "grouping": bench_grouping.main, "fusions": bench_fusions.main, "profile": bench_profile.main,
}
# How each benchmark names its model choice (``rospr bench NAME --model M`` passes it on); retrieval
# has none (its ``--sizes`` are library sizes).
MODEL_FLAGS = {"throughput": "--sizes", "latency": "--size", "peers": "--size", "backends": "--size",
               "scaling": "--size", "gpu": "--size", "scale": "--size", "fullrun": "--model", "startup": "--model",
               "tune": "--model", "batching": "--size", "lmeval": "--size", "grouping": "--model",
               "fusions": "--size", "profile": "--size"}
NOISY = ("transformers", "optimum", "torch", "datasets", "lm_eval", "faiss")


def model_args(name: str, model: str) -> list[str]:
    """The flags that give benchmark ``name`` the model ``model``. Refuses (``ValueError``) a benchmark
    without a model choice."""
    if name not in MODEL_FLAGS:
        raise ValueError(f"--model: the {name} benchmark has no model choice (see rospr-bench {name} --help)")
    return [MODEL_FLAGS[name], model]


def run(name: str, argv: list[str]) -> None:
    """Run the benchmark ``name`` with its own flags ``argv``. Refuses (``ValueError``) an unknown name."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.ERROR)
    BENCHMARKS[name](argv)


def _model_as_its_flag(name: str, argv: list[str]) -> list[str]:
    """``argv`` with ``--model M`` given as the flag of benchmark ``name`` (``model_args``), so that
    ``rospr-bench NAME --model M`` works for every benchmark with a model choice."""
    if name not in BENCHMARKS or "--model" not in argv or MODEL_FLAGS.get(name) == "--model":
        return argv
    i = argv.index("--model")
    return argv[:i] + model_args(name, argv[i + 1] if i + 1 < len(argv) else "") + argv[i + 2:]


def main(argv: list[str] | None = None) -> int:
    """Console entry: ``rospr-bench NAME [flags]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stderr.write(f"usage: rospr-bench {{{','.join(BENCHMARKS)}}} [flags of that benchmark]\n")
        return 0 if argv else 2
    try:
        run(argv[0], _model_as_its_flag(argv[0], argv[1:]))
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except StateError as exc:  # a figure refused after it was measured (an MFU above 100%), a failed check
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except RosprError as exc:  # another refusal before any work (gpu: no GPU here): one line, as `rospr` prints it
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
