"""``rospr verify`` of a run: every figure of results.json recomputed from what it is derived from.

A finished run's results.json is trusted only as far as its records and its config give it:

- each unit: its records file confined to the run and with the listed sha256, its ``n``, accuracy,
  stderr and interval as its records give them (``rospr_harness.figures.unit_figures``);
- the list of units: each (task, prompt, method) of the config's plan once, none missing, none other
  (a unit removed from, or added to, results.json is found);
- the aggregates: every task summary (prompts, mean, median, min, max, spread) and ``overall``
  recomputed from the units' records (``rospr_harness.figures.summarise``), as the run computed them;
- the counts: the units kept, computed and reused (``execution``) add up to the units listed.

Every problem is one line naming results.json and the field; an empty list means all good.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rospr_harness.config import RunConfig
from rospr_harness.figures import Spread, UnitFigures, spread, summarise, unit_figures
from rospr_harness.runfiles import UnsafePath, verified_records
from rospr_harness.schema import RecordsError, ResultsFile, UnitResult, read_results
from rospr.errors import RosprError

UnitId = tuple[str, str, str]  # (task, prompt, method)
FIX = "results.json edited? rerun with --resume, which takes every figure from the records"


def verify_run(run_dir: str | Path) -> list[str]:
    """Check a finished run (module docstring). Returns the problems found (empty: all good). Refuses
    (``ResultsFileError``) a directory without a run."""
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    res = read_results(path)
    problems: list[str] = []
    scores: dict[UnitId, dict[int, float]] = {}
    units: list[UnitResult] = []
    for i, unit in enumerate(res.units):
        figures, problem = _unit_check(run_dir, unit, f"{path}: units[{i}]")
        problems += [problem] if problem else []
        if figures is not None:
            scores[_key(unit)] = figures.scores
            units.append(unit.model_copy(update=figures.fields()))
    problems += _listing_problems(res, path)
    if len(units) == len(res.units):  # every unit's records read: the aggregates can be recomputed
        problems += _aggregate_problems(res, units, scores, path)
    problems += _count_problems(res, path)
    return problems


def _key(unit: UnitResult) -> UnitId:
    return (unit.task, unit.prompt, unit.method)


def _unit_check(run_dir: Path, unit: UnitResult, where: str) -> tuple[UnitFigures | None, str | None]:
    """The unit's figures from its verified records (None when they cannot be read), and the problem found
    (its records unreadable, or a listed figure that differs from theirs), if any."""
    try:
        _, records = verified_records(run_dir, unit, where)
        figures = unit_figures(records, run_dir / unit.records, _key(unit))
    except (UnsafePath, RecordsError) as exc:
        return None, str(exc)
    listed = unit.model_dump(include=set(figures.fields()))
    if unit.stderr is None and unit.ci_low is None and unit.ci_high is None:  # written before schema 1.3
        listed = {k: listed[k] for k in ("n", "accuracy")}
    differ = {k: (listed[k], figures.fields()[k]) for k in listed if listed[k] != figures.fields()[k]}
    if not differ:
        return figures, None
    shown = ", ".join(f"{k} {a} (records: {b})" for k, (a, b) in differ.items())
    return figures, f"{where}: {shown} differ from its records' ({FIX})"


def _listing_problems(res: ResultsFile, path: Path) -> list[str]:
    """Each unit of the config's plan listed once: none twice, none missing, none that the plan lacks."""
    listed = [_key(u) for u in res.units]
    problems = [f"{path}: units: {_name(k)} is listed {listed.count(k)} times ({FIX})"
                for k in sorted(set(listed)) if listed.count(k) > 1]
    try:
        from rospr_harness.runner.plan import plan_run

        plan = plan_run(RunConfig.model_validate(res.config))
    except (RosprError, ValueError) as exc:
        return problems + [f"{path}: config: its units cannot be listed to check results.json against them "
                           f"({exc}); verify where the run's tasks and data are"]
    planned = {(s.task_name, s.prompt, m.name) for s in plan.specs for m in plan.methods}
    problems += [f"{path}: units: {_name(k)} of the config's plan is not listed (removed, or the run unfinished: "
                 "rospr run --resume finishes it)" for k in sorted(planned - set(listed))]
    problems += [f"{path}: units: {_name(k)} is not a unit of the run's config ({FIX})"
                 for k in sorted(set(listed) - planned)]
    return problems


def _name(key: UnitId) -> str:
    return " / ".join(key)


def _aggregate_problems(res: ResultsFile, units: list[UnitResult], scores: dict[UnitId, dict[int, float]],
                        path: Path) -> list[str]:
    """Every task summary and ``overall`` as ``summarise`` gives them from the units' records."""
    def task_spread(task: str, method: str, us: list[UnitResult]) -> Spread:
        return spread([scores[_key(u)] for u in us], ("task", task, method))

    tasks, overall = summarise(units, task_spread)
    problems = []
    expected = {(t.task, t.method): t.model_dump() for t in tasks}
    listed = {(t.task, t.method): t.model_dump() for t in res.tasks}
    for key in sorted(set(expected) | set(listed)):
        name = f"{path}: tasks {key[0]} / {key[1]}"
        if key not in listed:
            problems.append(f"{name}: missing; its units give {_shown(expected[key])} ({FIX})")
        elif key not in expected:
            problems.append(f"{name}: listed, but no scored unit of it is ({FIX})")
        else:
            problems += [f"{name}: {f} {listed[key][f]} (its units give {expected[key][f]}; {FIX})"
                         for f in _differing(listed[key], expected[key])]
    for m in sorted(set(overall) | set(res.overall)):
        if not _same(res.overall.get(m), overall.get(m)):
            problems.append(f"{path}: overall.{m}: {res.overall.get(m)} (the task means give {overall.get(m)}; {FIX})")
    return problems


def _differing(listed: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """The fields of a task summary that differ (its spread only where the file has one: before schema 1.3 none)."""
    legacy = all(listed.get(k) is None for k in ("stderr", "ci_low", "ci_high"))
    return [f for f in expected if not (legacy and f in ("stderr", "ci_low", "ci_high"))
            and not _same(listed.get(f), expected[f])]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):  # one computation, but JSON may print the last bit differently
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


def _shown(summary: dict[str, Any]) -> str:
    return f"{summary['n_prompts']} prompts, mean {summary['mean']}"


def _count_problems(res: ResultsFile, path: Path) -> list[str]:
    """The execution's units kept, computed and reused add up to the units listed."""
    ex = res.execution
    if ex is None or not {"resumed", "computed", "cached"} & ex.model_fields_set:  # written without counts
        return []
    done = ex.resumed + ex.computed + ex.cached
    if done == len(res.units):
        return []
    return [f"{path}: execution: {ex.resumed} resumed + {ex.computed} computed + {ex.cached} cached = {done} units, "
            f"but {len(res.units)} are listed ({FIX})"]
