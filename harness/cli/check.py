"""``rospr schema``, ``rospr verify`` and ``rospr compare``: check what a run or an export wrote, compare runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from rospr_harness.cli.common import err
from rospr.destination import claim_file
from rospr.errors import SettingError

MAX_BOOT = 1_000_000  # bootstrap replicates: past this the interval does not move, the run only takes longer


def schema() -> None:
    """Print the JSON schema of results.json."""
    from rospr_harness.schema import ResultsFile

    typer.echo(json.dumps(ResultsFile.model_json_schema(), indent=2))


def verify(
    paths: List[Path] = typer.Argument(..., help="run directories, ONNX export folders or an ONNX export cache"),
) -> None:
    """Check every byte: a run's records against their sha256 and figures, an export's files against
    its sealed manifest and its validation figures. Prints one line per problem; exit 1 when there is one."""
    from rospr_harness.runner.verify import verify_run
    from rospr_export.manifest import ExportIntegrityError, verify_export

    problems, checked = [], 0
    for path in paths:
        if (path / "results.json").is_file():
            try:
                problems += verify_run(path)
            except ValueError as exc:  # a run too damaged to check file by file: that is its problem line
                problems.append(str(exc))
            checked += 1
            continue
        exports = _exports(path)
        if not exports:
            raise SettingError(f"{path}: neither a run directory (results.json) nor an ONNX export (manifest.json) "
                               "nor a folder of exports")
        for folder in exports:
            try:
                verify_export(folder, full=True)
            except ExportIntegrityError as exc:  # a problem found is a line of the report, not a failure
                problems.append(str(exc))
            checked += 1
    for p in problems:
        err.print(f"[bold red]failed:[/] {escape(p)}", markup=True, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    err.print(f"verified {checked} artifact(s): every file matches its sha256 and every manifest its seal")


def _exports(path: Path) -> list[Path]:
    """``path`` when it is an export (manifest.json), else the exports it holds (an export cache)."""
    if (path / "manifest.json").is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(d for d in path.iterdir() if (d / "manifest.json").is_file() and not d.name.startswith("."))


def compare(
    run_dir: Path = typer.Argument(..., help="the run to check"),
    baseline: Optional[str] = typer.Option(None, "--baseline", help="published baseline: t0_3b or t0_11b"),
    against: Optional[Path] = typer.Option(None, "--against", help="an older run on the same examples"),
    method: Optional[str] = typer.Option(None, "--method", help="which method of the run(s) to compare"),
    threshold: float = typer.Option(1.0, "--threshold", help="regression threshold in accuracy points"),
    alpha: float = typer.Option(0.05, "--alpha", help="significance level (two-sided)"),
    test: str = typer.Option("bootstrap", "--test", help="against a run: bootstrap (paired) or mcnemar"),
    n_boot: int = typer.Option(2000, "--n-boot", help="bootstrap replicates"),
    seed: int = typer.Option(0, "--seed"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the comparison as JSON"),
) -> None:
    """Accuracy deltas with bootstrap intervals; exit 1 on a significant regression over the threshold."""
    from rospr_harness.compare import (compare_runs, compare_to_baseline, is_comparison_file, load_baseline,
                                       load_run_scores)
    from rospr_harness.schema import atomic_write_text

    if (baseline is None) == (against is None):
        raise SettingError("give exactly one of --baseline NAME or --against RUN_DIR")
    _check_compare_args(threshold, alpha, n_boot, seed)
    if json_out:  # before any work: never the run read, nor a file that is not a comparison of ours
        claim_file(json_out, fix="give --json a new file name (outside the runs compared)", ours=is_comparison_file,
                   inputs=[Path(d) / "results.json" for d in (run_dir, against) if d is not None])
    new = load_run_scores(run_dir, method)
    if baseline is not None:
        cmp = compare_to_baseline(new, load_baseline(baseline), threshold / 100, alpha, n_boot, seed)
    else:
        cmp = compare_runs(new, load_run_scores(against, method), threshold / 100, alpha, n_boot, seed, test)
    out = Console()
    out.print(_table(run_dir, cmp, alpha))
    if cmp.missing:
        out.print(f"not compared (absent from one side): {', '.join(cmp.missing)}")
    if cmp.empty:
        out.print(f"not compared (no scorable row, every row skipped): {', '.join(cmp.empty)}")
    if json_out:
        atomic_write_text(json_out, json.dumps(cmp.as_dict(), indent=2))
    if cmp.regressions:
        out.print(f"[bold red]{len(cmp.regressions)} significant regression(s) larger than {threshold} points:[/] "
                  + ", ".join(r.task + (f" / {r.prompt}" if r.prompt else "") for r in cmp.regressions))
        raise typer.Exit(1)
    out.print("no significant regression over the threshold")


def _table(run_dir: Path, cmp, alpha: float):
    from rich.table import Table

    table = Table(title=f"{run_dir} vs {cmp.reference} (accuracy %, {100 * (1 - alpha):.0f}% interval of the delta)")
    for col in ("task", "prompt", "reference", "new", "delta", "interval", "p", "n", ""):
        table.add_column(col, justify="left" if col in ("task", "prompt") else "right")
    for r in cmp.rows:
        table.add_row(r.task, r.prompt or "[b]all[/]", f"{100 * r.reference:.1f}", f"{100 * r.new:.1f}",
                      f"{100 * r.delta:+.1f}", f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]",
                      "" if r.p_value is None else f"{r.p_value:.3g}", str(r.n),
                      "[bold red]REGRESSION[/]" if r.regression else "")
    return table


def _check_compare_args(threshold: float, alpha: float, n_boot: int, seed: int) -> None:
    """Refuse (``SettingError``) compare flags that would crash, hang or judge nothing."""
    if not (math.isfinite(threshold) and threshold >= 0):
        raise SettingError(f"--threshold {threshold}: give a number of accuracy points, 0 or more (e.g. 1.0)")
    if not (0 < alpha < 1):
        raise SettingError(f"--alpha {alpha}: give a significance level between 0 and 1, exclusive (e.g. 0.05)")
    if not 1 <= n_boot <= MAX_BOOT:
        raise SettingError(f"--n-boot {n_boot}: give a number of bootstrap replicates from 1 to {MAX_BOOT} (e.g. 2000)")
    if not 0 <= seed < 2**32:
        raise SettingError(f"--seed {seed}: give a seed from 0 to 2**32-1")
