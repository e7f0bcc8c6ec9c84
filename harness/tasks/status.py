"""Where each task's rows would come from now, without reading or downloading anything.

``rospr data status t0_train heldout`` prints :func:`data_status`: for a promptsource dataset its
catalog entry (hub id, config, revision) and, per split a run reads (``train`` for a source, the
evaluation split for a target), the source now in force (:func:`harness.tasks.rows.locate`): local
rows, a manual download, a hub snapshot folder, or the hub; or why none (a manual download missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from harness.tasks import expand, get_task
from harness.tasks.base import DataSettings
from harness.tasks.bigbench import BigBenchTask
from harness.tasks.promptsource import PromptsourceTask
from harness.tasks.rows import locate


@dataclass(frozen=True)
class SplitStatus:
    """One (task, split): ``kind`` and ``where`` as :class:`harness.tasks.rows.RowSource`; ``ok`` False
    when the rows cannot be had as things stand (``note`` says why and how)."""

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


def data_status(names: list[str] | str, settings: DataSettings) -> list[SplitStatus]:
    """The row sources of ``names`` (task names or groups). Refuses unknown names (``TaskError``)."""
    out: list[SplitStatus] = []
    for name in expand(names):
        task = get_task(name, settings)
        if isinstance(task, PromptsourceTask):
            spec = task.spec
            roles = ("eval",) if task.original_only else tuple(
                r for r in ("train", "eval") if spec is None or r in spec.splits)
            for role in roles:
                split = task.default_split(role)
                src = locate(spec, task.folder, split, settings)
                out.append(SplitStatus(
                    name, task.folder, role, split,
                    spec.hub_id if spec else task.folder.partition("/")[0],
                    spec.config if spec else (task.folder.partition("/")[2] or None),
                    spec.revision if spec else None,
                    src.kind, src.where, src.note, src.kind != "missing",
                ))
        elif isinstance(task, BigBenchTask):
            src = task._source
            where = src.where(*([task.task, task.subtask] if task.subtask else [task.task]))
            out.append(SplitStatus(name, name, "eval", "examples", "", None, None,
                                   "url" if src.is_url else "folder", where, "", task.available()))
        else:
            out.append(SplitStatus(name, name, "eval", "generated", "", None, None, "builtin",
                                   "generated in process", "", True))
    return out
