"""The built-in generated suite: deterministic, balanced, distinct formats, every prompt renders."""

from __future__ import annotations

from collections import Counter

import pytest

from rospr_harness.tasks import DataSettings, get_task, list_tasks
from rospr_harness.tasks.builtin import (
    ANIMALS, FRUITS, NEGATIVE, NLI_MARKERS, POSITIVE, TOPICS, builtin_task, corpus, list_builtin,
)

NAMES = ["builtin/animals", "builtin/nli", "builtin/fruit_choice", "builtin/sentiment", "builtin/topic"]


def test_names_registered():
    assert list_builtin() == NAMES
    assert set(NAMES) <= set(list_tasks(DataSettings()))


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_seed_dependent(name):
    a, b = builtin_task(name, seed=3), builtin_task(name, seed=3)
    assert a.rows("train") == b.rows("train") and a.rows("validation") == b.rows("validation")
    assert a.rows("train") != a.rows("validation")[: len(a.rows("train"))]
    assert builtin_task(name, seed=4).rows("validation") != a.rows("validation")
    prompt = a.prompts()[0]
    assert a.load(prompt).content_hash == b.load(prompt).content_hash
    assert a.load(prompt).content_hash != builtin_task(name, seed=4).load(prompt).content_hash


@pytest.mark.parametrize("name", NAMES)
def test_sizes_and_balance(name):
    task = builtin_task(name)
    assert len(task.rows("train")) == 200 and len(task.rows("validation")) == 64
    small = builtin_task(name, n_train=10, n_validation=7)
    assert len(small.rows("train")) == 10 and len(small.rows("validation")) == 7
    for split in ("train", "validation"):
        counts = Counter(row["label"] for row in task.rows(split))
        n_classes = len(task.load(task.prompts()[0], split).examples[0].choices)
        assert sorted(counts) == list(range(n_classes))
        assert max(counts.values()) - min(counts.values()) <= 1
        labels = [row["label"] for row in task.rows(split)]
        assert labels != sorted(labels)  # shuffled, not in blocks


@pytest.mark.parametrize("name", NAMES)
def test_every_prompt_renders_every_row(name):
    task = get_task(name, DataSettings())
    assert 3 <= len(task.prompts()) <= 4
    for prompt in task.prompts():
        for split in ("train", "validation"):
            unit = task.load(prompt, split)
            rows = task.rows(split)
            assert unit.skipped == 0 and len(unit.examples) == len(rows)
            for ex, row in zip(unit.examples, rows):
                assert ex.input_text and "|||" not in ex.input_text
                assert ex.label == row["label"] and ex.target_text == ex.choices[ex.label]
    assert task.load(task.prompts()[0]).examples[0].index == 0
    assert len(task.load(task.prompts()[0], limit=5).examples) == 5


def test_distinct_answer_formats():
    formats = {name: get_task(name, DataSettings()).load(get_task(name, DataSettings()).prompts()[0]).examples[0].choices
               for name in NAMES}
    assert formats == {
        "builtin/animals": ("yes", "no"),
        "builtin/nli": ("true", "false", "neither"),
        "builtin/fruit_choice": ("A", "B", "C"),
        "builtin/sentiment": ("positive", "negative"),
        "builtin/topic": ("sports", "politics", "science", "food"),
    }


def test_labels_follow_surface_words():
    """The label is decided by which word list the input's words come from (checked by hand)."""
    for row in builtin_task("animals").rows("train"):
        assert any(w in ANIMALS for w in row["words"].split()) == (row["label"] == 0)
    for row in builtin_task("nli").rows("train"):
        words = row["hypothesis"].rstrip(".").split()
        assert [any(m in words for m in NLI_MARKERS[k]) for k in range(3)].count(True) == 1
        assert any(m in words for m in NLI_MARKERS[row["label"]])
    for row in builtin_task("fruit_choice").rows("train"):
        options = [row["option_a"], row["option_b"], row["option_c"]]
        assert [o in FRUITS for o in options].index(True) == row["label"]
        assert sum(o in FRUITS for o in options) == 1
    for row in builtin_task("sentiment").rows("train"):
        words = row["review"].rstrip(".").split()
        assert any(w in POSITIVE for w in words) == (row["label"] == 0)
        assert any(w in NEGATIVE for w in words) == (row["label"] == 1)
    topics = list(TOPICS)
    for row in builtin_task("topic").rows("train"):
        hits = {t for t in topics if any(w in TOPICS[t] for w in row["text"].split())}
        assert hits == {topics[row["label"]]}


def test_corpus_covers_inputs_targets_and_choices():
    texts = corpus()
    assert len(texts) == len(set(texts))
    text_set = set(texts)
    for name in NAMES:
        task = builtin_task(name)
        for split in ("train", "validation"):
            ex = task.load(task.prompts()[-1], split).examples[-1]
            assert ex.input_text in text_set and set(ex.choices) <= text_set
    assert corpus() == texts
