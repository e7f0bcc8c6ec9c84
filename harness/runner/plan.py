"""The plan of a run: its (task, prompt) targets, resolved up front, their rows loaded lazily.

Every task and prompt name of the config is resolved before anything is written or scored, and the
first prompt of each task is loaded then too (so a bad split or malformed rows fail early). The rows
of the other targets are rendered only when the driver admits them, and dropped when their units
are written: a run holds the rows of a bounded number of targets (``ray.max_active_units``), not of
the whole benchmark.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from rospr_harness.config import DataConfig, RunConfig
from rospr_harness.schema import UnitResult
from rospr_harness.tasks import expand, get_task, group_names
from rospr_harness.tasks.base import DataSettings, Task, TaskError
from rospr.canonical import sha256_text
from rospr.data import UnitData
from rospr.selection import Method

log = logging.getLogger(__name__)


def data_settings(cfg: DataConfig) -> DataSettings:
    """The task-content locations of a config: ``data_dir`` (or ``$ROSPR_DATA_DIR``), then overrides."""
    base = DataSettings.from_env(cfg.data_dir)

    def path(value: str | None, default: Path | None) -> Path | None:
        return Path(value) if value else default

    return DataSettings(
        templates_dir=path(cfg.templates_dir, base.templates_dir),
        bigbench=cfg.bigbench or base.bigbench,
        rows_dir=path(cfg.rows_dir, base.rows_dir),
        hub_dir=path(cfg.hub_dir, base.hub_dir),
        manual_dir=path(cfg.manual_dir, base.manual_dir),
    )


@dataclass
class TargetSpec:
    """One (task, prompt) of the plan; ``order`` is its position (units are listed in plan order)."""

    order: int
    task: Task
    prompt: str
    split: str | None
    limit: int | None
    _data: UnitData | None = field(default=None, repr=False)

    @property
    def task_name(self) -> str:
        return self.task.name

    def load(self) -> UnitData:
        """The target's scorable rows (loaded now, or handed over once when preloaded): ``scorable``."""
        data, self._data = self._data, None
        return data if data is not None else scorable(self.task.load(self.prompt, split=self.split, limit=self.limit))


NOT_APPLICABLE = ("not applicable (the template renders no input, its target is not among the choices, or "
                  "no target_scores)")
SAME_CHOICES = "answer choices that render to the same text (they cannot be told apart)"


def scorable(data: UnitData) -> UnitData:
    """``data`` with the rows rank classification can score, and why the others were skipped.

    A row whose answer choices render to the same text twice is skipped (``SAME_CHOICES``): its
    choices score the same, so its prediction would be decided by their order (``yes ||| yes`` is
    right on every row). Rows the task itself skipped count as ``NOT_APPLICABLE`` unless it gave a
    reason. The content hash changes with what is dropped, so a cached unit of the rows as they
    were is not reused.
    """
    keep = [ex for ex in data.examples if len(set(ex.choices)) == len(ex.choices)]
    reasons = dict(data.skip_reasons)
    unexplained = data.skipped - sum(reasons.values())
    if unexplained > 0:
        reasons[NOT_APPLICABLE] = reasons.get(NOT_APPLICABLE, 0) + unexplained
    dropped = len(data.examples) - len(keep)
    if not dropped:
        return dataclasses.replace(data, skip_reasons=reasons)
    reasons[SAME_CHOICES] = dropped
    first = next(ex for ex in data.examples if len(set(ex.choices)) != len(ex.choices))
    log.warning("%s / %s: %d of %d rows skipped: their answer choices render to the same text (row %d: %s); "
                "fix the template's answer_choices", data.task, data.prompt, dropped, len(data.examples),
                first.index, list(first.choices))
    digest = sha256_text(f"{data.content_hash}\x00distinct-choices") if data.content_hash else ""
    return dataclasses.replace(data, examples=keep, skipped=data.skipped + dropped, skip_reasons=reasons,
                               content_hash=digest)


def plan_targets(config: RunConfig) -> list[TargetSpec]:
    """Resolve every task and prompt of ``config``. Refuses an unknown task or prompt (``TaskError``)."""
    settings = data_settings(config.data)
    specs: list[TargetSpec] = []
    seen: dict[str, int] = {}
    for position, tc in enumerate(config.tasks):
        if tc.name in group_names() and tc.prompts is not None:
            raise TaskError(f"tasks.{position}: {tc.name!r} is a group of tasks; 'prompts' applies to one task")
        for name in expand(tc.name):  # a group stands for its members, with this item's split and limit
            if name in seen:
                raise TaskError(f"tasks.{position}: task {name!r} is already listed by tasks.{seen[name]}; "
                                "list each task once")
            seen[name] = position
            task = get_task(name, settings)
            known = task.prompts()
            prompts = tc.prompts if tc.prompts is not None else known
            unknown = [p for p in prompts if p not in known]
            if unknown:
                raise TaskError(f"tasks.{position}: {name} has no prompt {unknown[0]!r}; its prompts: {known}")
            for i, prompt in enumerate(prompts):
                spec = TargetSpec(len(specs), task, prompt, tc.split, tc.limit)
                if i == 0:
                    spec._data = scorable(spec.task.load(prompt, split=tc.split, limit=tc.limit))
                specs.append(spec)
    return specs


@dataclass
class RunPlan:
    """A run's targets in plan order and its methods in config order: what the run must compute."""

    specs: list[TargetSpec]
    methods: list[Method]

    def order(self, unit: UnitResult) -> tuple:
        """Where ``unit`` is listed in results.json: by method, then by target (others last)."""
        names = [m.name for m in self.methods]
        position = {(s.task_name, s.prompt): s.order for s in self.specs}
        return (names.index(unit.method) if unit.method in names else len(names),
                position.get((unit.task, unit.prompt), len(position)))

    def todo(self, done: set[tuple[str, str, str]] | dict) -> dict[int, list[Method]]:
        """The methods still to compute per target order, given the (task, prompt, method) ``done``."""
        return {s.order: [m for m in self.methods if (s.task_name, s.prompt, m.name) not in done]
                for s in self.specs}

    @property
    def retrieves(self) -> bool:
        """Whether any method of the run retrieves (needs the bank, the library and the retriever)."""
        return any(m.retrieve for m in self.methods)


def plan_run(config: RunConfig) -> RunPlan:
    """The plan of ``config`` (``plan_targets``, the methods). Refuses what ``plan_targets`` refuses,
    and an empty plan (``TaskError``): no method, no target, or a task with no row at all, before
    anything is written (an empty run must never replace a finished one)."""
    methods = [Method.parse(m) for m in config.method]  # model_copy skips validation
    if not methods:
        raise TaskError("config field 'method' is empty: the run would compute nothing; list at least one "
                        "method (t0, rospr, rospr+var, ...)")
    specs = plan_targets(config)
    if not specs:
        raise TaskError("config field 'tasks': no (task, prompt) to run (every prompts list is empty); list "
                        "at least one task with at least one prompt")
    for spec in specs:
        data = spec._data
        if data is not None and not data.examples and not data.skipped:
            raise TaskError(f"tasks: {spec.task_name} has no rows (split {spec.split or 'default'}, limit "
                            f"{spec.limit}) in {data.source or 'its data'}, so its units would be empty; check the "
                            "rows, the split and the limit, or leave the task out")
    return RunPlan(specs, methods)


def unit_slug(task: str, prompt: str, method: str) -> str:
    """A file name for a unit: readable, and unique through a short hash of the exact names."""
    key = f"{task}\x00{prompt}\x00{method}"
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task}__{prompt}")[:100].strip("_")
    return f"{clean}__{method}__{sha256_text(key)[:8]}"
