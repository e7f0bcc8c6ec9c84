"""rospr_harness.method.tune_pool: who trains the prompts a bank lacks, and what it tells meanwhile.

class 8: what users meet. Tuning takes minutes; it shows its progress as a run does: a line before (prompts,
steps each) and one per prompt (i of n, its loss from first to last step, time so far and left), on stderr under
the CLI, whichever trainer (in process or Ray) does the work. The Ray pool's fault handling (class 6) is in
tests/e2e/test_tuning_actor_death.py (a real actor killed)."""

from __future__ import annotations

import logging
import re

import numpy as np

from rospr.tuning import TuneJob, TuneResult
from rospr_harness.method.tune_pool import reporting


def test_class_8_tuning_reports_each_prompt_as_it_is_saved(caplog):
    """Three prompts: a line before, then one per prompt in the order they are saved (any order a pool returns
    them in), each after its save; the losses shown are the result's first and last."""
    jobs = [TuneJob("src", f"t{i}", ("a", "b"), (), None) for i in range(3)]
    saved: list[str] = []

    def pool(todo, save):  # returns them out of order, as a Ray pool may
        for job, first in zip(reversed(todo), (3.0, 2.5, 2.0)):
            save(job.id, TuneResult(np.zeros((1, 1), np.float32), [first, first / 2, first / 4], 0))

    def save(pid, result):  # the prompt is saved before its line tells it is done
        assert not any(pid in r.getMessage() for r in caplog.records)
        saved.append(pid)

    with caplog.at_level(logging.INFO, logger="rospr_harness.method.tune_pool"):
        reporting(pool, steps=3)(jobs, save)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "tuning 3 prompts, 3 steps each"
    assert saved == ["src/t2", "src/t1", "src/t0"]
    for k, (line, pid, first) in enumerate(zip(lines[1:], saved, (3.0, 2.5, 2.0)), start=1):
        assert re.fullmatch(rf"tuned {k}/3 {re.escape(pid)}: loss {first:.3f} -> {first / 4:.3f} in 3 steps "
                            r"\(\d+ s so far, about \d+ s left\)", line), line
    assert len(lines) == 4


def test_class_8_rospr_tune_shows_its_progress(tiny_model_dir, tmp_path):
    """``rospr tune`` in process: the progress lines on stderr, each tuned prompt once (no second line of its
    own), and a tuning that finds every prompt in the bank says it reused them."""
    from helpers import cli

    args = ["tune", "--model", tiny_model_dir, "--sources", "builtin/animals", "--out", tmp_path / "bank",
            "--set", "steps=3", "--set", "prompt_length=2", "--set", "batch_size=4", "--set", "parallel=off"]
    res = cli(*args)
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    n = int(re.search(r"tuning (\d+) prompts, 3 steps each", out).group(1))
    assert n >= 2 and all(f"tuned {k}/{n} builtin/animals/" in out for k in range(1, n + 1)), out
    assert f"({n} tuned now)" in out and "reused" not in out
    again = " ".join(cli(*args).output.split())
    assert "tuning " not in again and again.count("reused builtin/animals/") == n and "(0 tuned now)" in again
