"""``report.md``: the readable summary of a run (per unit, per task, overall; methods side by side)."""

from __future__ import annotations

from pathlib import Path

from rospr_harness.schema import ResultsFile, RunTime, UnitResult, atomic_write_text


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal; "–" for none (also the HTML report's cells)."""
    return "–" if x is None else f"{100 * x:.1f}"


NO_PROMPT = "no soft prompt"


def without_prompt(unit: UnitResult) -> bool:
    """Whether ``unit`` is of a RoSPr method yet was scored without any soft prompt (its retrieval chose
    none: leave-one-out removed every candidate, say): its figures are the T0 input's, under the method's name."""
    return unit.retrieval is not None and not unit.retrieval.chosen


def marked(text: str, units: list[UnitResult]) -> str:
    """``text`` (a figure of ``units``) with how many of them were scored without a soft prompt, if any."""
    k = sum(map(without_prompt, units))
    if not k:
        return text
    return f"{text} ({NO_PROMPT})" if len(units) == 1 else f"{text} ({k} of {len(units)} units: {NO_PROMPT})"


def without_prompt_rows(res: ResultsFile) -> list[list[str]]:
    """The units of both reports scored without the soft prompt their method names: task, prompt, method,
    why (the retrieval log's note), accuracy."""
    return [[u.task, u.prompt, u.method, u.retrieval.note or "no prompt chosen", pct(u.accuracy)]  # type: ignore
            for u in res.units if without_prompt(u)]


WITHOUT_PROMPT_NOTE = ("These units of a RoSPr method were scored without any soft prompt: their retrieval chose "
                       "none (for instance leave-one-out removed every candidate), so their figures are the T0 "
                       f"baseline's under the method's name. Their cells are marked ({NO_PROMPT}).")


def method_units(res: ResultsFile, method: str, task: str | None = None) -> list[UnitResult]:
    """The scored units of ``method`` (of ``task``, or of every task): those a task's mean and ``overall`` count."""
    return [u for u in res.units if u.method == method and (task is None or u.task == task)
            and u.n > 0 and u.accuracy is not None]


def unit_rows(res: ResultsFile, methods: list[str]) -> list[list[str]]:
    """The per-(task, prompt) table of both reports: task, prompt, n, skipped, then each method's
    accuracy ("–" where the method has no unit there; marked where it was scored without a soft prompt)."""
    cells: dict[tuple[str, str], dict[str, object]] = {}
    for u in res.units:
        cells.setdefault((u.task, u.prompt), {})[u.method] = u
    rows = []
    for (task, prompt), per in cells.items():
        any_u = next(iter(per.values()))
        rows.append([task, prompt, str(any_u.n), str(any_u.skipped)]  # type: ignore[attr-defined]
                    + [marked(pct(per[m].accuracy), [per[m]]) if m in per else "–"  # type: ignore[attr-defined,list-item]
                       for m in methods])
    return rows


def spread_rows(res: ResultsFile) -> list[list[str]]:
    """The standard-error table of both reports: per task and method its mean over prompts, then each of its
    units: task, prompt ("mean of N prompts" for the task), method, n, accuracy, ± stderr, 95% interval
    (``UnitResult``/``TaskSummary`` ``stderr``, ``ci_low``, ``ci_high``; "–" where undefined or not recorded)."""
    def cells(x, stderr, lo, hi) -> list[str]:
        return [pct(x), "–" if stderr is None else f"{100 * stderr:.1f}",
                "–" if lo is None or hi is None else f"{pct(lo)} – {pct(hi)}"]

    rows = []
    for s in res.tasks:
        rows.append([s.task, marked(f"mean of {s.n_prompts} prompts", method_units(res, s.method, s.task)), s.method,
                     ""] + cells(s.mean, s.stderr, s.ci_low, s.ci_high))
        rows += [[u.task, u.prompt, marked(u.method, [u]), str(u.n)] + cells(u.accuracy, u.stderr, u.ci_low, u.ci_high)
                 for u in res.units if u.task == s.task and u.method == s.method]
    return rows


def _table(header: list[str], rows: list[list[str]], text_cols: int = 1) -> list[str]:
    """A markdown table; the first ``text_cols`` columns left-aligned, numbers right-aligned."""
    align = ["---"] * text_cols + ["---:"] * (len(header) - text_cols)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def render_report(res: ResultsFile) -> str:
    """Markdown: overall mean per method, per-task mean/median over prompts, per-(task, prompt) accuracy."""
    methods = list(dict.fromkeys(u.method for u in res.units))
    prov = res.provenance
    lines = [
        "# rospr run report",
        "",
        f"- model: `{prov.model.get('name')}` ({prov.model.get('n_parameters', '?')} parameters, "
        f"config {prov.model.get('config_hash', '?')}), backend `{prov.backend}`",
        f"- git: `{prov.git_revision or 'unknown'}`{' (dirty)' if prov.git_dirty else ''}, "
        f"config hash `{prov.config_hash}`, seed {prov.seed}",
        f"- started {prov.started_at}, wall time {prov.wall_s:.1f} s",
        *_execution_line(res),
        *_rospr_line(res, methods),
        "",
        "Accuracy in % (BIG-bench: multiple_choice_grade). Per task: mean and median over its prompts; "
        "overall: mean over tasks of the per-task mean.",
        "",
        "## Overall",
        "",
    ]
    base = res.overall.get("t0")
    lines += _table(["method", "mean over tasks", "Δ vs t0"],
                    [[m, marked(pct(res.overall.get(m)), method_units(res, m)),
                      _delta(res.overall.get(m), base) if m != "t0" else ""] for m in methods])
    unprompted = without_prompt_rows(res)
    if unprompted:
        lines += ["", f"## Scored without a soft prompt ({len(unprompted)} units)", "", WITHOUT_PROMPT_NOTE, ""]
        lines += _table(["task", "prompt", "method", "why", "accuracy"], unprompted, text_cols=4)
    lines += ["", "## Per task", ""]
    by_task: dict[str, dict[str, object]] = {}
    for s in res.tasks:
        by_task.setdefault(s.task, {})[s.method] = s
    header = ["task", "prompts"] + [f"{m} {k}" for m in methods for k in ("mean", "median")]
    rows = []
    for task, per in by_task.items():
        n = max(s.n_prompts for s in per.values())  # type: ignore[attr-defined]
        row = [task, str(n)]
        for m in methods:
            s = per.get(m)
            row += [marked(pct(s.mean), method_units(res, m, task)), pct(s.median)] if s else ["–", "–"]  # type: ignore
        rows.append(row)
    lines += _table(header, rows)
    lines += ["", "## Per (task, prompt)", ""]
    lines += _table(["task", "prompt", "n", "skipped"] + methods, unit_rows(res, methods), text_cols=2)
    lines += ["", "## Standard errors and intervals", "",
              "Standard error: the sample standard deviation over the rows / sqrt(n), as lm-evaluation-harness's "
              "`acc_stderr` (a task's: its mean over prompts, linearised over the rows they share). Interval: 95% "
              "bootstrap over the rows (2000 replicates; a task's rows resampled for all its prompts at once). In "
              "points of accuracy.", ""]
    lines += _table(["task", "prompt", "method", "n", "accuracy", "± stderr", "95% interval"], spread_rows(res),
                    text_cols=3)
    skipped = skipped_rows(res)
    if skipped:
        lines += ["", "## Skipped rows", "",
                  "Rows left out of a unit's accuracy, and why; a unit with n = 0 has no accuracy (–) and is left "
                  "out of its task's mean and of `rospr compare`.", ""]
        lines += _table(["task", "prompt", "why", "n", "skipped"], skipped, text_cols=3)
    lines += _rospr_sections(res, methods, by_task)
    lines += _time_section(res)
    cached = [u for u in res.units if u.cached]
    if cached:
        lines += ["", "## Reused from cache", "",
                  f"{len(cached)} units were reused from the unit cache (same content key: model, retriever, "
                  "bank, library, data, template, convention, method settings), not recomputed:", ""]
        lines += _table(["task", "prompt", "method", "accuracy"],
                        [[u.task, u.prompt, u.method, pct(u.accuracy)] for u in cached], text_cols=3)
    return "\n".join(lines) + "\n"


def skipped_rows(res: ResultsFile) -> list[list[str]]:
    """One row per (task, prompt) that skipped rows or scored none: task, prompt, the reasons with
    their counts (``UnitResult.skipped_reasons``), n and skipped."""
    seen, rows = set(), []
    for u in res.units:
        if (u.task, u.prompt) in seen or (u.skipped == 0 and u.n > 0):
            continue
        seen.add((u.task, u.prompt))
        why = "; ".join(f"{k}: {v}" for k, v in u.skipped_reasons.items()) or ("not recorded" if u.skipped else "")
        if u.n == 0:
            why = "no scorable row" + (f" ({why})" if why else "")
        rows.append([u.task, u.prompt, why, str(u.n), str(u.skipped)])
    return rows


STAGE_LABELS = {"setup": "setup (backend load or export, provenance)", "prepare": "prepare (prompt bank, library)",
                "executor": "executor start (workers, Ray actors)", "load": "task loading (rows, templates)",
                "cache": "unit cache (keys, lookups, stores)", "tokenise": "tokenising",
                "select": "selection (frequencies, VAR ranking, mixes)", "wait": "waiting on the executor",
                "write": "writing (records, results.json)", "other": "other (plan, run directory, driver loop)"}
WORK_LABELS = {"retrieval": "retrieval (embed + search)", "var": "VAR scoring of the queries",
               "scoring": "scoring", "model": "of which inside the scorer's session calls"}


def time_rows(time: RunTime | None) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """The rows of the three timing tables of a run's ``execution.time`` (``rospr_harness.runner.stages``):
    driver stages (seconds, % of wall), executor work (seconds, % of wall x scorers) and rates. Empty
    tables for a run without it (written before it was recorded)."""
    if not time:
        return [], [], []
    wall, scorers = time.wall_s, time.scorers or 1

    def pct(x: float, of: float) -> str:
        return f"{100 * x / of:.1f}" if of > 0 else "–"

    stages = dict(time.stages_s, other=time.other_s)
    driver = [[STAGE_LABELS.get(k, k), f"{v:.2f}", pct(v, wall)] for k, v in stages.items()]
    work = [[WORK_LABELS.get(k, k), f"{v:.2f}", pct(v, wall * scorers)] for k, v in time.work_s]
    n, scoring = time.scoring_examples, time.work_s.scoring

    def secs(x) -> str:
        return "–" if x is None else f"{x:.2f}"

    rates = [["examples scored (scoring batches)", str(n)],
             ["examples / s, end to end (wall)", f"{n / wall:.1f}" if wall > 0 and n else "–"],
             ["examples / s, the scorer's own (scoring work)", f"{n / scoring:.1f}" if scoring > 0 and n else "–"],
             ["model's share of the wall time (x scorers)",
              "–" if time.model_share is None else f"{100 * time.model_share:.1f} %"],
             ["process start to run start (s): interpreter, imports", secs(time.startup_s)],
             ["process start to first scored batch (s)", secs(time.first_batch_s)]]
    return driver, work, rates


def _time_section(res: ResultsFile) -> list[str]:
    driver, work, rates = time_rows(res.execution.time if res.execution else None)
    if not driver:
        return []
    lines = ["", "## Where the time went", "",
             "Driver stages are disjoint intervals of the driver's thread (they sum to the wall time with "
             "'other'); executor work is what the workers report (in process it lies inside 'waiting'; on "
             "Ray it is summed over actors, hence % of wall x scorers).", ""]
    lines += _table(["driver stage", "s", "% of wall"], driver)
    lines += [""] + _table(["executor work", "s", "% of wall x scorers"], work)
    lines += [""] + _table(["rate", "value"], rates)
    return lines


def _execution_line(res: ResultsFile) -> list[str]:
    ex = res.execution
    if not ex:
        return []
    if ex.started is False:  # every unit kept or cached: no executor (or Ray) was started
        where = "nowhere (nothing to compute: no executor started)"
    else:
        where = f"Ray, {ex.scorers if ex.scorers is not None else '?'} scoring actors" if ex.executor == "ray" \
            else "in process"
    return [f"- executed {where}: {ex.computed} units computed, {ex.cached} reused from cache, "
            f"{ex.resumed} kept from an interrupted run"]


def _rospr_line(res: ResultsFile, methods: list[str]) -> list[str]:
    """The retriever and the settings the paper leaves open (docs/method.md), for a run with RoSPr methods."""
    rc = res.config.get("rospr") or {}
    if not any(m != "t0" for m in methods) or not rc:
        return []
    r = res.provenance.retriever or {}
    who = f"retriever `{r.get('name', '?')}` (weights {r.get('weights', '?')})" if r else "retriever not recorded"
    made = [f"{what} on {', '.join(d) if isinstance(d, list) else d}" for what, d in
            (("bank tuned", r.get("bank_devices")), ("library keys embedded", r.get("library_device"))) if d]
    if made:
        who += f", {' and '.join(made)}"
    return [f"- RoSPr: {who}; preset `{rc.get('preset', 'ours')}`: library {rc.get('library_sample', 'first')} "
            f"{rc.get('library_n')} rows per prompt, {'cosine' if rc.get('normalize', True) else 'dot-product'} "
            f"similarity, votes {rc.get('votes', 'all')}, {rc.get('pooling', 'masked')} pooling (docs/method.md)"]


def _delta(x: float | None, base: float | None) -> str:
    return "–" if x is None or base is None else f"{100 * (x - base):+.1f}"


def _rospr_sections(res: ResultsFile, methods: list[str], by_task: dict) -> list[str]:
    """RoSPr methods next to the T0 baseline per task (mean over prompts, delta), and the prompts
    each unit retrieved (the full evidence is in results.json, ``units[].retrieval``)."""
    rospr = [m for m in methods if m != "t0"]
    if not rospr:
        return []
    lines = ["", "## RoSPr vs the T0 baseline", "",
             "Mean accuracy over each task's prompts; in brackets the difference from t0 in points."]
    lines.append("")
    header = ["task", "t0"] + rospr
    rows = []
    for task, per in by_task.items():
        base = per.get("t0")
        row = [task, pct(base.mean) if base else "–"]
        for m in rospr:
            s = per.get(m)
            row.append("–" if s is None else f"{pct(s.mean)} ({_delta(s.mean, base.mean if base else None)})")
        rows.append(row)
    lines += _table(header, rows)
    lines += ["", "## Retrieved prompts", "",
              "The chosen prompt(s) with weights, and the most frequent candidates (hits of Q×N; +var: VAR score)."]
    lines.append("")
    rows = []
    for u in res.units:
        r = u.retrieval
        if not r:
            continue
        chosen = ", ".join(f"{pid} ({w:.2f})" for pid, w in zip(r.chosen, r.weights)) or "none"
        cands = "; ".join(f"{c.id} ×{c.frequency}" + (f" var {c.var_score:.3g}" if c.var_score is not None else "")
                          for c in r.candidates[:3])
        rows.append([u.task, u.prompt, u.method, chosen, cands])
    lines += _table(["task", "prompt", "method", "chosen (weight)", "top candidates"], rows, text_cols=5)
    return lines


def write_report(path: Path, res: ResultsFile) -> None:
    atomic_write_text(path, render_report(res))
