"""class 6: tuning survives what scoring survives (rospr_harness/method/tune_pool.py over rospr_harness/ray_faults.py).

A real Ray tuning actor is killed (SIGKILL of its process, as the OOM killer does) while it tunes a prompt:
Ray restarts it and reruns the prompt there, as it does for a scoring actor's batch, to the same numbers as
in process, and the pool's summary counts it. An actor gone for good (here: not restarted) has its prompt
resubmitted, and when that dies too, the tuning ends in one line naming the prompt, the actor and the fix;
the prompts finished before it stay in the bank. Slow: a Ray of the test session, one actor, a restart that loads the backbone again."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading

import numpy as np
import pytest

from rospr.errors import StateError
from rospr.softprompt import PromptBank
from rospr.tuning import TuneSettings, in_process, tune_bank
from rospr_harness.config import RayConfig
from rospr_harness.method.tune_pool import ray_pool
from unit.rospr.test_tuning import _jobs

pytestmark = pytest.mark.slow

# long enough (a few seconds on the tiny model) for the actor to be killed in the middle of a prompt
LONG = TuneSettings(prompt_length=4, steps=300, batch_size=8)


def kill_during_the_next_prompt(caplog, delay_s: float = 1.0):
    """A ``on_done`` for ``tune_bank``: once the first prompt is saved (the actor then starts the next one), the
    actor's process (its pid from the pool's log line) is killed ``delay_s`` later, in the middle of that prompt."""
    def on_done(prompt, reused):
        if on_done.fired:
            return
        on_done.fired = True
        pids = [int(m.group(1)) for r in caplog.records if (m := re.search(r"tuning actor 0 \(pid (\d+)\)", r.getMessage()))]
        threading.Timer(delay_s, os.kill, (pids[-1], signal.SIGKILL)).start()
    on_done.fired = False
    return on_done


def test_class_6_a_killed_tuning_actor_is_restarted_and_its_prompt_resubmitted(
        tiny_backbone, tiny_model_dir, tmp_path, ray_cluster, caplog):
    caplog.set_level(logging.INFO, logger="rospr_harness")
    model, tokenizer, identity = tiny_backbone
    jobs = _jobs()[:2]
    pool = ray_pool(str(tiny_model_dir), LONG, num_cpus=1, faults=RayConfig(max_restarts=2, max_batch_attempts=3))
    bank = tune_bank(jobs, tmp_path / "ray", LONG, identity.as_dict(), pool, on_done=kill_during_the_next_prompt(caplog))
    again = [r.getMessage() for r in caplog.records if "was restarted" in r.getMessage()]
    assert len(again) == 1 and again[0].endswith(f") before it returned {jobs[1].id}"), again
    assert any("tuned 2 prompts on 1 Ray actors; 1 actor restarts, 0 prompts resubmitted" in r.getMessage()
               for r in caplog.records)
    reference = tune_bank(jobs, tmp_path / "seq", LONG, identity.as_dict(),
                          in_process(str(tiny_model_dir), LONG, model, tokenizer))
    for job in jobs:  # the resubmitted prompt's numbers are the same as any other attempt's
        np.testing.assert_array_equal(bank.get(job.id).values, reference.get(job.id).values)


def test_class_6_an_actor_that_dies_again_ends_the_tuning_in_one_line(tiny_model_dir, tiny_backbone, tmp_path,
                                                                      ray_cluster, caplog):
    caplog.set_level(logging.INFO, logger="rospr_harness")
    _, _, identity = tiny_backbone
    jobs = _jobs()[:2]
    pool = ray_pool(str(tiny_model_dir), LONG, num_cpus=1, faults=RayConfig(max_restarts=0, max_batch_attempts=2))
    with pytest.raises(StateError) as info:
        tune_bank(jobs, tmp_path / "ray", LONG, identity.as_dict(), pool, on_done=kill_during_the_next_prompt(caplog))
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"a tuning of {jobs[1].id} failed 2 times because tuning "
                                                      "actor 0 died (")
    assert "raise ray.max_restarts or ray.max_batch_attempts" in message
    assert PromptBank.load(tmp_path / "ray", identity.as_dict()).ids() == [jobs[0].id]  # the finished one is kept
