"""What a task is, to the harness: a named source of (task, prompt) units."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from rospr.data import UnitData
from rospr.errors import RosprError


class TaskError(RosprError, ValueError):
    """Bad task input. The message names the file (or task) and field, and the fix."""


@dataclass(frozen=True)
class DataSettings:
    """Where task content comes from. ``None`` means: the real default (hub / package registry).

    ``templates_dir``: a promptsource ``templates/`` folder (``<dataset>[/<subset>]/templates.yaml``);
    default: the promptsource 0.2.3 sdist fetched into the data cache (``harness.tasks.fetch``).
    ``bigbench``: a folder of ``<task>/task.json`` or a base URL; default: the bigbench 1.0.0 sdist.
    ``rows_dir``: local rows ``<rows_dir>/<dataset>[/<subset>]/<split>.jsonl`` (or ``.json``, a list) in
    the hub schema. A dataset whose rows file is there reads it; the others go to the hub.
    ``hub_dir``: a folder of hub dataset repositories (``<hub_dir>/<owner>/<name>/``, e.g. a snapshot
    of ``aps/super_glue``): ``datasets.load_dataset`` reads that folder instead of the hub.
    ``manual_dir``: manual downloads as their owners hand them out, ``<manual_dir>/<dataset>[/<subset>]/``
    (StoryCloze's CSV files under ``story_cloze/2016/``).
    """

    templates_dir: Path | None = None
    bigbench: str | None = None
    rows_dir: Path | None = None
    hub_dir: Path | None = None
    manual_dir: Path | None = None

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


@runtime_checkable
class Task(Protocol):
    """A task: its prompts, and the examples of one (task, prompt) unit."""

    name: str

    def prompts(self) -> list[str]:
        """The names of the hard prompts evaluated for this task, in a stable order."""
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
