"""Selection formulas against hand computations (DESIGN.md section 1, steps 3-5)."""

from __future__ import annotations

import numpy as np
import pytest

from rospr.selection import (
    METHODS,
    T0,
    Method,
    Candidate,
    choice_distribution,
    frequency_table,
    select,
    var_rank,
    var_score,
    variance_floor,
)

# Three queries, top-3 hits each: a appears 3 times, b 3 times, c 2 times, d once.
HITS = [
    [("a", 0.9), ("b", 0.8), ("c", 0.1)],
    [("b", 0.7), ("a", 0.2), ("d", 0.6)],
    [("a", 0.3), ("c", 0.5), ("b", 0.4)],
]


def test_frequency_counting_and_similarity_tie_break():
    table = frequency_table(HITS)
    # a: 3 hits, sum 1.4; b: 3 hits, sum 1.9 -> b first (tie on frequency, higher summed similarity)
    assert [(c.prompt_id, c.frequency) for c in table] == [("b", 3), ("a", 3), ("c", 2), ("d", 1)]
    assert table[0].similarity == pytest.approx(1.9) and table[1].similarity == pytest.approx(1.4)
    assert table[2].similarity == pytest.approx(0.6) and table[3].similarity == pytest.approx(0.6)


def test_full_tie_is_broken_by_id():
    table = frequency_table([[("z", 0.5)], [("y", 0.5)]])
    assert [c.prompt_id for c in table] == ["y", "z"]


def test_rospr_is_most_frequent_and_inter_weights_are_frequency_shares():
    table = frequency_table(HITS)
    assert select("rospr", table).prompt_ids == ["b"]
    sel = select("rospr+inter", table, n_inter=3)
    assert sel.prompt_ids == ["b", "a", "c"]
    assert sel.weights == pytest.approx([3 / 8, 3 / 8, 2 / 8])
    sel2 = select("rospr+inter", table, n_inter=2)
    assert sel2.weights == pytest.approx([0.5, 0.5])


def test_choice_distribution_rules():
    dist, rule = choice_distribution([0, 0, 1, 0], [("yes", "no")] * 4)
    assert rule == "choices" and dist.tolist() == [0.75, 0.25]
    # choices that differ per query: distribution over positions, C = the largest number of choices
    dist, rule = choice_distribution([0, 2, 1, 0], [("a", "b"), ("c", "d", "e"), ("f", "g"), ("h", "i")])
    assert rule == "positions" and dist.tolist() == [0.5, 0.25, 0.25]


def test_var_score_by_hand_and_zero_variance_guard():
    # distribution (0.75, 0.25): mean 0.5, variance ((0.25)^2 + (0.25)^2) / 2 = 0.0625
    variance, score = var_score(6, np.array([0.75, 0.25]), n_queries=4)
    assert variance == pytest.approx(0.0625) and score == pytest.approx(6 / 0.0625)
    # perfectly balanced: variance 0 -> floored at 2 / (C Q^2) = 2 / (2 * 16) = 1/16
    assert variance_floor(4, 2) == pytest.approx(1 / 16)
    variance, score = var_score(6, np.array([0.5, 0.5]), n_queries=4)
    assert variance == 0.0 and score == pytest.approx(6 / (1 / 16))
    # three choices, Q = 30: floor 2 / (3 * 900)
    variance, score = var_score(5, np.array([1 / 3, 1 / 3, 1 / 3]), n_queries=30)
    assert score == pytest.approx(5 * 3 * 900 / 2)


def test_var_ranking_penalises_collapsed_prompts_and_var_inter_weights():
    cands = [Candidate("x", 10, 5.0), Candidate("y", 8, 4.0), Candidate("z", 4, 1.0)]
    choices = [("yes", "no")] * 4
    preds = {
        "x": [0, 0, 0, 0],  # all one answer: variance 0.25, score 10 / 0.25 = 40
        "y": [0, 1, 0, 0],  # (0.75, 0.25): variance 0.0625, score 8 / 0.0625 = 128
        "z": [0, 1, 1, 0],  # balanced: floor 1/16, score 4 * 16 = 64
    }
    ranked, rule = var_rank(cands, preds, choices)
    assert rule == "choices"
    assert [(v.prompt_id, v.score) for v in ranked] == [("y", pytest.approx(128)), ("z", pytest.approx(64)),
                                                        ("x", pytest.approx(40))]
    assert select("rospr+var", cands, var_ranked=ranked).prompt_ids == ["y"]
    sel = select("rospr+var+inter", cands, n_inter=2, var_ranked=ranked)
    assert sel.prompt_ids == ["y", "z"] and sel.weights == pytest.approx([128 / 192, 64 / 192])


def test_no_candidate_means_no_soft_prompt_and_bad_methods_are_refused():
    assert select("rospr", []).prompt_ids == []
    with pytest.raises(ValueError, match="needs the VAR ranking"):
        select("rospr+var", [Candidate("a", 1, 1.0)])
    with pytest.raises(ValueError, match="is not one of"):
        select("rospr+magic", [Candidate("a", 1, 1.0)])
    with pytest.raises(ValueError, match="selects no soft prompt"):
        select("t0", [Candidate("a", 1, 1.0)])


def test_methods_are_parsed_once_into_values():
    # the paper's four RoSPr variants and the T0 baseline, written out by hand
    expected = {"t0": (False, False, False), "rospr": (True, False, False), "rospr+inter": (True, False, True),
                "rospr+var": (True, True, False), "rospr+var+inter": (True, True, True)}
    assert [m.name for m in METHODS] == list(expected)
    for name, (retrieve, var, inter) in expected.items():
        m = Method.parse(name)
        assert (m.retrieve, m.var, m.inter) == (retrieve, var, inter) and str(m) == name
        assert Method.parse(m) is m
    assert Method.parse("t0") == T0
    for bad in ("rospr+inter+var", "RoSPr", "t0+var", ""):
        with pytest.raises(ValueError, match="is not one of"):
            Method.parse(bad)
    with pytest.raises(ValueError, match="retrieves nothing"):
        Method(retrieve=False, var=True)
