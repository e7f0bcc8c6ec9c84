"""Stand-ins for the model and the executor, so that the driver, run-directory, unit-cache and resume
tests run the real runner in milliseconds.

``fake_scores`` is the one hand formula of both: for an example whose input token ids sum to ``S``,
whose choice ``j`` has ids summing to ``C_j`` (its EOS included), under a soft prompt of code ``k``
(``prompt_code``; 0 without a prompt),

    score_j = -((S + C_j + k) mod 11) - j / 10

an integer in [-10, 0] minus a tenth per choice (so no two choices of one example tie).

- ``FakeScorer``: the ``rospr.scoring.Scorer`` protocol (``prompt_dim``, ``score(ScoreBatch)``) by that
  formula, reading only the unmasked ids and prompt vectors of a padded batch, so a row scores the
  same in any batch, at any batch size and with any padding.
- ``fake_scoring()``: while inside, every entry of ``rospr_harness.backends.BACKENDS`` builds
  ``fake_backend`` (a ``FakeScorer``, the checkpoint's real tokenizer, an identity read from its
  files), so ``harness.runner.run``, ``rospr run`` in process (the CLI under ``CliRunner``) and
  ``create_backend`` score with the fake. The checkpoint is still checked (a missing or damaged
  ``model.name_or_path`` is refused as before), and the retriever (``create_embedder``) stays the
  backend's real one: RoSPr's library and retrieval are real, only the scores are fake. It patches this
  process only: Ray actors and subprocesses build the real backend. The conftest fixture ``fake_scorer``
  wraps it for one test.
- ``FakeExecutor``: an ``Executor`` scoring by the formula that can finish its calls out of order,
  fail for good at its n-th call (a server gone) or lose an "actor" at its n-th call (the call is
  resubmitted, as the Ray executor does, and counted in its stats).

The fake backend's name is ``fake`` and its identity says ``scorer: fake``: provenance says so, and
no unit cache entry of a fake run is ever taken for a real one (the backend is part of the key). Its
``config_hash`` is ``config.json``'s as written (no transformers, which would import torch), not the
loaded config's, so a prompt bank tuned under the fake is refused by a real backend and the reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import math
from typing import Sequence

import numpy as np

MOD = 11


def prompt_code(values: np.ndarray | None) -> int:
    """A soft prompt's code ``k``: floor(1000 x |sum of its values|) mod 11 (the values summed in
    float64, in row-major order); 0 without a prompt (None or no vectors)."""
    if values is None or np.size(values) == 0:
        return 0
    return int(math.floor(abs(float(np.asarray(values, dtype=np.float64).sum())) * 1000)) % MOD


def fake_scores(input_ids: Sequence[int], choice_ids: Sequence[Sequence[int]],
                prompt: np.ndarray | None = None) -> np.ndarray:
    """The hand formula (module docstring) for one example: float32, one score per choice."""
    base = int(sum(input_ids)) + prompt_code(prompt)
    return np.array([-float((base + int(sum(c))) % MOD) - j / 10 for j, c in enumerate(choice_ids)], dtype=np.float32)


def row_scores(row, prompt: np.ndarray | None = None) -> np.ndarray:
    """``fake_scores`` of an ``EncodedExample``."""
    return fake_scores(row.input_ids, row.choice_ids, prompt)


class FakeScorer:
    """A ``Scorer`` by ``fake_scores``: ``prompt_dim`` is the backbone's d_model; ``calls`` and
    ``rows`` count the batches and the rows scored."""

    def __init__(self, prompt_dim: int) -> None:
        self.prompt_dim = int(prompt_dim)
        self.calls = self.rows = 0

    def score(self, batch) -> np.ndarray:
        """float32 [B, C]: row b's real choices by the formula, its padded choices 0."""
        b, c = batch.choice_ids.shape[:2]
        out = np.zeros((b, c), dtype=np.float32)
        for i in range(b):
            ids = batch.input_ids[i][batch.attention_mask[i] == 1]
            prompt = batch.prompt_embeds[i][batch.prompt_mask[i] == 1]
            choices = [batch.choice_ids[i, j][batch.choice_mask[i, j] == 1] for j in range(int(batch.n_choices[i]))]
            out[i, : len(choices)] = fake_scores(ids.tolist(), [ch.tolist() for ch in choices], prompt)
        self.calls += 1
        self.rows += b
        return out


def fake_identity(name_or_path: str) -> dict:
    """The fake backend's identity, from the checkpoint's files alone: its name, the hash of its
    ``config.json`` as written, its sizes and the digest of its weight files; ``scorer: fake``."""
    from rospr.identity import config_digest, display_name, read_config, weights_digest

    config = read_config(name_or_path)
    return {"name": display_name(str(name_or_path)), "config_hash": config_digest(name_or_path),
            "d_model": int(config["d_model"]), "vocab_size": int(config["vocab_size"]),
            "weights": weights_digest(name_or_path), "scorer": "fake"}


def fake_backend(config):
    """The ``Backend`` of a ``RunConfig`` under ``fake_scoring``: a ``FakeScorer`` of the model's
    d_model, the model's tokenizer (``tokenizer.json``: no torch), ``fake_identity``."""
    from rospr_harness.backends import Backend
    from rospr.tokenizer import load_tokenizer

    identity = fake_identity(config.model.name_or_path)
    scorer = FakeScorer(identity["d_model"])
    BUILT.append(scorer)
    return Backend("fake", scorer, load_tokenizer(config.model.name_or_path, config.model.revision), identity)


BUILT: list[FakeScorer] = []  # the scorers fake_backend built, in order (cleared by fake_scoring)


def _fake_entry(real):
    """A ``BackendModule`` that builds ``fake_backend`` and keeps ``real``'s retriever."""
    from rospr_harness.backends import BackendModule

    def embedder(module, config, retriever, revision):
        return real.embedder(importlib.import_module(real.module), config, retriever, revision)

    return BackendModule(__name__, backend=lambda m, c: m.fake_backend(c), embedder=embedder, tokenizer=real.tokenizer)


@contextlib.contextmanager
def fake_scoring():
    """Every backend of ``rospr_harness.backends.BACKENDS`` scores with ``FakeScorer`` while inside
    (the module docstring); yields ``BUILT``, the scorers built meanwhile. The table is restored on
    the way out."""
    import pytest

    from rospr_harness import backends

    BUILT.clear()
    with pytest.MonkeyPatch.context() as mp:
        for name, real in dict(backends.BACKENDS).items():
            mp.setitem(backends.BACKENDS, name, _fake_entry(real))
        yield BUILT
    BUILT.clear()


class FakeExecutor:
    """An ``Executor`` (``rospr_harness.runner.executor``) that scores by ``fake_scores``.

    ``shuffle``: call n yields to the event loop (7n mod 5) times first, so calls in flight finish out
    of order. ``fail_at``: call n raises ``BackendUnavailable`` (a server gone for good: the run ends).
    ``lose_at``: call n's actor dies under it (``scorers`` actors at the start): the call is resubmitted
    and answered by another, and ``stats`` counts the actor lost and the resubmission, as the Ray
    executor's do. ``calls`` counts the calls, ``most_out`` the most in flight at once. It stands in for
    the Ray executor (``name``: results.json's ``execution.executor`` is ``in_process`` or ``ray``)."""

    name = "ray"

    def __init__(self, max_in_flight: int, shuffle: bool = True, fail_at: int | None = None,
                 lose_at: int | None = None, scorers: int = 1) -> None:
        self.max_in_flight, self.shuffle, self.fail_at, self.lose_at = max_in_flight, shuffle, fail_at, lose_at
        self.scorers, self.lost, self.resubmitted = scorers, 0, 0
        self.calls = self.out = self.most_out = 0

    def put(self, values):
        return values

    async def score(self, rows, prompt):
        from rospr_harness.backends import BackendUnavailable
        from rospr_harness.runner.executor import Done

        self.calls += 1
        call = self.calls
        self.out += 1
        self.most_out = max(self.most_out, self.out)
        try:
            for _ in range((call * 7) % 5 if self.shuffle else 0):
                await asyncio.sleep(0)  # the other calls in flight may finish first
            if call == self.fail_at:
                raise BackendUnavailable(f"fake server gone at call {call}")
            if call == self.lose_at:
                if self.scorers - self.lost <= 1:
                    raise BackendUnavailable(f"fake actor lost at call {call}, none left")
                self.lost += 1
                self.resubmitted += 1
                await asyncio.sleep(0)  # the resubmitted call goes to the back of the queue
            return Done([row_scores(r, prompt) for r in rows], 0.001)
        finally:
            self.out -= 1

    async def retrieve(self, requests):
        raise AssertionError("t0 only: nothing to retrieve")

    def stats(self) -> dict:
        out = {"executor": self.name, "scorers": self.scorers}
        if self.lose_at is not None:
            out.update(actors_lost=self.lost, resubmitted=self.resubmitted)
        return out

    def close(self) -> None:
        pass

