"""What a task is, to the harness: a named source of (task, prompt) units."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from rospr.data import UnitData
from rospr.errors import RosprError


class TaskError(RosprError, ValueError):
    """Bad task input. The message names the file (or task) and field, and the fix."""


@dataclass(frozen=True)
class DataSettings:
    """Where task content comes from. ``None`` means: the real default (hub / package registry).

    The one definition of these locations: the run config's ``data:`` section is these fields (their
    ``help`` its descriptions; ``rospr_harness.config.DataConfig``) and a ``data_dir`` root (``from_env``).
    ``templates_dir``: ``<dataset>[/<subset>]/templates.yaml``; default: promptsource 0.2.3's templates
    in the data cache (``rospr_harness.tasks.fetch``). ``bigbench``: default bigbench 1.0.0's files of
    the 14 paper tasks in the data cache. ``rows_dir``: rows files (``.jsonl``, or ``.json``, a list) in the hub schema; a dataset whose
    rows file is there reads it, the others go to the hub. ``hub_dir``: e.g. a snapshot of
    ``aps/super_glue``, which ``datasets.load_dataset`` reads instead of the hub. ``manual_dir``: manual
    downloads as their owners hand them out (StoryCloze's CSV files under ``story_cloze/2016/``).
    A folder given as text (a config's key) becomes a ``Path``; empty text leaves it unset.
    """

    templates_dir: Path | None = field(default=None, metadata={"help": "a promptsource templates/ folder"})
    bigbench: str | None = field(default=None, metadata={"help": "a folder of <task>/task.json, or a base URL"})
    rows_dir: Path | None = field(default=None, metadata={
        "help": "local rows <rows_dir>/<dataset>[/<subset>]/<split>.jsonl (default <data_dir>/rows)"})
    hub_dir: Path | None = field(default=None, metadata={
        "help": "snapshots of hub dataset repositories <hub_dir>/<owner>/<name>/"})
    manual_dir: Path | None = field(default=None, metadata={
        "help": "manual downloads <manual_dir>/<dataset>[/<subset>]/ (StoryCloze's CSVs; default <data_dir>/manual)"})

    def __post_init__(self) -> None:
        for name in ("templates_dir", "rows_dir", "hub_dir", "manual_dir"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, Path(value) if value else None)

    @classmethod
    def from_env(cls, data_dir: str | os.PathLike | None = None) -> "DataSettings":
        """Settings rooted at ``data_dir`` (or ``$ROSPR_DATA_DIR``): ``promptsource/templates``,
        ``bigbench``, ``rows``, ``hub`` and ``manual`` under it, each used when present."""
        root = data_dir or os.environ.get("ROSPR_DATA_DIR")
        if not root:
            return cls()
        root = Path(root)
        templates = root / "promptsource" / "templates"
        bigbench = root / "bigbench"
        return cls(
            templates_dir=templates if templates.is_dir() else None,
            bigbench=str(bigbench) if bigbench.is_dir() else None,
            rows_dir=root / "rows",
            hub_dir=(root / "hub") if (root / "hub").is_dir() else None,
            manual_dir=root / "manual",
        )


@dataclass(frozen=True)
class SplitStatus:
    """Where the rows of one (task, split) a run reads come from now (``rospr data status``): ``kind``
    and ``where`` as :class:`rospr_harness.tasks.rows.RowSource` (``folder``/``url`` for BIG-bench,
    ``builtin`` for a generated task); ``ok`` False when the rows cannot be had as things stand
    (``note`` says why and how). ``role``: ``train`` (a source) or ``eval`` (a target)."""

    task: str
    folder: str
    role: str
    split: str
    hub_id: str
    config: str | None
    revision: str | None
    kind: str
    where: str
    note: str
    ok: bool


@runtime_checkable
class Task(Protocol):
    """A task: its prompts, and the examples of one (task, prompt) unit.

    ``folder``: the promptsource folder (``<dataset>[/<subset>]``) whose templates and hub rows the
    task reads; ``None`` for a task that brings its own (BIG-bench, builtin).
    """

    name: str
    folder: str | None

    def prompts(self) -> list[str]:
        """The names of the hard prompts evaluated for this task, in a stable order."""
        ...

    def training_prompts(self) -> list[str]:
        """The names of the prompts a soft prompt is trained on when the task is a source, in a stable
        order (a promptsource dataset's generation templates too; see ``load(training=True)``)."""
        ...

    def prompt_marks(self) -> dict[str, tuple[str, ...]]:
        """Every prompt of the task (``rospr tasks NAME``), in order, with what sets it apart:
        ``original`` (T0's evaluation prompt, ``original_task: true``), ``training only`` (no answer
        choices: tuned on, never scored)."""
        ...

    def split_status(self) -> list[SplitStatus]:
        """Where the rows of each split a run reads come from now; reads and downloads nothing."""
        ...

    def training_identity(self, prompt: str, split: str | None = None, limit: int | None = None) -> dict | None:
        """What ``load(prompt, split, limit, training=True)`` renders from, told without reading or
        rendering the rows: the template's text, the split, the limit and where the rows are
        (``rows_file``: a file the caller hashes). None when there is no such cheap identity (rows from
        the hub): the caller renders and compares what was rendered."""
        ...

    def load(self, prompt: str, split: str | None = None, limit: int | None = None, *,
             training: bool = False) -> UnitData:
        """Render the examples of ``prompt`` on ``split`` (the task's evaluation split when None).

        ``limit`` keeps the first ``limit`` rows (before skipping). Rows the template does not apply
        to are counted in ``UnitData.skipped``; malformed content raises ``TaskError``.
        ``training``: the examples train a soft prompt: a row whose target text cannot be scored
        (no choices, or not among them) is still an instance to learn, where evaluation skips it.
        """
        ...
