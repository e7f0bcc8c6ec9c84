"""``rospr compare``: a run against the published T0 baselines, or against another run.

Against a baseline (a published number per dataset), the uncertainty is the run's own: a bootstrap
over the evaluation rows. Rows are resampled jointly for all prompts of a task (the prompts score
the same rows), so a task's mean-over-prompts gets an honest interval.

Against another run on the same examples, the comparison is paired: rows are resampled jointly for
both runs (paired bootstrap), and McNemar's exact test is reported for binary-scored tasks. A
regression is flagged when the delta is below ``-threshold`` points *and* significant (the upper end
of the ``1 - alpha`` interval is below zero; with ``test="mcnemar"``, McNemar's p < alpha).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from rospr_harness.figures import unit_figures
from rospr_harness.runfiles import verified_records
from rospr_harness.schema import read_results
from rospr_harness.stats import bootstrap_means, bootstrap_weights, mcnemar_exact, score_matrix, task_mean

__all__ = ["compare_to_baseline", "compare_runs", "load_baseline", "load_run_scores", "bootstrap_weights",
           "mcnemar_exact"]
from rospr.errors import RosprError, SettingError


class NothingCompared(RosprError, ValueError):
    """A comparison with not one row: no task (or prompt) scored on both sides. It must not pass as "no
    regression"; the message says what each side had."""


@dataclass(frozen=True)
class BaselineEntry:
    name: str
    accuracy: float  # fraction
    tasks: tuple[str, ...]


@dataclass(frozen=True)
class Baseline:
    name: str
    model: str
    source: str
    entries: tuple[BaselineEntry, ...]


def _baseline_data() -> dict:
    text = resources.files("rospr_harness").joinpath("data/baselines.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def load_baseline(name: str) -> Baseline:
    """The published accuracies of ``name`` (e.g. ``t0_3b``); refuses an unknown name."""
    data = _baseline_data()
    if name not in data:
        raise SettingError(f"--baseline {name!r}: unknown; known baselines: {sorted(data)}")
    b = data[name]
    entries = tuple(
        BaselineEntry(key, float(v["accuracy"]) / 100.0, tuple(v.get("tasks", [key])))
        for key, v in b["tasks"].items()
    )
    return Baseline(name, b["model"], b["source"], entries)


# ----------------------------------------------------------------------------------------------
# Run data: per (task, prompt) the metric value of every row, keyed by row index
# ----------------------------------------------------------------------------------------------


@dataclass
class RunScores:
    path: Path
    units: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    empty: list[tuple[str, str]] = field(default_factory=list)  # units with no scorable row: never compared

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.units))

    def prompts(self, task: str) -> list[str]:
        return [p for t, p in self.units if t == task]


def load_run_scores(run_dir: str | Path, method: str | None = None) -> RunScores:
    """Read a run directory's per-row scores for one method (the only one, or ``method``).

    A unit without a scorable row (every row skipped) has no accuracy: it is listed in ``empty``,
    not in ``units``, so that no comparison divides by its zero rows.
    Every score comes from a records file checked against the sha256 results.json lists for it,
    inside the run directory, each row's score recomputed from its prediction and gold
    (``rospr_harness.runfiles.verified_records``, ``unit_figures``); the accuracies in results.json are
    not read. Refuses (``ValueError`` naming the file and field) a missing or malformed results
    file, a records path outside the run, a missing digest and records that fail their checksum.
    """
    run_dir = Path(run_dir)
    path = run_dir / "results.json"
    res = read_results(path)
    methods = list(dict.fromkeys(u.method for u in res.units))
    if method is None:
        if len(methods) != 1:
            raise SettingError(f"{run_dir}: the run has methods {methods}; choose one with --method")
        method = methods[0]
    if method not in methods:
        raise SettingError(f"{run_dir}: no units for method {method!r}; it has {methods}")
    out = RunScores(run_dir, methods=methods)
    for i, u in enumerate(res.units):
        if u.method != method:
            continue
        where = f"{path}: units[{i}]"
        _, recs = verified_records(run_dir, u, where)
        figures = unit_figures(recs, run_dir / u.records, (u.task, u.prompt, u.method))
        if not figures.n:  # every row skipped: there is no accuracy to compare (it has no mean)
            out.empty.append((u.task, u.prompt))
            continue
        out.units[(u.task, u.prompt)] = figures.scores
    return out


@dataclass
class Row:
    """One line of a comparison: a task (``prompt`` None) or a (task, prompt)."""

    task: str
    prompt: str | None
    reference: float
    new: float
    delta: float
    low: float
    high: float
    p_value: float | None
    n: int
    regression: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Comparison:
    kind: str  # "baseline" or "run"
    reference: str
    rows: list[Row]
    threshold: float
    alpha: float
    missing: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # not compared: no scorable row (on one side, or in common)

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    def as_dict(self) -> dict:
        return {"kind": self.kind, "reference": self.reference, "threshold": self.threshold,
                "alpha": self.alpha, "missing": self.missing, "empty": self.empty,
                "rows": [r.as_dict() for r in self.rows],
                "regressions": [f"{r.task}" + (f" / {r.prompt}" if r.prompt else "") for r in self.regressions]}


def is_comparison_file(path: Path) -> bool:
    """Whether ``path`` holds a comparison ``rospr compare --json`` wrote (``Comparison.as_dict``'s fields,
    nothing else): the one file of that name ``--json`` may replace."""
    try:
        body = json.loads(Path(path).read_bytes()[: 1 << 26])
    except (OSError, ValueError):
        return False
    fields = {"kind", "reference", "threshold", "alpha", "missing", "empty", "rows", "regressions"}
    return isinstance(body, dict) and set(body) == fields


def _verdict(delta: float, high: float, p: float | None, threshold: float, alpha: float, test: str) -> bool:
    significant = (p is not None and p < alpha) if test == "mcnemar" else high < 0
    return bool(delta < -threshold and significant)


def compare_to_baseline(run: RunScores, baseline: Baseline, threshold: float = 0.01, alpha: float = 0.05,
                        n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Per baseline dataset (and per prompt) the run's accuracy minus the published one, with a
    bootstrap interval over rows. ``threshold`` is a fraction (0.01 = one point)."""
    rng = np.random.default_rng(seed)
    q = (alpha / 2, 1 - alpha / 2)
    rows, missing = [], []
    empty = [f"{t} / {p}" for t, p in run.empty]
    for entry in baseline.entries:
        present = [t for t in entry.tasks if any(t == k[0] for k in run.units)]
        if len(present) != len(entry.tasks):
            if not any(t == k[0] for t in entry.tasks for k in run.empty):
                missing.append(entry.name)
            continue
        task_samples, task_points, n_total = [], [], 0
        for task in entry.tasks:
            units = [run.units[(task, p)] for p in run.prompts(task)]
            idx = sorted(set().union(*units))
            m = score_matrix(units, idx)
            n_total += len(idx)
            task_points.append(task_mean(m))
            task_samples.append(bootstrap_means([m], n_boot, rng)[0])
            for p, u in zip(run.prompts(task), units):
                um = score_matrix([u], sorted(u))
                point = float(task_mean(um))
                samp = bootstrap_means([um], n_boot, rng)[0]
                lo, hi = np.quantile(samp - entry.accuracy, q)
                d = point - entry.accuracy
                rows.append(Row(task, p, entry.accuracy, point, d, float(lo), float(hi), None, len(u),
                                _verdict(d, hi, None, threshold, alpha, "bootstrap")))
        point = float(np.mean(task_points))
        samp = np.mean(task_samples, axis=0)
        lo, hi = np.quantile(samp - entry.accuracy, q)
        d = point - entry.accuracy
        rows.append(Row(entry.name, None, entry.accuracy, point, d, float(lo), float(hi), None, n_total,
                        _verdict(d, hi, None, threshold, alpha, "bootstrap")))
    return _compared(Comparison("baseline", baseline.name, rows, threshold, alpha, missing, empty), run,
                     f"the baseline {baseline.name!r} (a dataset of several tasks, like ANLI's rounds, needs all "
                     "of them)")


def compare_runs(new: RunScores, old: RunScores, threshold: float = 0.01, alpha: float = 0.05,
                 n_boot: int = 2000, seed: int = 0, test: str = "bootstrap") -> Comparison:
    """Paired comparison on the rows both runs scored, per task and per (task, prompt).

    ``test`` decides significance: "bootstrap" (paired bootstrap interval) or "mcnemar" (exact
    McNemar on binary scores; p-values are reported either way when the scores are binary).
    """
    if test not in ("bootstrap", "mcnemar"):
        raise SettingError(f"--test {test!r}: choose bootstrap or mcnemar")
    rng = np.random.default_rng(seed)
    q = (alpha / 2, 1 - alpha / 2)
    rows, missing = [], []
    blank = set(new.empty) | set(old.empty)
    empty = [f"{t} / {p}" for t, p in dict.fromkeys([*new.empty, *old.empty])]
    for task in new.tasks():
        prompts = [p for p in new.prompts(task) if (task, p) in old.units]
        missing += [f"{task} / {p}" for p in new.prompts(task) if (task, p) not in old.units and (task, p) not in blank]
        pairs, compared = [], []
        for p in prompts:
            a, b = new.units[(task, p)], old.units[(task, p)]
            common = sorted(set(a) & set(b))
            if not common:  # both scored rows, but none of the same: nothing to pair
                empty.append(f"{task} / {p} (no row in common)")
                continue
            compared.append(p)
            pairs.append(({r: a[r] for r in common}, {r: b[r] for r in common}))
        prompts = compared
        if not prompts:
            continue
        idx = sorted(set().union(*(set(x) for x, _ in pairs)))
        mn, mo = score_matrix([x for x, _ in pairs], idx), score_matrix([y for _, y in pairs], idx)
        sn, so = bootstrap_means([mn, mo], n_boot, rng)  # rows resampled jointly for both runs (paired)
        diff = sn - so
        d = float(task_mean(mn) - task_mean(mo))
        lo, hi = np.quantile(diff, q)
        p = _mcnemar_over(pairs)
        rows.append(Row(task, None, float(task_mean(mo)), float(task_mean(mn)), d, float(lo), float(hi), p,
                        len(idx), _verdict(d, hi, p, threshold, alpha, test)))
        for prompt, (x, y) in zip(prompts, pairs):
            ids = sorted(x)
            a, b = score_matrix([x], ids), score_matrix([y], ids)
            sa, sb = bootstrap_means([a, b], n_boot, rng)
            du = sa - sb
            dd = float(task_mean(a) - task_mean(b))
            lo, hi = np.quantile(du, q)
            pu = _mcnemar_over([(x, y)])
            rows.append(Row(task, prompt, float(task_mean(b)), float(task_mean(a)), dd, float(lo), float(hi), pu,
                            len(ids), _verdict(dd, hi, pu, threshold, alpha, test)))
    missing += [f"{t} / {p}" for (t, p) in old.units if (t, p) not in new.units and (t, p) not in blank]
    return _compared(Comparison("run", str(old.path), rows, threshold, alpha, missing, empty), new,
                     f"the run {old.path} (tasks: {', '.join(old.tasks()) or 'none scored'})")


def _compared(cmp: Comparison, run: RunScores, reference: str) -> Comparison:
    """``cmp``, unless it compared nothing (``NothingCompared``, naming both sides)."""
    if cmp.rows:
        return cmp
    why = "; ".join(x for x in (f"absent from one side: {', '.join(cmp.missing)}" if cmp.missing else "",
                                 f"no scorable row: {', '.join(cmp.empty)}" if cmp.empty else "") if x)
    raise NothingCompared(f"{run.path}: nothing compared: its tasks ({', '.join(run.tasks()) or 'none scored'}) have "
                          f"nothing in common with {reference}" + (f" ({why})" if why else "")
                          + "; compare runs of the same tasks, or run the baseline's tasks")


def _mcnemar_over(pairs: list[tuple[dict[int, float], dict[int, float]]]) -> float | None:
    """McNemar over every (unit, row) pair; None when some score is not 0/1 (BIG-bench partial credit)."""
    b = c = 0
    for x, y in pairs:
        for r in x:
            s, t = x[r], y[r]
            if s not in (0.0, 1.0) or t not in (0.0, 1.0):
                return None
            b += int(s == 1.0 and t == 0.0)
            c += int(s == 0.0 and t == 1.0)
    return mcnemar_exact(b, c)
