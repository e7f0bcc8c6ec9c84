"""The ``rospr`` command: a thin layer over library functions (each command is one call).

A failure of any command is one ``error:`` line on stderr naming the file or config field and the fix
(``describe_error``), exit code 2, no traceback; ``ROSPR_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional

import click
import typer
import typer.core
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

err = Console(stderr=True)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("transformers", "datasets", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(exc: Exception) -> None:
    """Print ``exc`` as one ``error:`` line and exit 2; with ``ROSPR_TRACEBACK=1``, raise it instead."""
    from rich.markup import escape

    if os.environ.get("ROSPR_TRACEBACK"):
        raise exc
    err.print(f"[bold red]error:[/] {escape(describe_error(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(2)


_OS_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space there or write somewhere else (--out, or the "
                  "cache directories: ROSPR_ONNX_CACHE, ROSPR_UNIT_CACHE)",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else (--out)",
    errno.EACCES: "permission denied; choose a folder you can write (--out) or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write (--out) or fix its permissions",
    errno.EROFS: "read-only file system; choose a writable folder (--out)",
    errno.ENOENT: "no such file or directory; check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "is a folder where a file is expected; check the path",
    errno.EEXIST: "already exists where a folder is needed; choose another path (--out)",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def describe_error(exc: BaseException) -> str:
    """The message a user sees for ``exc``: its own message for the project's errors (they name the
    file, field and fix), the file and a fix for an ``OSError`` (found in the exception's causes when
    a library wrapped it), the type and message of anything else."""
    chain, seen = [exc], {id(exc)}
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
    for e in chain:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return f"{e.filename or '(a file being written)'}: {_OS_FIXES[e.errno]}"
    if isinstance(exc, OSError) and exc.errno is not None:
        fix = _OS_FIXES.get(exc.errno, exc.strerror or str(exc))
        where = exc.filename if exc.filename is not None else "(file not named by the system)"
        return f"{where}: {fix}"
    if isinstance(exc, MemoryError):
        return "out of memory; lower scoring.batch_size or ray.scorers, or use a smaller model"
    remote = _remote_cause(exc)
    if remote is not None:  # an error of a Ray actor: its own message, not Ray's remote traceback
        cause, ours = remote
        text = str(cause).strip()
        return text if text and ours else _unexpected(cause, text)
    if "pydantic" in sys.modules:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):  # a settings model validated outside load_config
            from harness.config import format_validation_error

            return format_validation_error(exc, exc.title)
    text = str(exc).strip()
    if text and is_refusal(exc):
        return text  # the project's own messages name the file, the field and the fix
    return _unexpected(exc, text)


def _unexpected(exc: BaseException, text: str) -> str:
    return f"{type(exc).__name__}: {text or '(no message)'} (an unexpected error; set ROSPR_TRACEBACK=1 to see " \
           "where it came from and report it)"


# The one place that says which errors are the project's refusals (a common base class replaces it
# with the runner redesign): every exception type defined in our packages, and these built-in types
# when our code raised them (or the CLI made them, never raised, for _fail) with a message of ours.
OUR_PACKAGES = ("harness", "rospr", "rospr_export", "rospr_bench")
REFUSAL_BUILTINS = (ValueError, RuntimeError, OSError)


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the project's refusals (its message names the file, field and fix),
    not a bug: its type is defined in our packages, or it is a ``REFUSAL_BUILTINS`` raised by our code."""
    if _ours(type(exc).__module__):
        return True
    if not isinstance(exc, REFUSAL_BUILTINS):
        return False
    return exc.__traceback__ is None or _raised_by_us(exc)


def _ours(module: str) -> bool:
    return module.split(".")[0] in OUR_PACKAGES


def _raised_by_us(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the project's code (its innermost frame is ours)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and _ours(tb.tb_frame.f_globals.get("__name__", ""))


def _remote_cause(exc: BaseException) -> tuple[BaseException, bool] | None:
    """For an error raised in a Ray actor or task: the original exception, and whether it is our
    refusal (by its type, or a built-in one whose remote traceback ends in our code)."""
    if "ray" not in sys.modules:
        return None
    from ray.exceptions import RayTaskError

    if not isinstance(exc, RayTaskError):
        return None
    cause = getattr(exc, "cause", None) or exc
    if _ours(type(cause).__module__) and not isinstance(cause, RayTaskError):
        return cause, True
    frames = [ln.strip() for ln in str(getattr(exc, "traceback_str", None) or exc).splitlines() if ln.strip().startswith("File ")]
    last = frames[-1] if frames else ""
    mine = any(f"/{pkg}/" in last for pkg in ("harness", "rospr", "export", "benchmarks"))
    return cause, isinstance(cause, REFUSAL_BUILTINS) and mine


class _OneLineErrors(typer.core.TyperGroup):
    """Every command's failure is a message and exit code 2, never a traceback (ROSPR_TRACEBACK=1 shows it)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # the reader went away (`rospr tasks | head`): nothing left to say to it
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail on the pipe again
            raise typer.Exit(0)
        except Exception as exc:
            if os.environ.get("ROSPR_TRACEBACK"):
                raise
            _fail(exc)


app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate RoSPr (Retrieval of Soft Prompt) at scale.")


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
        self.p.console.print(f"{unit.method:>6}  {unit.task} / {unit.prompt}: {acc} on {unit.n}{note}")
        self.p.advance(self.task, 1)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML run config"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/<config name>)"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: key.path=value (repeatable)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="finish the interrupted run in this directory "
                                          "(its finished units are kept; the config must be the same)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Evaluate every (task, prompt) unit of CONFIG and write results.json, records/ and report.md."""
    _setup_logging(verbose)
    from harness.backends import BackendUnavailable
    from harness.config import ConfigError, load_config
    from harness.runner import RunLocked, run as run_config
    from harness.tasks.base import TaskError

    if resume is not None and out is not None and resume.resolve() != out.resolve():
        _fail(ValueError(f"--resume {resume} and --out {out}: give one run directory"))
    try:
        cfg = load_config(config, set_)
        out_dir = resume or out or Path("runs") / config.stem
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err) as progress:
            res = run_config(cfg, out_dir, observer=_Bar(progress), resume=resume is not None)
    except (ConfigError, TaskError, ValueError, FileNotFoundError, BackendUnavailable, RunLocked) as exc:
        _fail(exc)
    for method, acc in res.overall.items():
        err.print(f"{method}: mean accuracy over tasks {100 * acc:.2f}%")
    ex = res.execution or {}
    err.print(f"wrote {out_dir}/results.json, {out_dir}/report.md and {len(res.units)} records files "
              f"({ex.get('computed', 0)} units computed, {ex.get('cached', 0)} from the cache, "
              f"{ex.get('resumed', 0)} kept from the interrupted run)")


@app.command()
def plan(
    config: Path = typer.Argument(..., help="YAML run config"),
    set_: List[str] = typer.Option([], "--set", help="override a config key: key.path=value (repeatable)"),
    tflops: Optional[float] = typer.Option(None, "--tflops", help="throughput for the time estimate, TFLOP/s "
                                           "(default: a one-second GEMM measured here)"),
    json_out: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    units: bool = typer.Option(False, "--units", help="list every unit"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """What `rospr run CONFIG` would score, tune, reuse and cost (FLOPs, time); runs and writes nothing."""
    _setup_logging(verbose)
    from harness.config import load_config
    from harness.runner.estimate import estimate_run

    est = estimate_run(load_config(config, set_), tflops=tflops)
    if json_out:
        typer.echo(json.dumps(est.as_dict(), indent=1))
        return
    _print_plan(config, est, units)


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


@app.command()
def tiny(
    out: Path = typer.Option(..., "--out", help="checkpoint directory to write"),
    size: str = typer.Option("tiny", "--size", help="tiny (tests), small (t5-small sized, benchmarks) or large (T5 v1.1-large shape, 3.1 GB: scale tests)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build the offline T5 v1.1-style model and tokenizer (a Hugging Face checkpoint directory)."""
    _setup_logging(False)
    from harness.tiny_model import build_tiny

    try:
        path = build_tiny(out, size=size, seed=seed)
    except ValueError as exc:
        _fail(exc)
    err.print(f"wrote {size} model to {path}")


@app.command()
def tasks(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="root laid out like shared/data"),
    group: Optional[str] = typer.Option(None, "--group", help="list a group's tasks: t0_train, heldout, bigbench, builtin"),
    name: Optional[str] = typer.Argument(None, help="a task: list its prompts"),
) -> None:
    """List the known tasks, a group's tasks, or the prompts of one task.

    A task's prompts are marked: ``original`` (original_task: true, T0's evaluation prompts) and
    ``training only`` (a template without answer choices: tuned on, never scored)."""
    from harness.tasks import PromptsourceTask, get_task, group as task_group, list_tasks
    from harness.tasks.base import DataSettings, TaskError

    settings = DataSettings.from_env(data_dir)
    try:
        if group is not None:
            if name is not None:
                raise TaskError("give a task or --group, not both")
            lines = task_group(group)
        elif name is None:
            lines = list_tasks(settings)
        else:
            task = get_task(name, settings)
            if isinstance(task, PromptsourceTask):
                lines = []
                for t in task.templates():
                    marks = ["original"] if t.original_task else []
                    if t.answer_choices is None:
                        marks.append("training only")
                    lines.append(t.name + (f"\t[{', '.join(marks)}]" if marks else ""))
            else:
                lines = task.prompts()
    except TaskError as exc:
        _fail(exc)
    for line in lines:
        typer.echo(line)


@app.command()
def schema() -> None:
    """Print the JSON schema of results.json."""
    from harness.results import ResultsFile

    typer.echo(json.dumps(ResultsFile.model_json_schema(), indent=2))

@app.command()
def verify(
    paths: List[Path] = typer.Argument(..., help="run directories, ONNX export folders or an ONNX export cache"),
) -> None:
    """Check every byte: a run's records against their sha256 and figures, an export's files against
    its sealed manifest and its validation figures. Prints one line per problem; exit 1 when there is one."""
    from rich.markup import escape

    from rospr_export.export import ExportIntegrityError, verify_export
    from harness.runner.rundir import verify_run

    problems, checked = [], 0
    for path in paths:
        if (path / "results.json").is_file():
            try:
                problems += verify_run(path)
            except ValueError as exc:
                problems.append(str(exc))
            checked += 1
            continue
        exports = [path] if (path / "manifest.json").is_file() else sorted(
            d for d in path.iterdir() if (d / "manifest.json").is_file() and not d.name.startswith(".")
        ) if path.is_dir() else []
        if not exports:
            _fail(ValueError(f"{path}: neither a run directory (results.json) nor an ONNX export (manifest.json) "
                             "nor a folder of exports"))
        for folder in exports:
            try:
                verify_export(folder, full=True)
            except ExportIntegrityError as exc:
                problems.append(str(exc))
            checked += 1
    for p in problems:
        err.print(f"[bold red]failed:[/] {escape(p)}", markup=True, highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    err.print(f"verified {checked} artifact(s): every file matches its sha256 and every manifest its seal")


@app.command()
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
    from rich.table import Table

    from harness.compare import compare_runs, compare_to_baseline, load_baseline, load_run_scores
    from harness.results import atomic_write_text

    if (baseline is None) == (against is None):
        _fail(ValueError("give exactly one of --baseline NAME or --against RUN_DIR"))
    _check_compare_args(threshold, alpha, n_boot, seed)
    try:
        new = load_run_scores(run_dir, method)
        if baseline is not None:
            cmp = compare_to_baseline(new, load_baseline(baseline), threshold / 100, alpha, n_boot, seed)
        else:
            old = load_run_scores(against, method)
            cmp = compare_runs(new, old, threshold / 100, alpha, n_boot, seed, test)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    out = Console()
    table = Table(title=f"{run_dir} vs {cmp.reference} (accuracy %, {100 * (1 - alpha):.0f}% interval of the delta)")
    for col in ("task", "prompt", "reference", "new", "delta", "interval", "p", "n", ""):
        table.add_column(col, justify="left" if col in ("task", "prompt") else "right")
    for r in cmp.rows:
        table.add_row(r.task, r.prompt or "[b]all[/]", f"{100 * r.reference:.1f}", f"{100 * r.new:.1f}",
                      f"{100 * r.delta:+.1f}", f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]",
                      "" if r.p_value is None else f"{r.p_value:.3g}", str(r.n),
                      "[bold red]REGRESSION[/]" if r.regression else "")
    out.print(table)
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


MAX_BOOT = 1_000_000  # bootstrap replicates: past this the interval does not move, the run only takes longer


def _check_compare_args(threshold: float, alpha: float, n_boot: int, seed: int) -> None:
    """Refuse (one line, exit 2) compare flags that would crash, hang or judge nothing."""
    import math

    if not (math.isfinite(threshold) and threshold >= 0):
        _fail(ValueError(f"--threshold {threshold}: give a number of accuracy points, 0 or more (e.g. 1.0)"))
    if not (0 < alpha < 1):
        _fail(ValueError(f"--alpha {alpha}: give a significance level between 0 and 1, exclusive (e.g. 0.05)"))
    if not 1 <= n_boot <= MAX_BOOT:
        _fail(ValueError(f"--n-boot {n_boot}: give a number of bootstrap replicates from 1 to {MAX_BOOT} (e.g. 2000)"))
    if not 0 <= seed < 2**32:
        _fail(ValueError(f"--seed {seed}: give a seed from 0 to 2**32-1"))


@app.command("export")
def export_cmd(
    model: str = typer.Option(..., "--model", help="checkpoint directory or hub name of the scorer (T0)"),
    retriever: Optional[str] = typer.Option(None, "--retriever", help="encoder checkpoint of the retriever"),
    out: Path = typer.Option(Path("model_repo_build"), "--out", help="model repository to build"),
    dtype: str = typer.Option("float32", "--dtype", help="float32, or float16 / bfloat16 for GPU serving"),
    prompt_dtype: Optional[str] = typer.Option(None, "--prompt-dtype", help="prompt_embeds input: float32 or float16"),
    external_data: Optional[bool] = typer.Option(None, "--external-data/--no-external-data",
                                                 help="weights beside the graph (default: when over 2 GB)"),
    device: str = typer.Option("cpu", "--device", help="where to trace (cuda for half precision)"),
) -> None:
    """Export the t0_scorer (and retriever) graphs, check them against PyTorch, write OUT/{onnx,triton,twin}."""
    _setup_logging(False)
    from rospr_export.export import ExportValidationError, export_models
    from rospr_export.repository import write_repository

    try:
        res = export_models(model, out / "onnx", retriever=retriever, dtype=dtype, prompt_dtype=prompt_dtype,
                            external_data=external_data, device=device)
        write_repository(out / "onnx", out)
    except (ExportValidationError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    for v in res.validations:
        err.print(f"{v.graph}: max |onnx - torch| = {v.max_abs_diff:.3g} over shapes {v.shapes} (tolerance {v.tolerance:g})")
    err.print(f"wrote {out}/triton (onnxruntime backend, NGC image), {out}/twin (python backend, `rospr serve`)")


@app.command("serve")
def serve_cmd(
    repo: Path = typer.Option(Path("model_repo_build"), "--repo", help="a `rospr export` folder or a repository"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback unless told otherwise)"),
    http_port: int = typer.Option(8000, "--http-port", help="0: a free port"),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="0: a free port"),
    startup_timeout: float = typer.Option(120.0, "--startup-timeout", help="seconds to wait for readiness"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Triton's verbose log"),
) -> None:
    """Serve the twin repository with the tritonserver of the nvidia-pytriton wheel until Ctrl-C / SIGTERM."""
    import signal
    import time

    _setup_logging(verbose)
    from harness.serve import ServerError, TritonServer

    def _terminate(signum, frame):  # SIGTERM stops like Ctrl-C: through the finally below
        raise KeyboardInterrupt

    for flag, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if not 0 <= port <= 65535:
            _fail(ValueError(f"{flag} {port}: give a TCP port, 1 to 65535 (0: a free one)"))
    if not 0 < startup_timeout <= 3600:
        _fail(ValueError(f"--startup-timeout {startup_timeout}: give seconds, more than 0 and at most 3600"))
    signal.signal(signal.SIGTERM, _terminate)
    server = None
    try:
        server = TritonServer(repo, host, http_port or None, grpc_port or None, startup_timeout, int(verbose))
        server.start()
        err.print(f"Triton ready: grpc {server.grpc_url}, http {server.http_url} (tritonserver pid "
                  f"{server.process.pid}, work dir {server.workdir}); Ctrl-C to stop", highlight=False)
        while server.is_alive():
            time.sleep(0.5)
        _fail(ServerError(server._diagnose("tritonserver exited")))
    except KeyboardInterrupt:
        err.print("stopping Triton")
    except (ServerError, FileNotFoundError) as exc:
        _fail(exc)
    finally:
        if server is not None:
            server.stop()


@app.command()
def tune(
    model: str = typer.Option("build/tiny-t0", "--model", help="backbone: hub name or checkpoint directory"),
    sources: str = typer.Option("builtin", "--sources", help="groups (t0_train, builtin, ...) and task names, comma-separated"),
    out: Path = typer.Option(Path("prompts"), "--out", help="prompt bank directory (created or extended)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="root laid out like shared/data"),
    set_: List[str] = typer.Option([], "--set", help="a tuning setting: key=value (keys of rospr.tune in a run config)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train one soft prompt per (source dataset, hard prompt); resumes an interrupted tuning."""
    _setup_logging(verbose)
    from pydantic import ValidationError

    from harness.config import ConfigError, TuneConfig, apply_overrides, format_validation_error
    from harness.method.prepare import tune_sources
    from harness.tasks.base import DataSettings, TaskError
    from rospr.artifacts import ArtifactError

    names = [s.strip() for s in sources.split(",") if s.strip()]
    try:
        settings = TuneConfig.model_validate(apply_overrides({}, set_))
        done = []
        bank = tune_sources(model, names, str(out), settings, DataSettings.from_env(data_dir),
                            on_done=lambda p, reused: (done.append(reused), err.print(
                                f"{'reused' if reused else 'tuned '}  {p.id}: " + ("imported, not trained here" if p.final_loss is None
                                                                   else f"final loss {p.final_loss:.3f}"))))
    except ValidationError as exc:
        _fail(ConfigError(format_validation_error(exc, "--set", set_, TuneConfig)))
    except (ConfigError, TaskError, ArtifactError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    err.print(f"prompt bank {out}: {len(bank.prompts)} prompts ({done.count(False)} tuned now)")


data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Task data: templates, BIG-bench, rows.")
app.add_typer(data_app, name="data")


@data_app.command("status")
def data_status_cmd(
    names: List[str] = typer.Argument(..., help="tasks or groups (t0_train, heldout, bigbench, builtin)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="root laid out like shared/data"),
) -> None:
    """Per task and split: hub id, config, revision, and where its rows come from now (or why not).
    Reads and downloads nothing. Exits 1 when some rows cannot be had."""
    from harness.tasks.base import DataSettings, TaskError
    from harness.tasks.status import data_status

    try:
        rows = data_status(names, DataSettings.from_env(data_dir))
    except TaskError as exc:
        _fail(exc)
    typer.echo("task\tsplit\thub id\tconfig\trevision\tsource\twhere")
    for r in rows:
        split = r.split if r.role == "eval" or r.split == "train" else f"{r.split} ({r.role})"
        typer.echo("\t".join([r.task, split, r.hub_id or "-", r.config or "-", r.revision or "-", r.kind, r.where])
                   + (f"\t{r.note}" if r.note else ""))
    missing = [r for r in rows if not r.ok]
    if missing:
        err.print(f"{len(missing)} of {len(rows)} splits cannot be read now (see the notes)")
        raise typer.Exit(1)


@data_app.command("synth")
def data_synth_cmd(
    names: List[str] = typer.Argument(..., help="tasks or groups of promptsource datasets (t0_train, heldout, ...)"),
    data_dir: Path = typer.Option(..., "--data-dir", help="rows go to DATA_DIR/rows/<dataset>[/<subset>]/<split>.jsonl"),
    rows: int = typer.Option(8, "--rows", min=1, help="rows per split"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a few schema-true synthetic rows per dataset (train and evaluation splits), so that the
    pipeline runs offline (`data.data_dir: DATA_DIR`)."""
    from harness.tasks import PromptsourceTask, expand, get_task
    from harness.tasks.base import DataSettings, TaskError
    from harness.tasks.synth import write_rows

    settings = DataSettings.from_env(data_dir)
    try:
        folders = []
        for name in expand(names):
            task = get_task(name, settings)
            if not isinstance(task, PromptsourceTask):
                raise TaskError(f"{name}: only promptsource datasets are synthesised (BIG-bench and builtin "
                                "tasks have their own data)")
            if task.folder not in folders:
                folders.append(task.folder)
        paths = write_rows(data_dir / "rows", folders, rows, seed)
    except TaskError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(OSError(f"{data_dir / 'rows'}: cannot write rows: {exc}"))
    err.print(f"wrote {len(paths)} row files for {len(folders)} datasets under {data_dir / 'rows'}")


@data_app.command("check-hub")
def data_check_hub_cmd(
    names: Optional[List[str]] = typer.Argument(None, help="tasks or groups (default: t0_train heldout)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="root laid out like shared/data (templates)"),
) -> None:
    """Ask the hub (metadata only, no rows) whether each catalog entry's repository, revision, config,
    splits and template columns are there: one line per dataset; exit 1 on any mismatch."""
    from harness.tasks.base import DataSettings, TaskError
    from harness.tasks.hub_check import check_hub

    try:
        verdicts = check_hub(names or ["t0_train", "heldout"], DataSettings.from_env(data_dir))
    except TaskError as exc:
        _fail(exc)
    typer.echo("dataset\thub\tverdict\twhy")
    for verdict in verdicts:
        typer.echo(verdict.line())
    bad = [v for v in verdicts if not v.ok]
    if bad:
        err.print(f"{len(bad)} of {len(verdicts)} catalog entries do not match the hub (see the lines above)")
        raise typer.Exit(1)


bank_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="The prompt bank: peft PROMPT_TUNING adapters in and out, re-keying an old bank.")
app.add_typer(bank_app, name="bank")


@bank_app.command("import-peft")
def bank_import_peft(
    adapter: List[Path] = typer.Option(..., "--adapter", help="a peft PROMPT_TUNING adapter folder (repeatable: "
                                       "the n-th --adapter goes with the n-th --source and --template)"),
    source: List[str] = typer.Option(..., "--source", help="the source dataset it was trained on, e.g. glue/mrpc"),
    template: List[str] = typer.Option(..., "--template", help="the hard prompt (template name) it was trained with"),
    bank: Path = typer.Option(Path("prompts"), "--bank", help="prompt bank directory (created or extended)"),
    model: str = typer.Option("build/tiny-t0", "--model", help="the backbone the adapters and the bank are for"),
    split: str = typer.Option("train", "--split", help="the source split whose inputs become the library keys"),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, help="its first rows (all by default)"),
    ignore_base_name: bool = typer.Option(False, "--ignore-base-name", help="accept an adapter whose "
                                          "base_model_name_or_path names another model of the same shape"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="root laid out like shared/data"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Put peft PROMPT_TUNING adapters into a prompt bank, each as the prompt of its (source, template)."""
    _setup_logging(verbose)
    from harness.method.adapters import AdapterSource, import_peft
    from harness.tasks.base import DataSettings, TaskError
    from rospr.artifacts import ArtifactError

    if not len(adapter) == len(source) == len(template):
        _fail(ValueError(f"{len(adapter)} --adapter, {len(source)} --source and {len(template)} --template: give "
                         "one --source and one --template per --adapter, in the same order"))
    items = [AdapterSource(a, s, t) for a, s, t in zip(adapter, source, template)]
    try:
        saved = import_peft(model, bank, items, DataSettings.from_env(data_dir), split, rows, not ignore_base_name)
    except (ArtifactError, TaskError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    for p in saved:
        err.print(f"imported {p.id}: P={p.shape[0]}, D={p.shape[1]}, {len(p.answer_choices)} answer choices")
    err.print(f"prompt bank {bank}: {len(saved)} adapter(s) imported")


@bank_app.command("export-peft")
def bank_export_peft(
    bank: Path = typer.Option(Path("prompts"), "--bank", help="prompt bank directory"),
    ids: List[str] = typer.Option([], "--id", help="a prompt id (<source>/<template>; repeatable; all by default)"),
    out: Path = typer.Option(..., "--out", help="the adapter folder (one --id), else a folder of adapter folders"),
    model: Optional[str] = typer.Option(None, "--model", help="the backbone: checked against the bank, named in "
                                        "each adapter_config.json (default: the bank's backbone name)"),
) -> None:
    """Write bank prompts as peft PROMPT_TUNING adapters (PeftModel.from_pretrained loads them)."""
    _setup_logging(False)
    from harness.method.adapters import export_peft
    from rospr.artifacts import ArtifactError

    try:
        folders = export_peft(bank, out, ids, model)
    except (ArtifactError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    for folder in folders:
        typer.echo(str(folder))
    err.print(f"wrote {len(folders)} peft adapter(s) under {out}")


@bank_app.command("rekey")
def bank_rekey(
    bank: Path = typer.Option(..., "--bank", help="a prompt bank tuned before rospr recorded the backbone's weights"),
    model: str = typer.Option(..., "--model", help="the checkpoint (folder or hub name) the bank was tuned on"),
) -> None:
    """Record the weights digest of MODEL in an old (version 1) bank: your word that its prompts were
    tuned on those weights. The architecture must be MODEL's and every prompt file intact."""
    _setup_logging(False)
    from rospr.artifacts import ArtifactError
    from rospr.softprompt import rekey

    try:
        from rospr.backbone import load_backbone  # torch: the model's identity counts its parameters

        identity = load_backbone(model)[2].as_dict()
        rekeyed = rekey(bank, identity)
    except (ArtifactError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    err.print(f"prompt bank {bank}: {len(rekeyed.ids())} prompt(s) now keyed to the weights {identity['weights']} "
              f"of {identity['name']}")


library_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The Source Prompt Library.")
app.add_typer(library_app, name="library")


@library_app.command("build")
def library_build(
    prompts: Path = typer.Option(Path("prompts"), "--prompts", help="prompt bank directory (rospr tune --out)"),
    retriever: str = typer.Option("build/tiny-t0", "--retriever", help="encoder checkpoint of the dense retriever"),
    out: Path = typer.Option(Path("library"), "--out", help="library directory to write"),
    n: int = typer.Option(100, "--n", min=1, help="training instances per prompt"),
    index: str = typer.Option("flat", "--index", help="flat (exact inner product), ivf or hnsw"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="root laid out like shared/data"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Embed n training instances of every prompt of a bank and write the FAISS library."""
    _setup_logging(verbose)
    from pydantic import ValidationError

    from harness.config import IndexConfig
    from harness.method.prepare import build_library_from_bank
    from harness.tasks.base import DataSettings, TaskError
    from rospr.artifacts import ArtifactError

    from rospr.backbone import check_checkpoint

    try:
        check_checkpoint(retriever, "--retriever")
        lib = build_library_from_bank(str(prompts), retriever, str(out), n, IndexConfig(type=index),
                                      data_settings=DataSettings.from_env(data_dir))
    except ValidationError as exc:
        _fail(ValueError(f"--index {index!r}: choose flat, ivf or hnsw"))
    except (TaskError, ArtifactError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    err.print(f"library {out}: {len(lib)} keys of {len(lib.prompt_ids)} prompts")




@data_app.command("fetch")
def data_fetch(
    what: List[str] = typer.Argument(..., help="templates (promptsource 0.2.3) and/or bigbench (bigbench 1.0.0)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="default $ROSPR_DATA_CACHE or ~/.cache/rospr/data"),
    force: bool = typer.Option(False, "--force", help="download and unpack again even when cached"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Download the pinned sdists through pip, check their sha256, unpack their data into the cache;
    prints where each went and its file count."""
    _setup_logging(verbose)
    from harness.tasks import fetch as fetching
    from harness.tasks.base import TaskError

    unknown = [w for w in what if w not in fetching.SOURCES]
    if unknown:
        _fail(TaskError(f"unknown data source(s) {unknown}: choose from {', '.join(fetching.SOURCES)}"))
    for name in dict.fromkeys(what):
        try:
            folder = fetching.fetch(name, cache_dir, force=force)
        except TaskError as exc:
            _fail(exc)
        typer.echo(f"{name}: {folder} ({fetching.SOURCES[name].files} files)")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="throughput | latency | retrieval | peers | backends | scaling | gpu | "
                                         "scale | fullrun | startup"),
    model: Optional[str] = typer.Option(None, "--model", help="the model the benchmark uses: tiny, small (large: scale)"),
    out: Optional[Path] = typer.Option(None, "--out", help="results folder (default benchmarks/results)"),
) -> None:
    """Run a benchmark of benchmarks/ (JSON + PNG into benchmarks/results/); extra flags go to it
    (the same as ``rospr-bench NAME``)."""
    from rospr_bench import entry

    if name not in entry.BENCHMARKS:
        _fail(ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(entry.BENCHMARKS)}"))
    args = list(ctx.args)
    if model is not None:
        args += entry.model_args(name, model)
    if out is not None:
        args += ["--out", str(out)]
    entry.run(name, args)


def main() -> None:  # console script entry point
    app()


if __name__ == "__main__":
    sys.exit(main())
