"""Prompt tuning by Ray actors (rospr_harness/method/tune_pool.py): a bank tuned by two actors of the
test session's Ray is the in-process bank, bit for bit (a whole tuning pass on Ray; moved from
tests/unit/rospr/test_tuning.py, whose helpers it uses)."""

from __future__ import annotations

import numpy as np

from rospr.tuning import in_process, tune_bank
from rospr_harness.method.tune_pool import ray_pool
from unit.rospr.test_tuning import SMALL, _jobs


def test_ray_actors_give_the_same_prompts(tiny_backbone, tiny_model_dir, tmp_path, ray_cluster):
    model, tokenizer, identity = tiny_backbone
    jobs = _jobs()[:2]
    seq = tune_bank(jobs, tmp_path / "seq", SMALL, identity.as_dict(), in_process(str(tiny_model_dir), SMALL, model, tokenizer))
    par = tune_bank(jobs, tmp_path / "ray", SMALL, identity.as_dict(), ray_pool(str(tiny_model_dir), SMALL, num_cpus=2))
    for job in jobs:
        np.testing.assert_array_equal(par.get(job.id).values, seq.get(job.id).values)
