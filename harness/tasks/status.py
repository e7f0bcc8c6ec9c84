"""Where each task's rows would come from now, without reading or downloading anything.

``rospr data status t0_train heldout`` prints :func:`data_status`: for a promptsource dataset its
catalog entry (hub id, config, revision) and, per split a run reads (``train`` for a source, the
evaluation split for a target), the source now in force (:func:`rospr_harness.tasks.rows.locate`): local
rows, a manual download, a hub snapshot folder, or the hub; or why none (a manual download missing).
Each task says so itself (``Task.split_status``).
"""

from __future__ import annotations

from rospr_harness.tasks import expand, get_task
from rospr_harness.tasks.base import DataSettings, SplitStatus

__all__ = ["SplitStatus", "data_status"]


def data_status(names: list[str] | str, settings: DataSettings) -> list[SplitStatus]:
    """The row sources of ``names`` (task names or groups). Refuses unknown names (``TaskError``)."""
    return [status for name in expand(names) for status in get_task(name, settings).split_status()]
