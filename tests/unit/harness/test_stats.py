"""harness/stats.py: standard errors against hand computations, bootstrap intervals deterministic and seeded
by names alone, chunked draws equal to one draw."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rospr_harness import stats
from rospr_harness.stats import (accuracy_interval, bootstrap_means, bootstrap_weights, mean_stderr, score_matrix,
                                 seeded, task_mean, task_stderr)


def test_mean_stderr_is_the_sample_standard_error_as_lm_eval_acc_stderr():
    # 1, 0, 1, 1: mean 3/4; squared deviations 1/16, 9/16, 1/16, 1/16 = 12/16; sample variance (n - 1 = 3)
    # 1/4; stderr sqrt(1/4) / sqrt(4) = 1/4 (the population variant would give sqrt(3/16)/2 = 0.2165...)
    assert mean_stderr([1.0, 0.0, 1.0, 1.0]) == pytest.approx(0.25, abs=1e-15)
    # lm_eval.api.metrics.mean_stderr: sample_stddev(arr) / sqrt(len(arr)), sample_stddev dividing by n - 1
    xs = [0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 0.25]
    mu = sum(xs) / len(xs)
    assert mean_stderr(xs) == pytest.approx(math.sqrt(sum((x - mu) ** 2 for x in xs) / (len(xs) - 1))
                                            / math.sqrt(len(xs)), rel=1e-12)
    # one row has no spread to estimate (lm-eval reports N/A), none has no mean
    assert mean_stderr([1.0]) is None and mean_stderr([]) is None
    assert mean_stderr([1.0, 1.0, 1.0]) == 0.0


def test_task_stderr_with_one_prompt_is_mean_stderr():
    xs = [1.0, 0.0, 1.0, 1.0]
    assert task_stderr(score_matrix([dict(enumerate(xs))], [0, 1, 2, 3])) == pytest.approx(0.25, abs=1e-15)


def test_task_stderr_by_hand_with_every_prompt_on_every_row():
    # prompts a = (1, 0, 1), b = (1, 1, 0): each row's mean over prompts (1, 1/2, 1/2), mean 2/3;
    # deviations 1/3, -1/6, -1/6: squares 1/9 + 1/36 + 1/36 = 1/6; sample variance 1/12; stderr sqrt(1/12)/sqrt(3) = 1/6
    m = score_matrix([{0: 1.0, 1: 0.0, 2: 1.0}, {0: 1.0, 1: 1.0, 2: 0.0}], [0, 1, 2])
    assert task_mean(m) == pytest.approx(2 / 3)
    assert task_stderr(m) == pytest.approx(1 / 6, abs=1e-15)


def test_task_stderr_by_hand_with_a_row_a_prompt_skipped():
    # a = (1, 0, 1) on rows 0-2 (accuracy 2/3), b = (1, 0) on rows 0-1 (accuracy 1/2); task mean 7/12.
    # row influences d_r = mean over the prompts that scored r of (x - acc) / n:
    #   row 0: ((1 - 2/3)/3 + (1 - 1/2)/2) / 2 = (1/9 + 1/4) / 2 = 13/72
    #   row 1: ((0 - 2/3)/3 + (0 - 1/2)/2) / 2 = (-2/9 - 1/4) / 2 = -17/72
    #   row 2: ((1 - 2/3)/3 + 0) / 2 = 1/18 = 4/72
    # stderr = sqrt(3/2 * (169 + 289 + 16) / 72**2) = sqrt(3/2 * 474) / 72
    m = score_matrix([{0: 1.0, 1: 0.0, 2: 1.0}, {0: 1.0, 1: 0.0}], [0, 1, 2])
    assert task_mean(m) == pytest.approx(7 / 12)
    assert task_stderr(m) == pytest.approx(math.sqrt(1.5 * 474) / 72, rel=1e-12)
    assert task_stderr(score_matrix([{4: 1.0}], [4])) is None


def test_task_stderr_agrees_with_the_bootstrap_spread():
    # the linearisation is the bootstrap's own first-order spread: the two agree on a larger case
    rng = np.random.default_rng(7)
    units = [{r: float(rng.random() < 0.7) for r in range(400) if rng.random() < 0.9} for _ in range(3)]
    m = score_matrix(units, list(range(400)))
    boot = bootstrap_means([m], 4000, np.random.default_rng(0))[0]
    assert task_stderr(m) == pytest.approx(float(np.std(boot, ddof=1)), rel=0.05)


def test_bootstrap_interval_is_deterministic_and_seeded_by_names_alone():
    unit = {i: float(i % 3 != 0) for i in range(50)}
    first = accuracy_interval([unit], ("unit", "rte", "p1", "t0"))
    assert first == accuracy_interval([unit], ("unit", "rte", "p1", "t0"))  # same names, same draws
    assert first != accuracy_interval([unit], ("unit", "rte", "p2", "t0"))  # another unit, other draws
    lo, hi = first
    acc = sum(unit.values()) / len(unit)
    assert lo < acc < hi and 0.0 <= lo and hi <= 1.0
    # the interval is the 2.5 / 97.5 percentiles of N_BOOT replicates, each a mean of 50 rows drawn with replacement
    w = bootstrap_weights(50, stats.N_BOOT, seeded("unit", "rte", "p1", "t0"))
    values = np.array([unit[i] for i in range(50)])
    assert (lo, hi) == tuple(float(x) for x in np.quantile(w @ values / 50, (0.025, 0.975)))
    # the seed is a digest of the names (not Python's salted hash): fixed across processes and machines
    assert seeded("a", "b").integers(0, 2**62) == np.random.default_rng(
        int.from_bytes(__import__("hashlib").sha256(b"a\x1fb").digest()[:8], "big")).integers(0, 2**62)
    assert accuracy_interval([], ("x",)) is None and accuracy_interval([{}], ("x",)) is None


def test_chunked_draws_equal_one_draw(monkeypatch):
    units = [{r: float((r * 7 + k) % 5 < 3) for r in range(30)} for k in range(2)]
    m = score_matrix(units, list(range(30)))
    whole = bootstrap_means([m, m[:1]], 100, np.random.default_rng(3))
    monkeypatch.setattr(stats, "_CHUNK", 30 * 7)  # 7 replicates a draw
    chunked = bootstrap_means([m, m[:1]], 100, np.random.default_rng(3))
    for a, b in zip(whole, chunked):
        assert a.shape == (100,) and np.array_equal(a, b)


def test_mcnemar_beyond_a_float_power_of_two():
    # b + c > 1023: 2.0 ** n overflows a float; the p-value is still a probability (here about 0.18)
    p = stats.mcnemar_exact(700, 650)
    assert 0.1 < p < 0.3
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
