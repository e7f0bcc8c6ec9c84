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


def test_class_8_a_long_prompt_tells_its_steps_a_short_one_nothing(tiny_backbone, tiny_model_dir, caplog,
                                                                   monkeypatch):
    """class 8: within a prompt, tuning tells its step and loss every ``STEP_LOG_S`` seconds (here 0: every
    step); a prompt shorter than that says nothing; the losses told are the result's."""
    import rospr.tuning as tuning
    from rospr.tuning import TuneSettings, TuneWorker
    from unit.rospr.test_tuning import _jobs

    model, tokenizer, _ = tiny_backbone
    job = _jobs(8)[0]
    settings = TuneSettings(prompt_length=2, steps=3, batch_size=4)
    worker = TuneWorker(str(tiny_model_dir), settings, model, tokenizer)
    with caplog.at_level(logging.INFO, logger="rospr.tuning"):
        monkeypatch.setattr(tuning, "STEP_LOG_S", 1e9)  # a prompt shorter than the interval
        _, quiet = worker.tune(job)
        assert not [r for r in caplog.records if "step" in r.getMessage()]
        monkeypatch.setattr(tuning, "STEP_LOG_S", 0.0)
        _, result = worker.tune(job)
    lines = [r.getMessage() for r in caplog.records if "step" in r.getMessage()]
    assert lines == [f"tuning {job.id}: step {k + 1}/3, loss {loss:.3f}" for k, loss in enumerate(result.losses)]
    np.testing.assert_array_equal(quiet.values, result.values)  # telling changes nothing
