"""rospr/canonical.py: the exact text content hashes cover, against JSON texts written by hand.

``canonical`` (compact, refuses what is not JSON) is what every digest of a plain dict covers;
``row_text`` (json's default separators, takes any row) is what a task row's content hash and a
template's row seed cover. Their bytes are part of results.json (``content_hash``) and of every
seeded prompt, so these texts are pinned here.
"""

from __future__ import annotations

import datetime
import hashlib

import pytest

from rospr.canonical import canonical, derive_seed, digest_bytes, digest_chunks, digest_json, row_text, sha256_file
from rospr_harness.tasks.common import content_hash


def test_canonical_is_sorted_and_compact_and_refuses_what_is_not_json():
    assert canonical({"b": [1, 2.5, None], "a": {"é": True}}) == '{"a":{"é":true},"b":[1,2.5,null]}'
    assert digest_json({"b": 1, "a": 2}) == hashlib.sha256(b'{"a":2,"b":1}').hexdigest()
    with pytest.raises(ValueError):
        canonical({"x": float("nan")})
    with pytest.raises(TypeError):
        canonical({"when": datetime.date(2024, 1, 2)})


def test_row_text_has_the_default_separators_and_takes_any_row():
    assert row_text({"text": "red or blue", "label": 0, "a": "é"}) == '{"a": "é", "label": 0, "text": "red or blue"}'
    assert row_text({"when": datetime.date(2024, 1, 2), "x": float("nan")}) == '{"when": "2024-01-02", "x": NaN}'
    assert row_text([{"b": 1}, "c"]) == '[{"b": 1}, "c"]'


def test_a_content_hash_covers_the_template_and_each_row_text():
    rows = [{"text": "red or blue", "label": 0}, {"text": "cat or dog", "label": 1}]
    by_hand = hashlib.sha256('T {{text}}\n{"label": 0, "text": "red or blue"}\n{"label": 1, "text": "cat or dog"}'
                             .encode()).hexdigest()
    assert content_hash("T {{text}}", rows) == by_hand


def test_derive_seed_is_the_leading_bits_of_the_sha256_of_the_joined_parts():
    """By hand: the library, query, built-in and tuning seeds were each spelt this way before."""
    text = hashlib.sha256(b"rospr-tune/7/super_glue_rte/prompt").digest()
    assert derive_seed("rospr-tune", 7, "super_glue_rte/prompt", bits=32) == int.from_bytes(text[:4], "big")
    text = hashlib.sha256("tid\n{\"a\": \"é\"}".encode()).digest()
    assert derive_seed("tid", row_text({"a": "é"}), sep="\n") == int.from_bytes(text[:8], "big")
    assert derive_seed("x", "y", sep="\x1f") != derive_seed("x", "y")


def test_digests_of_bytes_pieces_and_files_are_plain_sha256(tmp_path):
    data = bytes(range(256)) * 40000  # over one 4 MiB block
    (tmp_path / "f").write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert digest_bytes(data) == sha256_file(tmp_path / "f") == want
    assert digest_chunks(iter([data[:5], data[5:100].decode("latin-1").encode("latin-1"), data[100:]])) == want
    assert digest_chunks(["é", b"x"]) == hashlib.sha256("éx".encode()).hexdigest()
