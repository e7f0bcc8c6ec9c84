"""Profiling scripts (``rospr-bench NAME``, ``rospr bench NAME`` or ``python -m benchmarks.bench_NAME``).

Each writes JSON (with the machine's description) and a PNG plot into ``benchmarks/results/``;
peers are measured side by side in one process so the machine's noise cancels in the ratios.
"""
