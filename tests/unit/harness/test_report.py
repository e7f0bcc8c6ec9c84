"""rospr_harness.report (report.md) and what report.html and the console share with it.

class 4: no figure hides what happened. A unit of a RoSPr method scored without any soft prompt (its retrieval
chose none: leave-one-out with one source removes every candidate) has the T0 baseline's figures under the
RoSPr method's name: report.md, report.html and the console mark it, and every figure it enters (its task's
mean, the method's overall), with a section that lists such units and why; units that had their prompt are
not marked."""

from __future__ import annotations

import io
import re

import pytest

from rospr_harness.figures import summarise
from rospr_harness.report import NO_PROMPT, marked, render_report, without_prompt
from rospr_harness.report_html import render_html
from rospr_harness.schema import RetrievalLog

NOTE = "no candidate prompt: scored without a soft prompt"


def log(chosen: list[str]) -> RetrievalLog:
    return RetrievalLog(method="rospr", queries=[0], hits=1, excluded=["animals/only"], library="l", candidates=[],
                        n_candidates=0, var_rule=None, chosen=chosen, weights=[1.0] * len(chosen),
                        note=None if chosen else NOTE)


@pytest.fixture(scope="module")
def results(run_config, tmp_path_factory):
    """A t0 run of two tasks, with a rospr unit beside each t0 unit: nli's all without a prompt, animals' with one
    except its first prompt's; tasks and overall summarised from the units."""
    from fakes import fake_scoring

    from rospr_harness.runner import run

    cfg = run_config(tasks=[{"name": "builtin/animals", "limit": 6}, {"name": "builtin/nli", "limit": 5}])
    with fake_scoring():
        res = run(cfg, tmp_path_factory.mktemp("report") / "run")
    first_animals = next(u for u in res.units if u.task == "builtin/animals")
    rospr = [u.model_copy(update={"method": "rospr", "retrieval": log(
        [] if u.task == "builtin/nli" or u is first_animals else ["p1"])}) for u in res.units]
    units = res.units + rospr
    tasks, overall = summarise(units)
    return res.model_copy(update={"units": units, "tasks": tasks, "overall": overall})


def test_class_4_which_units_had_no_prompt(results):
    flagged = [u for u in results.units if without_prompt(u)]
    assert flagged and all(u.method == "rospr" and not u.retrieval.chosen for u in flagged)
    assert not any(without_prompt(u) for u in results.units if u.method == "t0")  # t0 has no retrieval at all
    assert marked("50.0", []) == "50.0" and marked("50.0", flagged[:1]) == f"50.0 ({NO_PROMPT})"
    assert marked("50.0", flagged[:2] + [results.units[0]]) == f"50.0 (2 of 3 units: {NO_PROMPT})"


def test_class_4_report_md_marks_every_figure_a_unit_without_a_prompt_enters(results):
    md = render_report(results)
    nli = [u for u in results.units if u.task == "builtin/nli" and u.method == "rospr"]
    animals = [u for u in results.units if u.task == "builtin/animals" and u.method == "rospr"]
    assert f"## Scored without a soft prompt ({len(nli) + 1} units)" in md
    for u in nli + animals[:1]:
        assert f"| {u.task} | {u.prompt} | rospr | {NOTE} | {100 * u.accuracy:.1f} |" in md
    (overall,) = [ln for ln in md.splitlines() if ln.startswith("| rospr |")]
    assert f"({len(nli) + 1} of {len(nli) + len(animals)} units: {NO_PROMPT})" in overall
    # the per-task table: task, prompts (a count, where the per-unit table has a prompt's name), means, medians
    (task_row,) = [ln for ln in md.splitlines() if re.match(r"\| builtin/nli \| \d+ \| ", ln)]
    assert f"({len(nli)} of {len(nli)} units: {NO_PROMPT})" in task_row
    for u in animals[1:]:  # the units that had their prompt: unmarked
        (row,) = [ln for ln in md.splitlines() if ln.startswith(f"| {u.task} | {u.prompt} | {u.n} |")]
        assert NO_PROMPT not in row
    (row,) = [ln for ln in md.splitlines() if ln.startswith(f"| {animals[0].task} | {animals[0].prompt} | {animals[0].n} |")]
    assert row.endswith(f"| {100 * animals[0].accuracy:.1f} ({NO_PROMPT}) |")


def test_class_4_report_html_marks_them_too(results):
    page = render_html(results)
    assert "Scored without a soft prompt" in page and NOTE in page
    cells = re.findall(r"<td[^>]*>([^<]*\(no soft prompt\)|[^<]*units: no soft prompt\))</td>", page)
    n_flagged = sum(map(without_prompt, results.units))
    assert len([c for c in cells if c.endswith(f"({NO_PROMPT})")]) >= n_flagged  # each unit's own cell
    assert any("units: no soft prompt" in c for c in cells)  # a task's mean, the overall
    plain = render_html(results.model_copy(update={"units": [u for u in results.units if not without_prompt(u)]}))
    assert NO_PROMPT not in plain and "Scored without a soft prompt" not in plain


def test_class_4_the_console_line_of_a_unit_without_a_prompt_says_so(results):
    from rich.console import Console
    from rich.progress import Progress

    from rospr_harness.cli.run import _Bar

    out = io.StringIO()
    bar = _Bar(Progress(console=Console(file=out, width=300)))
    bar.start(2)
    bar.unit_done(next(u for u in results.units if without_prompt(u)))
    bar.unit_done(next(u for u in results.units if u.method == "rospr" and not without_prompt(u)))
    first, second = [ln for ln in out.getvalue().splitlines() if "rospr" in ln]
    assert "NO soft prompt: scored on the T0 input" in first and NOTE in first
    assert "soft prompt" not in second
