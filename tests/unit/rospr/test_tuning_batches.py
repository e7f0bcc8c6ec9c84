"""rospr/tuning.py's batches: ``step_batches`` (the rows of each step) and ``length_grouped_epoch``
(``group_by_length``), and the setting's place in ``train_key``."""

from __future__ import annotations

import itertools

import numpy as np

from rospr.tuning import MEGA_BATCHES, TuneSettings, length_grouped_epoch, step_batches


def pairs_of(lengths: list[int]) -> list[tuple[list[int], list[int]]]:
    return [([5] * n, [1]) for n in lengths]


def mixed_lengths(n: int, seed: int = 7) -> list[int]:
    return np.random.default_rng(seed).integers(1, 300, n).tolist()


def test_a_length_grouped_epoch_covers_every_row_once_in_batches_of_similar_length():
    lengths = mixed_lengths(1000)
    batches = length_grouped_epoch(lengths, 8, np.random.default_rng(0))
    rows = [i for b in batches for i in b]
    assert sorted(rows) == list(range(1000))  # every row exactly once
    assert sorted(len(b) for b in batches)[1:] == [8] * (len(batches) - 1)  # one short batch at most: 1000 = 125 x 8
    # within a mega-batch rows are sorted by length: a batch's rows are neighbours in that order
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) < 50 and sum(spread) / len(spread) < 10  # against ~300 for a random batch


def test_the_epoch_keeps_one_short_batch_when_the_batch_does_not_divide_the_rows():
    n = 8 * MEGA_BATCHES + 3  # two mega-batches, the second of 3 rows
    batches = length_grouped_epoch(mixed_lengths(n), 8, np.random.default_rng(1))
    assert sorted(len(b) for b in batches) == [3] + [8] * MEGA_BATCHES
    assert sorted(i for b in batches for i in b) == list(range(n))


def test_grouped_steps_are_deterministic_for_a_seed_and_differ_across_seeds():
    pairs = pairs_of(mixed_lengths(100))
    settings = TuneSettings(batch_size=10, group_by_length=True)

    def steps(seed: int) -> list[list[int]]:
        return list(itertools.islice(step_batches(pairs, settings, seed), 30))  # three epochs

    assert steps(3) == steps(3)
    assert steps(3) != steps(4)
    for epoch in range(3):  # each epoch of 10 batches holds every row once
        assert sorted(i for b in steps(3)[10 * epoch: 10 * (epoch + 1)] for i in b) == list(range(100))


def test_ungrouped_steps_are_the_shuffle_tuning_always_drew():
    pairs = pairs_of(mixed_lengths(10))
    settings = TuneSettings(batch_size=4)
    rng = np.random.default_rng(5)  # the earlier tuner's loop, written out: epochs stitched, 4 rows a step
    order = rng.permutation(10).tolist() + rng.permutation(10).tolist()
    expected = [order[k: k + 4] for k in range(0, 20, 4)]
    assert list(itertools.islice(step_batches(pairs, settings, 5), 5)) == expected


def test_grouping_enters_the_train_key_only_when_on():
    off = TuneSettings()
    assert "group_by_length" not in off.training_fields()  # banks tuned before the setting keep their keys
    assert TuneSettings(group_by_length=True).training_fields()["group_by_length"] is True
