"""The statistics of accuracies over rows: standard errors, bootstrap intervals, McNemar's test.

One place for what results.json (per unit and per task, ``rospr_harness.figures``) and ``rospr
compare`` (``rospr_harness.compare``) report, so both say the same thing about the same rows.

- **Standard error of a mean** (``mean_stderr``): the *sample* standard deviation (``ddof=1``) over
  ``sqrt(n)``, lm-evaluation-harness's ``acc_stderr`` (``lm_eval.api.metrics.mean_stderr``); None for
  fewer than two rows (lm-eval: "N/A").
- **Standard error of a task's mean over prompts** (``task_stderr``): the prompts score the same
  rows, so their accuracies are correlated and their stderrs cannot be pooled as if independent.
  The task mean is linearised in the rows (the delta method, each prompt's accuracy a ratio of sums
  over the rows it scored): row r's influence is ``d_r = mean_k (x_kr - acc_k) / n_k`` over the
  prompts k that scored it, and the standard error is ``sqrt(N / (N - 1) * sum_r d_r**2)`` over the
  N rows any prompt scored. With one prompt this is ``mean_stderr``; with every prompt on every row,
  ``mean_stderr`` of each row's mean over the prompts.
- **Bootstrap interval** (``bootstrap_means``, ``percentile_interval``): rows drawn with replacement
  (multinomial counts, ``bootstrap_weights``), jointly for every prompt of a task (and for both runs
  of a paired comparison), the statistic recomputed per replicate, the percentile interval read off.
  results.json draws ``N_BOOT`` replicates for a ``1 - ALPHA`` (95%) interval from a generator seeded by the
  unit's (or task's) names alone (``seeded``), so a unit's interval is a function of its records: the
  same whether it was computed, resumed or reused from the cache, and on every machine.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from rospr.canonical import derive_seed

N_BOOT = 2000  # bootstrap replicates (results.json; rospr compare's default)
ALPHA = 0.05  # the intervals cover 1 - ALPHA (rospr compare's default alpha)
_CHUNK = 1 << 22  # weights drawn at most this many numbers at a time (memory; same draws as in one call)


def mean_stderr(values: Sequence[float]) -> float | None:
    """The standard error of the mean of ``values``: sample standard deviation (ddof 1) / sqrt(n), as
    lm-eval's ``acc_stderr``. None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mu = math.fsum(values) / n
    return math.sqrt(math.fsum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def score_matrix(units: list[dict[int, float]], rows: list[int]) -> np.ndarray:
    """[n_units, n_rows] metric values of each unit (row index -> value) on ``rows``, NaN where a unit
    has no such row (the template did not apply to it)."""
    m = np.full((len(units), len(rows)), np.nan)
    pos = {r: j for j, r in enumerate(rows)}
    for i, u in enumerate(units):
        for r, s in u.items():
            m[i, pos[r]] = s
    return m


def task_mean(m: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The mean over units of each unit's mean over its rows (NaN: no row). ``weights``: [B, n_rows]
    counts of each row in B bootstrap replicates; then one mean per replicate."""
    present = ~np.isnan(m)
    vals = np.where(present, m, 0.0)
    if weights is None:
        unit_means = vals.sum(1) / np.maximum(present.sum(1), 1)
        return unit_means.mean()
    num = weights @ vals.T  # [B, n_units]
    # the counts each unit's rows drew (exact integers either way: every row present, each replicate's total)
    den = weights @ present.T.astype(float) if not present.all() else weights.sum(1, keepdims=True)
    return (num / np.maximum(den, 1e-12)).mean(1)


def task_stderr(m: np.ndarray) -> float | None:
    """The standard error of ``task_mean(m)`` over its rows (the linearisation of the module docstring);
    None for fewer than two rows."""
    present = ~np.isnan(m)
    n_rows = m.shape[1]
    if n_rows < 2:
        return None
    counts = np.maximum(present.sum(1, keepdims=True), 1)
    acc = np.where(present, m, 0.0).sum(1, keepdims=True) / counts
    influence = (np.where(present, m - acc, 0.0) / counts).mean(0)  # d_r
    return float(math.sqrt(n_rows / (n_rows - 1) * float(np.sum(influence ** 2))))


def bootstrap_weights(n_rows: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_rows] multinomial counts: each bootstrap replicate draws n_rows rows with replacement.
    Refuses (``ValueError``) zero rows: there is nothing to resample (callers leave empty units out)."""
    if n_rows < 1:
        raise ValueError("a bootstrap over zero rows: an empty unit reached the comparison; report it")
    return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=n_boot).astype(float)


def bootstrap_means(matrices: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``task_mean`` of each matrix (all over the same rows) in ``n_boot`` replicates that resample the
    rows jointly for all of them (paired). The weights are drawn in chunks when they would be large:
    the same draws, and so the same replicates, as one call of ``bootstrap_weights``."""
    n_rows = matrices[0].shape[1]
    step = max(1, _CHUNK // max(n_rows, 1))
    if n_boot <= step:
        w = bootstrap_weights(n_rows, n_boot, rng)
        return [task_mean(m, w) for m in matrices]
    parts: list[list[np.ndarray]] = [[] for _ in matrices]
    for start in range(0, n_boot, step):
        w = bootstrap_weights(n_rows, min(step, n_boot - start), rng)
        for out, m in zip(parts, matrices):
            out.append(task_mean(m, w))
    return [np.concatenate(p) for p in parts]


def percentile_interval(samples: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """The central ``1 - alpha`` percentile interval of bootstrap ``samples``."""
    lo, hi = np.quantile(samples, (alpha / 2, 1 - alpha / 2))
    return float(lo), float(hi)


def seeded(*names: str) -> np.random.Generator:
    """A generator seeded by ``names`` alone (their sha256): the same draws for the same unit anywhere."""
    return np.random.default_rng(derive_seed(*names, sep="\x1f"))


def accuracy_interval(units: list[dict[int, float]], seed_names: Sequence[str], n_boot: int = N_BOOT,
                      alpha: float = ALPHA) -> tuple[float, float] | None:
    """The bootstrap interval of the mean over ``units`` (row index -> metric value; one unit: its
    accuracy, several: a task's mean over prompts, rows resampled jointly), seeded by ``seed_names``.
    None when no unit has a row."""
    rows = sorted(set().union(*units)) if units else []
    if not rows:
        return None
    samples = bootstrap_means([score_matrix(units, rows)], n_boot, seeded(*seed_names))[0]
    return percentile_interval(samples, alpha)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` and ``c`` (an integer ratio, so
    more than 1023 discordant rows do not overflow a float's 2**n)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2.0 * tail)
