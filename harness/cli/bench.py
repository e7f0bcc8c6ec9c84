"""``rospr bench NAME``: the ``rospr-bench`` console entry, found through the installed package's
entry points, so that the harness imports nothing of ``benchmarks/`` (dependencies point one way)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Optional

import typer

from rospr.errors import StateError

ENTRY = "rospr-bench"


def bench(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="throughput | latency | retrieval | peers | backends | scaling | gpu | "
                                         "scale | fullrun | startup | tune | batching | lmeval | grouping | fusions | profile"),
    model: Optional[str] = typer.Option(None, "--model", help="the model the benchmark uses: tiny, small (large: scale)"),
    out: Optional[Path] = typer.Option(None, "--out", help="results folder (default benchmarks/results)"),
) -> None:
    """Run a benchmark of benchmarks/ (JSON + PNG into benchmarks/results/); extra flags go to it
    (the same as ``rospr-bench NAME``)."""
    argv = [name, *ctx.args]
    if model is not None:
        argv += ["--model", model]
    if out is not None:
        argv += ["--out", str(out)]
    raise typer.Exit(bench_entry()(argv) or 0)


def bench_entry() -> Callable[[list[str]], int]:
    """The ``main(argv)`` of the ``rospr-bench`` console script; refuses (``StateError``) an
    installation without it."""
    found = entry_points(group="console_scripts", name=ENTRY)
    if not found:
        raise StateError(f"{ENTRY}: no such console script in this environment; install rospr with its "
                         "benchmarks (pip install -e .)")
    return next(iter(found)).load()
