"""``rospr tasks`` and ``rospr data ...``: the known tasks, and their templates, BIG-bench and rows."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import List, Optional

import typer

from rospr_harness.cli.common import err, setup_logging
from rospr.destination import SYNTHETIC_ROWS, claim_folder

data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Task data: templates, BIG-bench, rows.")


def tasks(
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a data root (promptsource/templates/, bigbench/, rows/, hub/, manual/; docs/data.md)"),
    group: Optional[str] = typer.Option(None, "--group", help="list a group's tasks: t0_train, heldout, bigbench, builtin"),
    name: Optional[str] = typer.Argument(None, help="a task: list its prompts"),
) -> None:
    """List the known tasks, a group's tasks, or the prompts of one task.

    A task's prompts are marked: ``original`` (original_task: true, T0's evaluation prompts) and
    ``training only`` (a template without answer choices: tuned on, never scored)."""
    from rospr_harness.tasks import get_task, group as task_group, list_tasks
    from rospr_harness.tasks.base import DataSettings, TaskError

    settings = DataSettings.from_env(data_dir)
    if group is not None:
        if name is not None:
            raise TaskError("give a task or --group, not both")
        lines = task_group(group)
    elif name is None:
        lines = list_tasks(settings)
    else:
        task = get_task(name, settings)
        lines = [p + (f"\t[{', '.join(m)}]" if m else "") for p, m in task.prompt_marks().items()]
    for line in lines:
        typer.echo(line)


@data_app.command("status")
def data_status_cmd(
    names: List[str] = typer.Argument(..., help="tasks or groups (t0_train, heldout, bigbench, builtin)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a data root (promptsource/templates/, bigbench/, rows/, hub/, manual/; docs/data.md)"),
) -> None:
    """Per task and split: hub id, config, revision, and where its rows come from now (or why not).
    Reads and downloads nothing. Exits 1 when some rows cannot be had."""
    from rospr_harness.tasks.base import DataSettings
    from rospr_harness.tasks.status import data_status

    rows = data_status(names, DataSettings.from_env(data_dir))
    lines = []
    for r in rows:
        split = r.split if r.role == "eval" or r.split == "train" else f"{r.split} ({r.role})"
        lines.append("\t".join([r.task, split, r.hub_id or "-", r.config or "-", r.revision or "-", r.kind, r.where])
                     + (f"\t{r.note}" if r.note else ""))
    _table("task\tsplit\thub id\tconfig\trevision\tsource\twhere", lines, sum(not r.ok for r in rows),
           "splits cannot be read now (see the notes)")


@data_app.command("synth")
def data_synth_cmd(
    names: List[str] = typer.Argument(..., help="tasks or groups of promptsource datasets (t0_train, heldout, ...)"),
    data_dir: Path = typer.Option(..., "--data-dir", help="rows go to DATA_DIR/rows/<dataset>\\[/<subset>]/<split>.jsonl"),
    rows: int = typer.Option(8, "--rows", min=1, help="rows per split"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a few schema-true synthetic rows per dataset (train and evaluation splits), so that the
    pipeline runs offline (`data.data_dir: DATA_DIR`)."""
    from rospr_harness.tasks import expand, get_task
    from rospr_harness.tasks.base import DataSettings, TaskError
    from rospr_harness.tasks.synth import write_rows

    settings = DataSettings.from_env(data_dir)
    folders = []
    for name in expand(names):
        task = get_task(name, settings)
        if task.folder is None:
            raise TaskError(f"{name}: only promptsource datasets are synthesised (BIG-bench and builtin "
                            "tasks have their own data)")
        if task.folder not in folders:
            folders.append(task.folder)
    try:
        with contextlib.ExitStack() as held:  # each dataset's folder: absent, empty or synthetic rows of ours
            for folder in folders:
                held.enter_context(claim_folder(
                    _rows_folder(data_dir / "rows", folder), SYNTHETIC_ROWS,
                    fix="real rows are never replaced by synthetic ones: give another --data-dir"))
            paths = write_rows(data_dir / "rows", folders, rows, seed)
    except OSError as exc:  # the system's own message lacks the folder the rows were going to
        raise TaskError(f"{data_dir / 'rows'}: cannot write rows: {exc}") from None
    err.print(f"wrote {len(paths)} row files for {len(folders)} datasets under {data_dir / 'rows'}")


def _rows_folder(root: Path, folder: str) -> Path:
    """``root/folder``; refuses (``ForeignDestination``) a symbolic link on the way: links are not followed."""
    from rospr.destination import ForeignDestination

    at = root
    for part in (".", *Path(folder).parts):
        at = at / part if part != "." else at
        if at.is_symlink():
            raise ForeignDestination(f"{at}: is a symbolic link; synthetic rows are never written through a link: "
                                     "give another --data-dir")
    return at


@data_app.command("check-hub")
def data_check_hub_cmd(
    names: Optional[List[str]] = typer.Argument(None, help="tasks or groups (default: t0_train heldout)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a data root (promptsource/templates/, bigbench/, rows/, hub/, manual/; docs/data.md)"),
) -> None:
    """Ask the hub (metadata only, no rows) whether each catalog entry's repository, revision, config,
    splits and template columns are there: one line per dataset; exit 1 on any mismatch."""
    from rospr_harness.tasks.base import DataSettings
    from rospr_harness.tasks.hub_check import check_hub

    verdicts = check_hub(names or ["t0_train", "heldout"], DataSettings.from_env(data_dir))
    _table("dataset\thub\tverdict\twhy", [v.line() for v in verdicts], sum(not v.ok for v in verdicts),
           "catalog entries do not match the hub (see the lines above)")


def _table(header: str, lines: list[str], failed: int, what: str) -> None:
    """Print a tab-separated table; exit 1 saying how many of its rows ``what`` when any failed."""
    typer.echo(header)
    for line in lines:
        typer.echo(line)
    if failed:
        err.print(f"{failed} of {len(lines)} {what}")
        raise typer.Exit(1)


@data_app.command("fetch")
def data_fetch(
    what: List[str] = typer.Argument(..., help="templates (promptsource 0.2.3) and/or bigbench (bigbench 1.0.0's 14 paper tasks)"),
    sources: Optional[List[str]] = typer.Option(
        None, "--from", help="a folder or archive (.tar.gz, .tgz, .tar, .zip) holding the files, hub:<owner>/<name>"
        "[@<revision>][:<folder>], or a URL; repeat to try several in order (default: the registry, then GitHub)"),
    allow_modified: bool = typer.Option(False, "--allow-modified",
                                        help="take files whose sha256 differs from the committed one, with a warning"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="default $ROSPR_DATA_CACHE or ~/.cache/rospr/data"),
    force: bool = typer.Option(False, "--force", help="fetch again even when cached"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Get the pinned task data from the first source that has it (or those --from names), check every
    file against its committed sha256, publish it into the data cache; prints where each went, its file
    count and its sources (`rospr data status bigbench` shows them per task)."""
    setup_logging(verbose)
    from rospr_harness.tasks import fetch as fetching
    from rospr_harness.tasks.base import TaskError

    unknown = [w for w in what if w not in fetching.WHATS]
    if unknown:
        raise TaskError(f"unknown data {unknown}: choose from {', '.join(fetching.WHATS)}")
    chain = [fetching.parse_source(s) for s in sources] if sources else None
    for name in dict.fromkeys(what):
        folder = fetching.fetch(name, cache_dir, force=force, sources=chain, allow_modified=allow_modified)
        origins = sorted(set(fetching.provenance(name, cache_dir).values()))
        typer.echo(f"{name}: {folder} ({len(fetching.data_set(name).files)} files, from {', '.join(origins)})")
