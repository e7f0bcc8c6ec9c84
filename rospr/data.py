"""The unit of evaluation data that every task source produces."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from rospr.errors import SettingError


def credit(chosen: Sequence[int], label: int | None, target_scores: Sequence[float] | None) -> float:
    """The metric value of a prediction: the one metric of a record (``Example.score_of``, and
    ``rospr_harness.schema.Record.metric`` reading a records file back).

    Per chosen choice: BIG-bench's ``multiple_choice_grade`` (its target score) when ``target_scores``
    is set, else accuracy (1 for the ``label``, 0 otherwise). ``chosen`` is the prediction alone, or
    every choice tied with it at the top: a tie earns the mean of their values, what a uniformly random
    tie-break earns on average, so a tie between a right and a wrong choice is never right by the
    choices' order. Refuses (``ValueError``) no choice and neither label nor target scores.
    """
    if not chosen:
        raise ValueError("no chosen choice to score")
    if target_scores is not None:
        return float(sum(float(target_scores[i]) for i in chosen) / len(chosen))
    if label is None:
        raise ValueError("neither a label nor target scores to score the prediction against")
    return float(sum(1.0 if i == label else 0.0 for i in chosen) / len(chosen))


@dataclass(frozen=True)
class Example:
    """One rendered evaluation (or training) instance.

    ``input_text`` is the hard-prompted input; ``choices`` the answer choices (rank classification
    scores each). Exactly one of ``label`` (index of the single gold choice) or ``target_scores``
    (BIG-bench: a score per choice, several may be 1) is set for labelled data; both may be ``None``
    for unlabelled query data. ``index`` is the row's position in its source split, stable across runs.
    A training instance of a generation template has no choices, only ``target_text``: it can be
    tuned on, not scored.
    """

    task: str
    prompt: str
    index: int
    input_text: str
    choices: tuple[str, ...]
    label: int | None = None
    target_scores: tuple[float, ...] | None = None
    target_text: str | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.choices and (not self.target_text or self.label is not None or self.target_scores is not None):
            raise SettingError(f"example {self.task}/{self.prompt}#{self.index}: no answer choices (and no target text)")
        if self.label is not None and not 0 <= self.label < len(self.choices):
            raise SettingError(
                f"example {self.task}/{self.prompt}#{self.index}: label {self.label} is outside "
                f"the {len(self.choices)} answer choices"
            )
        if self.target_scores is not None:
            if len(self.target_scores) != len(self.choices):
                raise SettingError(
                    f"example {self.task}/{self.prompt}#{self.index}: {len(self.target_scores)} "
                    f"target_scores for {len(self.choices)} choices"
                )
            if not all(math.isfinite(s) for s in self.target_scores):
                raise SettingError(f"example {self.task}/{self.prompt}#{self.index}: non-finite target_scores")

    @property
    def labelled(self) -> bool:
        return self.label is not None or self.target_scores is not None

    def credit(self, tied: Sequence[int]) -> float:
        """The metric value of a prediction tied between the choices ``tied`` (``credit``)."""
        self._check_labelled()
        return credit(tied, self.label, self.target_scores)

    def score_of(self, prediction: int) -> float:
        """The metric value of predicting choice ``prediction`` (``credit`` of that one choice)."""
        return self.credit([prediction])

    def _check_labelled(self) -> None:
        if self.label is None and self.target_scores is None:
            raise SettingError(f"example {self.task}/{self.prompt}#{self.index} has no label")

    def gold(self) -> int | None:
        """Index of a best choice (the label, or the first maximal target score)."""
        if self.label is not None:
            return self.label
        if self.target_scores is not None:
            best = max(self.target_scores)
            return self.target_scores.index(best)
        return None


@dataclass
class UnitData:
    """The examples of one (task, prompt) unit and what could not be rendered."""

    task: str
    prompt: str
    examples: list[Example]
    skipped: int = 0  # rows the template does not apply to (rendered empty)
    source: str = ""  # where the rows and the template came from, for provenance and errors
    content_hash: str = ""  # hash of the template text and the rows, for caching
    skip_reasons: dict[str, int] = field(default_factory=dict)  # why rows were skipped: reason -> rows
