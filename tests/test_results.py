"""harness/results.py: a results file with a figure that is not a finite number is never written."""

from __future__ import annotations

import re

import pytest


def test_a_results_file_with_a_non_finite_figure_is_never_written(tmp_path):
    """Writing refuses what reading would: NaN or inf anywhere, named by its field."""
    from rospr_harness.results import Provenance, ResultsFile, UnitResult, read_results, write_results

    prov = Provenance(git_revision=None, git_dirty=None, package_versions={}, config_hash="x", model={},
                      backend="torch", seed=0, host={}, started_at="now", wall_s=0.0)
    unit = UnitResult(task="t", prompt="p", method="t0", n=2, accuracy=float("inf"), records="records/u.jsonl")
    path = tmp_path / "results.json"
    for bad, field in ((ResultsFile(provenance=prov, config={}, units=[unit], tasks=[], overall={}), "units[0].accuracy"),
                       (ResultsFile(provenance=prov, config={}, units=[], tasks=[], overall={"t0": float("nan")}),
                        "overall.t0"),
                       (ResultsFile(provenance=prov, config={}, units=[], tasks=[], overall={},
                                    execution={"time": {"wall_s": float("-inf")}}), "execution.time.wall_s")):
        with pytest.raises(ValueError, match=f"field {re.escape(field)} is not a finite number"):
            write_results(path, bad)
        assert not path.exists()
    good = ResultsFile(provenance=prov, config={}, units=[unit.model_copy(update={"accuracy": 0.5})], tasks=[], overall={})
    write_results(path, good)
    assert read_results(path) == good
