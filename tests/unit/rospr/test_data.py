"""rospr/data.py: the one metric of a prediction (``credit``), by hand."""

from __future__ import annotations

import pytest

from rospr.data import Example, credit


def test_credit_by_hand():
    assert credit([1], 1, None) == 1.0 and credit([0], 1, None) == 0.0
    assert credit([0, 1], 1, None) == 0.5  # a tie between the right and a wrong choice
    assert credit([2], None, (0, 1, 0.25)) == 0.25  # BIG-bench multiple_choice_grade
    assert credit([1, 2], None, (0, 1, 0.25)) == 0.625
    assert credit([0], 0, (0, 1)) == 0.0  # target scores win over a label
    with pytest.raises(ValueError, match="neither a label"):
        credit([0], None, None)
    with pytest.raises(ValueError, match="no chosen"):
        credit([], 0, None)


def test_example_scores_through_credit():
    ex = Example("t", "p", 3, "x", ("a", "b", "c"), label=2)
    assert [ex.score_of(i) for i in range(3)] == [0.0, 0.0, 1.0]
    assert ex.credit([1, 2]) == 0.5
    with pytest.raises(ValueError, match=r"t/p#3 has no label"):
        Example("t", "p", 3, "x", ("a", "b")).score_of(0)
