"""Selection formulas against hand computations (docs/method.md: frequency table, INTER, VAR)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from rospr.selection import (
    METHODS,
    T0,
    Method,
    Candidate,
    choice_counts,
    frequency_table,
    select,
    smallest_variance,
    var_rank,
    var_score,
    variance,
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


def test_top1_votes_count_each_querys_first_hit_only():
    # the lab's code: one vote per query, its nearest key's prompt: a (0.9), b (0.7), a (0.3)
    table = frequency_table(HITS, votes="top1")
    assert [(c.prompt_id, c.frequency, c.similarity) for c in table] == [("a", 2, pytest.approx(1.2)),
                                                                         ("b", 1, pytest.approx(0.7))]
    with pytest.raises(ValueError, match="votes 'top2'"):
        frequency_table(HITS, votes="top2")


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


def test_choice_counts_rules():
    counts, rule = choice_counts([0, 0, 1, 0], [("yes", "no")] * 4)
    assert rule == "choices" and counts.tolist() == [3, 1]
    # choices that differ per query: counts over positions, C = the largest number of choices
    counts, rule = choice_counts([0, 2, 1, 0], [("a", "b"), ("c", "d", "e"), ("f", "g"), ("h", "i")])
    assert rule == "positions" and counts.tolist() == [2, 1, 1]


def test_var_score_by_hand_and_zero_variance_rule():
    # distribution (0.75, 0.25): mean 0.5, variance ((0.25)^2 + (0.25)^2) / 2 = 0.0625
    v, score = var_score(6, [3, 1])
    assert v == 0.0625 and score == 6 / 0.0625
    # perfectly balanced at Q = 4, C = 2: variance 0, replaced by the smallest non-zero one, (3, 1)'s 1/16
    assert smallest_variance(4, 2) == Fraction(1, 16)
    v, score = var_score(6, [2, 2])
    assert v == 0.0 and score == 6 * 16
    # three choices, Q = 30: (11, 10, 9) is one query off balance, ((1/30)^2 + 0 + (1/30)^2) / 3 = 2 / 2700
    assert smallest_variance(30, 3) == Fraction(2, 2700) == variance([11, 10, 9])
    assert var_score(5, [10, 10, 10]) == (0.0, 5 * 1350)


def test_var_at_q32_c3_the_worked_case_is_not_clipped():
    # Q = 32 queries, C = 3 choices: 3 does not divide 32, so no distribution is balanced. Shares and the
    # population variance by hand, mean 1/3:
    #   X: 11/11/10 -> deviations 1/96, 1/96, -2/96: (1 + 1 + 4) / 96^2 / 3 = 2 / 9216 (= 2.17e-4)
    #   Y: 12/10/10 -> deviations 4/96, -2/96, -2/96: (16 + 4 + 4) / 96^2 / 3 = 8 / 9216
    assert variance([11, 11, 10]) == Fraction(2, 9216) and variance([12, 10, 10]) == Fraction(8, 9216)
    # 11/11/10 is the most balanced reachable: the smallest non-zero variance, r(C-r)/(C^2 Q^2) = 2/(9*1024)
    assert smallest_variance(32, 3) == Fraction(2, 9216)
    x_var, x_score = var_score(10, [11, 11, 10])
    y_var, y_score = var_score(25, [12, 10, 10])
    assert x_score == 10 * 9216 / 2 == 46080  # frequency / variance as defined
    assert y_score == 25 * 9216 / 8 == 28800
    # the old floor 2/(C Q^2) = 2/3072 clipped X to 10 * 3072 / 2 = 15360 and picked Y; X wins now
    cands = [Candidate("Y", 25, 9.0), Candidate("X", 10, 4.0), Candidate("Z", 30, 12.0)]
    choices = [("yes", "maybe", "no")] * 32
    preds = {"X": [0] * 11 + [1] * 11 + [2] * 10, "Y": [0] * 12 + [1] * 10 + [2] * 10,
             "Z": [0] * 16 + [1] * 8 + [2] * 8}  # Z: deviations 16, -8, -8 (of 96): 384 / 96^2 / 3 = 128 / 9216
    ranked, _ = var_rank(cands, preds, choices)
    assert [(v.prompt_id, v.score) for v in ranked] == [("X", 46080), ("Y", 28800), ("Z", 30 * 9216 / 128)]
    assert select("rospr+var", cands, var_ranked=ranked).prompt_ids == ["X"]
    # +var+inter: the same scores are the weights, 46080 / (46080 + 28800) and 28800 / 74880
    sel = select("rospr+var+inter", cands, n_inter=2, var_ranked=ranked)
    assert sel.prompt_ids == ["X", "Y"] and sel.weights == pytest.approx([46080 / 74880, 28800 / 74880], abs=1e-15)


def test_var_at_q5_c2_odd_queries_are_never_balanced():
    # Q = 5, C = 2: counts (3, 2), (4, 1), (5, 0); variance (2 * sum n^2 - 25) / (4 * 25)
    assert [variance(c) for c in ([3, 2], [4, 1], [5, 0])] == [Fraction(1, 100), Fraction(9, 100), Fraction(1, 4)]
    assert smallest_variance(5, 2) == Fraction(1, 100)  # r = 1: 1 * 1 / (4 * 25)
    cands = [Candidate("a", 3, 1.0), Candidate("b", 10, 1.0), Candidate("c", 20, 1.0)]
    preds = {"a": [0, 0, 0, 1, 1], "b": [0, 1, 1, 1, 1], "c": [1] * 5}
    ranked, _ = var_rank(cands, preds, [("yes", "no")] * 5)
    # 3 / (1/100) = 300, 10 / (9/100) = 111.1, 20 / (1/4) = 80 (the old floor 2/(C Q^2) = 1/25 gave a 75: last)
    assert [(v.prompt_id, v.score) for v in ranked] == [("a", 300), ("b", pytest.approx(1000 / 9)), ("c", 80)]


def test_var_with_four_choices_zero_variance_ranks_as_the_least_imbalance():
    # Q = 8, C = 4: (2, 2, 2, 2) is balanced; the least imbalance is (3, 2, 2, 1): 2 / (4 * 64) = 1/128
    assert variance([2, 2, 2, 2]) == 0 and variance([3, 2, 2, 1]) == Fraction(1, 128) == smallest_variance(8, 4)
    assert variance([4, 2, 1, 1]) == Fraction(4 * 22 - 64, 16 * 64)  # 24 / 1024 = 3 / 128
    cands = [Candidate("bal", 5, 1.0), Candidate("near", 6, 1.0), Candidate("skew", 20, 1.0)]
    preds = {"bal": [0, 0, 1, 1, 2, 2, 3, 3], "near": [0, 0, 0, 1, 1, 2, 2, 3], "skew": [0, 0, 0, 0, 1, 1, 2, 3]}
    ranked, _ = var_rank(cands, preds, [("a", "b", "c", "d")] * 8)
    # skew 20 * 128 / 3 = 853.3, near 6 * 128 = 768, bal 5 * 128 = 640: frequency decides at the least imbalance
    assert [(v.prompt_id, v.score) for v in ranked] == [("skew", pytest.approx(2560 / 3)), ("near", 768), ("bal", 640)]
    # Q = 10, C = 4 (r = 2): (3, 3, 2, 2) reaches 2 * 2 / (16 * 100) = 1/400, below the old floor 2 / (4 * 100)
    assert smallest_variance(10, 4) == Fraction(1, 400) == variance([3, 3, 2, 2])


def test_var_ranking_penalises_collapsed_prompts_and_var_inter_weights():
    cands = [Candidate("x", 10, 5.0), Candidate("y", 8, 4.0), Candidate("z", 4, 1.0)]
    choices = [("yes", "no")] * 4
    preds = {
        "x": [0, 0, 0, 0],  # all one answer: variance 0.25, score 10 / 0.25 = 40
        "y": [0, 1, 0, 0],  # (0.75, 0.25): variance 0.0625, score 8 / 0.0625 = 128
        "z": [0, 1, 1, 0],  # balanced: the least imbalance (3, 1)'s 1/16, score 4 * 16 = 64
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
