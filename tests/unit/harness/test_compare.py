"""`rospr compare`: intervals, paired tests and exit codes against hand computations."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from rospr_harness.cli import app
from rospr_harness.compare import (
    compare_runs,
    compare_to_baseline,
    load_baseline,
    load_run_scores,
    mcnemar_exact,
)
from rospr_harness.figures import summarise
from rospr_harness.schema import (Provenance, Record, ResultsFile, UnitResult, atomic_write_text, records_text,
                                  write_results)


def make_run(path, units: dict[tuple[str, str], list[float]], method="t0"):
    """A run directory with the given per-row 0/1 scores (rows indexed 0..n-1): prediction 0, gold 0
    where the score is 1 and 1 where it is 0; each records file listed with its sha256, as a run does."""
    done = []
    for i, ((task, prompt), scores) in enumerate(units.items()):
        rel = f"records/u{i}.jsonl"
        rows = scores.items() if isinstance(scores, dict) else enumerate(scores)  # a dict: {row index: score}
        (path / "records").mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / rel, records_text([
            Record(index=j, input="", choices=["a", "b"], scores=[0.0, -1.0], prediction=0, gold=0 if s == 1.0 else 1,
                   target_scores=None, score=float(s)) for j, s in rows]))
        digest = hashlib.sha256((path / rel).read_bytes()).hexdigest()
        values = list(scores.values()) if isinstance(scores, dict) else scores
        done.append(UnitResult(task=task, prompt=prompt, method=method, n=len(values),
                               accuracy=float(np.mean(values)) if values else None, records=rel, sha256=digest,
                               skipped=0 if values else 3))
    tasks, overall = summarise(done)
    prov = Provenance(git_revision=None, git_dirty=None, package_versions={}, config_hash="x", model={},
                      backend="torch", seed=0, host={}, started_at="now", wall_s=0.0)
    write_results(path / "results.json", ResultsFile(provenance=prov, config={}, units=done, tasks=tasks, overall=overall))
    return path


def bernoulli(n, p, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(float).tolist()


def test_mcnemar_matches_hand_computation():
    # b=10, c=2: p = 2 * (C(12,0)+C(12,1)+C(12,2)) / 2^12 = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_baseline_interval_width_matches_normal_approximation(tmp_path):
    rows = bernoulli(2000, 0.70, 0)
    run = load_run_scores(make_run(tmp_path, {("rte", "p1"): rows}))
    cmp = compare_to_baseline(run, load_baseline("t0_3b"), n_boot=4000)
    rte = next(r for r in cmp.rows if r.task == "rte" and r.prompt is None)
    acc = np.mean(rows)
    assert rte.new == pytest.approx(acc) and rte.reference == pytest.approx(0.646)
    half = 1.96 * math.sqrt(acc * (1 - acc) / len(rows))  # normal-approximation half-width
    assert (rte.high - rte.low) / 2 == pytest.approx(half, rel=0.1)
    assert rte.low < acc - 0.646 < rte.high
    assert "cb" in cmp.missing and not rte.regression


def test_anli_is_averaged_over_rounds(tmp_path):
    units = {(f"anli_r{k}", "p"): [1.0] * (10 * k) + [0.0] * (10 * (4 - k)) for k in (1, 2, 3)}  # 25%, 50%, 75%
    cmp = compare_to_baseline(load_run_scores(make_run(tmp_path, units)), load_baseline("t0_3b"), n_boot=200)
    anli = next(r for r in cmp.rows if r.task == "anli")
    assert anli.new == pytest.approx(0.5) and anli.reference == pytest.approx(0.334)


def test_identical_runs_no_regression_and_big_drop_is_flagged(tmp_path):
    old_rows = bernoulli(600, 0.75, 1)
    old = make_run(tmp_path / "old", {("cb", "a"): old_rows, ("cb", "b"): old_rows[::-1]})
    same = make_run(tmp_path / "same", {("cb", "a"): old_rows, ("cb", "b"): old_rows[::-1]})
    worse_rows = [0.0 if (i % 4 == 0) else s for i, s in enumerate(old_rows)]  # ~19 points lower
    worse = make_run(tmp_path / "worse", {("cb", "a"): worse_rows, ("cb", "b"): old_rows[::-1]})
    c0 = compare_runs(load_run_scores(same), load_run_scores(old), n_boot=500)
    assert not c0.regressions and all(r.delta == 0 for r in c0.rows)
    c1 = compare_runs(load_run_scores(worse), load_run_scores(old), n_boot=500)
    flagged = {(r.task, r.prompt) for r in c1.regressions}
    assert ("cb", "a") in flagged and ("cb", None) in flagged and ("cb", "b") not in flagged
    lost = sum(1 for i, s in enumerate(old_rows) if i % 4 == 0 and s == 1.0)
    row_a = next(r for r in c1.rows if r.prompt == "a")
    assert row_a.delta == pytest.approx(-lost / 600)
    assert row_a.p_value == pytest.approx(mcnemar_exact(0, lost))
    # a drop smaller than the threshold is not a regression even when significant
    c2 = compare_runs(load_run_scores(worse), load_run_scores(old), threshold=0.5, n_boot=200)
    assert not c2.regressions


def test_cli_exit_codes(tmp_path):
    rows = bernoulli(400, 0.8, 2)
    old = make_run(tmp_path / "old", {("rte", "x"): rows})
    worse = make_run(tmp_path / "new", {("rte", "x"): [0.0] * 200 + rows[200:]})
    runner = CliRunner()
    ok = runner.invoke(app, ["compare", str(old), "--against", str(old)])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["compare", str(worse), "--against", str(old), "--json", str(tmp_path / "c.json")])
    assert bad.exit_code == 1 and "significant regression(s)" in bad.output and "rte / x" in bad.output
    assert (tmp_path / "c.json").is_file()
    low = make_run(tmp_path / "low", {("rte", "x"): bernoulli(800, 0.40, 3)})
    base = runner.invoke(app, ["compare", str(low), "--baseline", "t0_3b"])
    assert base.exit_code == 1 and "rte" in base.output
    neither = runner.invoke(app, ["compare", str(old)])
    assert neither.exit_code == 2
    unknown = runner.invoke(app, ["compare", str(old), "--baseline", "t5"])
    assert unknown.exit_code == 2 and "t0_3b" in unknown.output


def test_units_without_a_scorable_row_are_listed_never_divided_by(tmp_path):
    """A unit whose rows were all skipped (n 0), or two units with no row in common,
    are listed as not compared; the figures of the rest are the hand computation's."""
    new = make_run(tmp_path / "new", {("a", "p1"): [1.0, 0.0, 1.0, 1.0], ("a", "p2"): [], ("b", "p1"): [],
                                      ("c", "p"): {0: 1.0, 1: 0.0}})
    old = make_run(tmp_path / "old", {("a", "p1"): [1.0, 1.0, 1.0, 1.0], ("a", "p2"): [1.0, 0.0],
                                      ("b", "p1"): [0.0, 1.0], ("c", "p"): {5: 1.0, 6: 1.0}})
    cmp = compare_runs(load_run_scores(new), load_run_scores(old), n_boot=200)
    assert cmp.empty == ["a / p2", "b / p1", "c / p (no row in common)"] and cmp.missing == []
    by = {(r.task, r.prompt): r for r in cmp.rows}
    assert set(by) == {("a", None), ("a", "p1")}  # a's mean is over p1 alone: p2 has no row on one side
    assert by[("a", None)].new == pytest.approx(3 / 4) and by[("a", None)].reference == pytest.approx(1.0)
    assert all(math.isfinite(v) for r in cmp.rows for v in (r.new, r.reference, r.delta, r.low, r.high))
    base = compare_to_baseline(load_run_scores(make_run(tmp_path / "rte", {("rte", "p1"): [], ("rte", "p2"): [1.0, 0.0]})),
                               load_baseline("t0_3b"), n_boot=200)
    rte = next(r for r in base.rows if r.task == "rte" and r.prompt is None)
    assert rte.new == pytest.approx(0.5) and base.empty == ["rte / p1"] and "rte" not in base.missing
    r = CliRunner().invoke(app, ["compare", str(new), "--against", str(old), "--json", str(tmp_path / "c.json")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "not compared (no scorable row" in " ".join(r.output.split())
    assert "NaN" not in (tmp_path / "c.json").read_text()


def test_zero_rows_are_refused_by_the_bootstrap_itself():
    from rospr_harness.compare import bootstrap_weights

    with pytest.raises(ValueError, match="zero rows"):
        bootstrap_weights(0, 10, np.random.default_rng(0))


def test_class_4_a_comparison_that_compared_nothing_fails(tmp_path):
    """class 4: no figure hides what happened. A comparison with not one row (no task of the run in the
    baseline; runs of other tasks; runs whose shared units have no row in common, or none scorable) is a
    ``NothingCompared`` refusal naming both sides, and ``rospr compare`` exits 2 in one line, writing no
    --json: never 0 with "no significant regression"."""
    from helpers import cli, error_line

    from rospr_harness.compare import NothingCompared

    mine = make_run(tmp_path / "mine", {("builtin/animals", "p"): [1.0, 0.0, 1.0]})
    other = make_run(tmp_path / "other", {("builtin/nli", "p"): [1.0, 1.0]})
    apart = make_run(tmp_path / "apart", {("builtin/animals", "p"): {7: 1.0, 8: 0.0}})  # same unit, other rows
    blank = make_run(tmp_path / "blank", {("builtin/animals", "p"): []})  # every row skipped
    one_round = make_run(tmp_path / "r1", {("anli_r1", "p"): [1.0, 0.0]})  # ANLI needs its three rounds
    with pytest.raises(NothingCompared, match="nothing compared.*builtin/animals.*t0_3b"):
        compare_to_baseline(load_run_scores(mine), load_baseline("t0_3b"), n_boot=50)
    with pytest.raises(NothingCompared, match="absent from one side: anli"):
        compare_to_baseline(load_run_scores(one_round), load_baseline("t0_3b"), n_boot=50)
    for ref, why in ((other, "absent from one side"), (apart, "no row in common"), (blank, "no scorable row")):
        with pytest.raises(NothingCompared, match=why):
            compare_runs(load_run_scores(mine), load_run_scores(ref), n_boot=50)
    for args in (["--baseline", "t0_3b"], ["--against", other]):
        r = cli("compare", mine, *args, "--json", tmp_path / "c.json")
        error_line(r, "nothing compared", str(mine))
        assert "no significant regression" not in r.output and not (tmp_path / "c.json").exists()
    # one row compared is a comparison: the rule is "nothing", not "little"
    partial = make_run(tmp_path / "partial", {("builtin/animals", "p"): [1.0, 0.0, 1.0], ("rte", "p"): [1.0, 0.0]})
    assert [r.task for r in compare_to_baseline(load_run_scores(partial), load_baseline("t0_3b"), n_boot=50).rows] \
        == ["rte", "rte"]
