"""Retrieval: deterministic label-free queries, and the right source found by answer format."""

from __future__ import annotations

import numpy as np
import pytest

from rospr_harness.tasks import get_task
from rospr_harness.tasks.base import DataSettings
from rospr_harness.tasks.builtin import list_builtin
from rospr.data import Example
from rospr.identity import retriever_identity
from rospr.library import LibraryEntry, build_library
from rospr.retrieval import draw_queries, retrieve
from rospr.retriever import TorchEmbedder, load_encoder
from rospr.selection import frequency_table


def test_queries_are_deterministic_and_carry_no_label():
    examples = [Example("t", "p", i, f"input {i}", ("yes", "no"), label=i % 2, target_text="yes") for i in range(100)]
    a = draw_queries(examples, 32, seed=0, key="t/p")
    b = draw_queries(examples, 32, seed=0, key="t/p")
    assert [q.index for q in a] == [q.index for q in b] and len(a) == 32
    assert [q.index for q in a] == sorted(q.index for q in a)
    assert [q.index for q in draw_queries(examples, 32, seed=1, key="t/p")] != [q.index for q in a]
    assert all(q.label is None and q.target_text is None and q.target_scores is None for q in a)
    assert all(q.input_text == f"input {q.index}" for q in a)
    assert len(draw_queries(examples[:10], 32, 0, "t/p")) == 10  # fewer rows than Q: all of them


@pytest.fixture(scope="module")
def held_out_library(tiny_model_dir, tmp_path_factory):
    """A library of the five built-in tasks (distinct answer formats), each task's last hard prompt
    held out: the held-out prompt is a target that shares exactly one source's format."""
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    embedder = TorchEmbedder(encoder)
    entries, targets = [], {}
    for name in list_builtin():
        task = get_task(name, DataSettings())
        *sources, held = task.prompts()
        targets[name] = task.load(held).examples
        for prompt in sources:
            texts = tuple(ex.input_text for ex in task.load(prompt, split="train").examples[:100])
            entries.append(LibraryEntry(f"{name}/{prompt}", name, texts))
    lib = build_library(tmp_path_factory.mktemp("lib"), entries, embedder, tokenizer,
                        retriever_identity(str(tiny_model_dir)), "bank")
    return lib, embedder, tokenizer, targets, entries


def test_queries_retrieve_the_source_with_their_answer_format(held_out_library):
    lib, embedder, tokenizer, targets, entries = held_out_library
    correct = total = top1 = 0
    per_task = {}
    for name, examples in targets.items():
        queries = draw_queries(examples, 32, 0, name)
        hits = retrieve(lib, embedder, tokenizer, queries, 10)
        sources = [pid.rsplit("/", 1)[0] for qh in hits.hits for pid, _ in qh]
        per_task[name] = np.mean([s == name for s in sources])
        correct += sum(s == name for s in sources)
        total += len(sources)
        top1 += frequency_table(hits.hits)[0].prompt_id.startswith(name + "/")
    precision = correct / total
    chance = max(sum(e.source == n for e in entries) / len(entries) for n in targets)
    # Measured on the tiny model: pooled precision 0.46 (animals 0.79, nli 1.00, topic 0.40,
    # sentiment 0.08, fruit_choice 0.03: its held-out template is reworded) against at most 0.25 by
    # chance; the most frequent prompt is from the right source for 3 of the 5 targets. (0.58 before
    # the ids became sentencepiece's own, which prepends a word piece to the first word too: an
    # untrained encoder's embeddings moved.) The tiny retriever is untrained, so only shared words (the
    # answer words in the hard prompt among them) can carry the match; the thresholds ask for 1.5x
    # chance pooled, and for the most frequent prompt (what `rospr` uses) to be from the right source
    # for at least 3 of the 5 targets: a retrieval that ignored the text gets neither.
    assert precision >= 1.5 * chance, per_task
    assert top1 >= 3, per_task


def test_leave_one_out_excludes_the_targets_own_prompts(held_out_library):
    lib, embedder, tokenizer, targets, _ = held_out_library
    queries = draw_queries(targets["builtin/nli"], 8, 0, "nli")
    hits = retrieve(lib, embedder, tokenizer, queries, 10, exclude_sources=["builtin/nli"])
    assert hits.excluded and all(pid.startswith("builtin/nli/") for pid in hits.excluded)
    assert all(not pid.startswith("builtin/nli/") for qh in hits.hits for pid, _ in qh)
    assert all(len(qh) == 10 for qh in hits.hits)
