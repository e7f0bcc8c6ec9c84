"""Task registry: promptsource datasets, the held-out T0 settings, BIG-bench JSON tasks, the built-in suite.

Names:

- a promptsource folder ``<dataset>[/<subset>]`` (``ag_news``, ``adversarial_qa/dbidaf``,
  ``super_glue/rte``): every template of it (:mod:`rospr_harness.tasks.promptsource`);
- the 11 held-out settings ``anli_r1 anli_r2 anli_r3 cb rte wsc copa wic winogrande story_cloze
  hellaswag``: T0's evaluation prompts (``original_task: true``) on the evaluation split;
- ``bigbench/<task>`` and ``bigbench/<task>/<subtask>``;
- ``builtin/<name>`` (``animals nli fruit_choice sentiment topic``).

Groups stand wherever a list of task names does (``tasks:``, ``rospr.sources``, the CLI): ``t0_train``
(T0's training mixture: the 38 BASE pairs of t-zero's ``t0/datasets.csv``), ``heldout`` (the 11
settings), ``bigbench`` (the 14 BIG-bench tasks of the T0 evaluation) and ``builtin``.
"""

from __future__ import annotations

import difflib

from rospr_harness.tasks.base import DataSettings, Task, TaskError
from rospr_harness.tasks.bigbench import T0_TASKS, BigBenchTask, bigbench_task, list_bigbench
from rospr_harness.tasks.builtin import BuiltinTask, builtin_task, corpus, list_builtin
from rospr_harness.tasks.catalog import group as catalog_group
from rospr_harness.tasks.catalog import groups as catalog_groups
from rospr_harness.tasks.catalog import heldout_settings
from rospr_harness.tasks.promptsource import PromptsourceTask, heldout_task, promptsource_folders
from rospr_harness.tasks.templates import Template, load_templates

FAMILIES = (
    "promptsource folders <dataset>[/<subset>]",
    "held-out T0 settings (" + " ".join(heldout_settings()) + ")",
    "bigbench/<task>[/<subtask>]",
    "builtin/<name>",
)

__all__ = [
    "BigBenchTask",
    "BuiltinTask",
    "DataSettings",
    "PromptsourceTask",
    "Task",
    "TaskError",
    "Template",
    "corpus",
    "dataset_of",
    "expand",
    "get_task",
    "group_names",
    "list_tasks",
    "load_templates",
]


def group_names() -> list[str]:
    """The named groups of tasks."""
    return sorted({*catalog_groups(), "bigbench", "builtin"})


def group(name: str) -> list[str]:
    """The task names of the group ``name``; ``TaskError`` listing the groups otherwise."""
    if name == "bigbench":
        return [f"bigbench/{t}" for t in T0_TASKS]
    if name == "builtin":
        return list_builtin()
    if name in catalog_groups():
        return list(catalog_group(name))
    raise TaskError(f"unknown task group {name!r}; groups: {group_names()}")


def expand(names: list[str] | str) -> list[str]:
    """Task names with every group name replaced by its members, in order, duplicates refused.

    A single string is one name or group. Refuses (``TaskError``) a name listed twice (directly or
    through two groups), naming it.
    """
    names = [names] if isinstance(names, str) else list(names)
    out: list[str] = []
    for name in names:
        members = group(name) if name in group_names() else [name]
        for member in members:
            if member in out:
                raise TaskError(f"task {member!r} is listed twice (through {name!r}); list each task once")
            out.append(member)
    return out


def dataset_of(name: str) -> str:
    """The dataset a task name evaluates: a held-out setting's promptsource folder (``rte`` ->
    ``super_glue/rte``; the three ANLI rounds are one dataset, ``anli``), else the name itself.
    Leave-one-out compares these."""
    setting = heldout_settings().get(name)
    return setting.folder if setting is not None else name


def list_tasks(settings: DataSettings) -> list[str]:
    """Every task name known under ``settings``: held-out settings, promptsource folders, BIG-bench
    (from its folder, or the 14 T0 tasks for a URL), builtin."""
    return [*heldout_settings(), *promptsource_folders(settings), *list_bigbench(settings), *list_builtin()]


def get_task(name: str, settings: DataSettings) -> Task:
    """The task called ``name``; nothing is read until its prompts or rows are asked for, except
    that a BIG-bench task folder or a promptsource templates file must exist.

    Refuses (``TaskError``) an unknown name or a group name, listing close matches and the families.
    """
    if name in heldout_settings():
        return heldout_task(name, settings)
    if name.startswith("builtin/") and name in list_builtin():
        return builtin_task(name)
    if name.startswith("bigbench/"):
        task = bigbench_task(name, settings)
        if task.available():
            return task
    elif not name.startswith("builtin/") and name not in group_names() and _has_templates(name, settings):
        return PromptsourceTask(name, settings)
    if name in group_names():
        raise TaskError(f"{name!r} is a group of tasks, not a task; list its members with `rospr tasks --group {name}`")
    close = close_matches(name, list_tasks(settings))
    raise TaskError(
        f"unknown task {name!r}"
        + (f"; did you mean {close}" if close else "")
        + f"; known families: {', '.join(FAMILIES)}"
    )


def _has_templates(name: str, settings: DataSettings) -> bool:
    from rospr_harness.tasks.templates import default_templates_dir, templates_path

    dataset, _, subset = name.partition("/")
    if not dataset or ".." in name.split("/") or name.startswith("/"):
        return False
    root = settings.templates_dir if settings.templates_dir is not None else default_templates_dir()
    return templates_path(root, dataset, subset or None).is_file()


def close_matches(name: str, known: list[str]) -> list[str]:
    """Known names close to ``name``; within its family (``bigbench/``, ``builtin/``) when it names one."""
    family, sep, rest = name.partition("/")
    if sep and any(k.startswith(family + "/") for k in known):
        members = {k[len(family) + 1:]: k for k in known if k.startswith(family + "/")}
        return [members[m] for m in difflib.get_close_matches(rest, list(members), n=5, cutoff=0.6)]
    return difflib.get_close_matches(name, known, n=5, cutoff=0.6)
