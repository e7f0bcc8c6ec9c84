"""``rospr run`` and ``rospr plan``: evaluate a config, or say what evaluating it would cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from rospr_harness.cli.common import err, setup_logging
from rospr.errors import SettingError


class _Bar:
    """A rich progress bar fed by the runner's observer callbacks."""

    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.task = None

    def start(self, total_units: int) -> None:
        self.examples = 0
        self.task = self.p.add_task("units", total=total_units)

    def advance(self, n: int) -> None:
        self.examples += n
        self.p.update(self.task, description=f"units ({self.examples} examples scored)")

    def unit_done(self, unit) -> None:
        acc = "–" if unit.accuracy is None else f"{100 * unit.accuracy:.1f}%"
        note = "  (reused from cache)" if getattr(unit, "cached", False) else ""
        from rospr_harness.report import without_prompt

        if without_prompt(unit):  # a RoSPr method's unit with no prompt chosen: T0's figure under its name
            note += f"  (NO soft prompt: scored on the T0 input; {unit.retrieval.note or 'no prompt chosen'})"
        # data, not markup: a prompt named "[...]" prints as it is (and markup parsing cost ~0.3 ms a unit)
        self.p.console.print(f"{unit.method:>6}  {unit.task} / {unit.prompt}: {acc} on {unit.n}{note}", markup=False,
                             highlight=False)
        self.p.advance(self.task, 1)


def _related(a: str, b: str) -> bool:
    """Whether two dotted config keys are the same or one holds the other (``tasks`` and ``tasks.0.limit``)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _sets_a_limit(key: str) -> bool:
    """Whether a ``--set`` of ``key`` sets some task's limit: ``tasks``, ``tasks.I`` or ``tasks.I.limit``."""
    parts = key.split(".")
    return parts[0] == "tasks" and (len(parts) <= 2 or parts[2:] == ["limit"])


def shortcut_overrides(config: Path, set_: list[str], tasks: str | None, limit: int | None,
                       model: str | None) -> list[str]:
    """The ``--set`` overrides that ``--tasks``, ``--limit`` and ``--model`` stand for, exactly:
    ``tasks=[{"name": A}, ...]``, ``tasks.I.limit=N`` for every task I (of the config after ``--set`` and
    ``--tasks``) and ``model.name_or_path="PATH"``, values JSON-quoted (so a name is never read as a
    number or a null). Refuses (``SettingError``, one line) a shortcut given with a ``--set`` of its
    key (or of a key holding it, or held by it) and an empty task name."""
    from rospr_harness.config import load_config

    shortcuts: list[tuple[str, str, list[str]]] = []  # (flag, the key it sets, its --set strings)
    if tasks is not None:
        names = [t.strip() for t in tasks.split(",")]
        if not all(names):
            raise SettingError(f"--tasks {tasks!r}: an empty task name; give names separated by commas "
                               "(--tasks rte,copa)")
        shortcuts.append(("--tasks", "tasks", [f"tasks={json.dumps([{'name': n} for n in names])}"]))
    if model is not None:
        shortcuts.append(("--model", "model.name_or_path", [f"model.name_or_path={json.dumps(model)}"]))
    if limit is not None:
        shortcuts.append(("--limit", "tasks.I.limit", []))  # one per task I, counted below
    given = [item.split("=", 1)[0].strip() for item in set_]
    for flag, key, _ in shortcuts:
        clash = next((k for k in given if (_sets_a_limit(k) if flag == "--limit" else _related(k, key))), None)
        if clash is not None:
            raise SettingError(f"{flag} and --set {clash}=... both set {key}: give one of them")
    out = [s for _, _, sets in shortcuts for s in sets]
    if limit is not None:
        n_tasks = len(load_config(config, set_ + out).tasks)
        out += [f"tasks.{i}.limit={limit}" for i in range(n_tasks)]
    return out


def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<config name>)"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: key.path=value (repeatable)"),
    tasks: Optional[str] = typer.Option(None, "--tasks", help="comma-separated tasks, the config's replaced: "
                                        "--set tasks=[{\"name\": A}, ...]"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="first N rows of every task: "
                                        "--set tasks.I.limit=N for each task I"),
    model: Optional[str] = typer.Option(None, "--model", help="hub name or checkpoint directory: "
                                        "--set model.name_or_path=PATH"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="finish the interrupted run in this directory "
                                          "(its finished units are kept; the config must be the same)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate every (task, prompt) unit of CONFIG and write results.json, records/ and report.md.
    ``--tasks``, ``--limit`` and ``--model`` are the ``--set`` overrides they name, recorded as such
    (results.json ``provenance.overrides``)."""
    setup_logging(verbose)
    from rospr_harness.config import load_config
    from rospr_harness.schema import Execution
    from rospr_harness.report import marked, method_units
    from rospr_harness.runner import run as run_config

    if resume is not None and out is not None and resume.resolve() != out.resolve():
        raise SettingError(f"--resume {resume} and --out {out}: give one run directory")
    overrides = list(set_) + shortcut_overrides(config, list(set_), tasks, limit, model)
    cfg = load_config(config, overrides)
    out_dir = resume or out or Path("runs") / config.stem
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err) as progress:
        res = run_config(cfg, out_dir, observer=_Bar(progress), resume=resume is not None, overrides=overrides)
    for method, acc in res.overall.items():
        err.print(marked(f"{method}: mean accuracy over tasks {100 * acc:.2f}%", method_units(res, method)))
    ex = res.execution or Execution(executor="in_process")
    err.print(f"wrote {out_dir}/results.json, {out_dir}/report.md and {len(res.units)} records files "
              f"({ex.computed} units computed, {ex.cached} from the cache, {ex.resumed} kept from the interrupted run)")


def plan(
    config: Path = typer.Argument(..., help="YAML run config"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: key.path=value (repeatable)"),
    tflops: Optional[float] = typer.Option(None, "--tflops", help="throughput for the time estimate, TFLOP/s "
                                           "(default: a one-second GEMM measured here)"),
    json_out: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    lengths: str = typer.Option("rows", "--lengths", help="tuning FLOPs from the rows' token lengths (rows) or "
                                "every row at rospr.tune.max_input_tokens / max_target_tokens (maximum)"),
    units: bool = typer.Option(False, "--units", help="list every unit"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """What `rospr run CONFIG` would score, tune, reuse and cost (FLOPs, time); runs and writes nothing."""
    setup_logging(verbose)
    from rospr_harness.config import load_config
    from rospr_harness.runner.estimate import estimate_run

    est = estimate_run(load_config(config, set_), tflops=tflops, lengths=lengths)
    if json_out:
        typer.echo(json.dumps(est.as_dict(), indent=1))
        return
    _print_plan(config, est, units)


def _length_source(tu) -> str:
    """How the plan counted tuning's tokens, in words."""
    if tu.length_source == "maximum":
        return "every row at the maximum (--lengths maximum: an upper bound)"
    grouped = "grouped by length" if tu.group_by_length else "shuffled"
    return (f"the rows' own (batches {grouped}, each padded to its longest input): {tu.input_tokens} input tokens, "
            f"{tu.padded_input_tokens} with padding")


def _print_plan(config: Path, est, list_units: bool) -> None:
    from rich.table import Table

    out, t = Console(), est.totals()
    tf = lambda x: f"{x:.3g}"  # noqa: E731
    out.print(f"plan of {config} (config {est.config_hash}): model {est.model}, backend {est.backend}", highlight=False)
    out.print(f"units: {t['units']} ({t['units_cached']} in the unit cache, {t['units_to_compute']} to compute); "
              f"examples {t['examples']}, answer choices {t['choices']} ({t['choice_tokens']} choice tokens)",
              highlight=False)
    if est.tuning:
        tu = est.tuning
        out.print(f"tuning: {tu.jobs} source prompts; bank {tu.bank}: {len(tu.reused)} reused, {len(tu.to_train)} "
                  f"to train ({tu.steps} steps x batch {tu.batch_size} in micro-batches of {tu.micro_batch}"
                  + (", gradient checkpointing" if tu.checkpointing else "") + ")"
                  + ("" if est.prepares else "; not run: every unit is cached"), highlight=False)
        out.print(f"tuning lengths: {_length_source(tu)}; its time below is computed (FLOPs / throughput), "
                  "not measured", highlight=False)
    if est.retrieval:
        r = est.retrieval
        out.print(f"library {r.library}: {r.library_status}" + (f" ({r.library_keys} keys to embed)" if r.library_keys
                                                                 else ""), highlight=False)
        out.print(f"retrieval: {r.queries} queries over {r.targets} targets; VAR at most {r.var_candidates_max} "
                  f"candidates, {r.var_rows_max} query rows scored", highlight=False)
    out.print(f"onnx export: {est.onnx_export}", highlight=False)
    out.print(f"unit cache: {est.unit_cache}", highlight=False)
    for note in est.notes:
        out.print(f"note: {note}", highlight=False)
    table = Table(title=f"to compute at {est.throughput.tflops:.3g} TFLOP/s ({est.throughput.source})")
    for col in ("stage", "forward FLOPs", "backward FLOPs", "total", "time"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    seconds = est.seconds()
    for stage, f in est.flops().items():
        table.add_row(stage, tf(f.forward), tf(f.backward), tf(f.total), _duration(seconds[stage]))
    table.add_row("[b]all[/]", "", "", tf(t["flops"]), _duration(t["seconds"]))
    out.print(table)
    if list_units:
        for u in est.units:
            mark = {True: "cached", False: "compute", None: "compute (cache unknown)"}[u.cached]
            out.print(f"{u.method:>16}  {u.task} / {u.prompt}: {u.examples} examples, {u.choices} choices, "
                      f"{tf(u.flops)} FLOPs, {mark}", highlight=False)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.3g} s"
