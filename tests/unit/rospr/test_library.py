"""The Source Prompt Library: FAISS search against a brute-force reference, artifacts checked on load."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from rospr.artifacts import ArtifactError
from rospr.library import IndexSettings, LibraryEntry, build_key, build_library, key_texts, load_library

DIM = 256
RETRIEVER = {"name": "bag-of-words", "config_hash": "bow256", "dim": DIM, "weights": "fedcba9876543210"}


class WordTokenizer:
    """Words -> stable ids (crc32), no special tokens: enough for ``embed_texts``."""

    eos_token_id, pad_token_id = 1, 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[2 + zlib.crc32(w.encode()) % 10_000 for w in t.split()] for t in texts]}


class BagOfWords:
    """An ``Embedder``: counts of hashed token ids, an independent reference for similarity."""

    dim = DIM

    def embed(self, input_ids, attention_mask):
        out = np.zeros((input_ids.shape[0], DIM), np.float32)
        for r, (ids, m) in enumerate(zip(input_ids, attention_mask)):
            for i in ids[m.astype(bool)]:
                out[r, i % DIM] += 1
        return out


WORDS = [f"w{i}" for i in range(60)]


def _entries(n_prompts=6, n=20, seed=0):
    rng = np.random.default_rng(seed)
    return [LibraryEntry(f"src{p % 3}/t{p}", f"src{p % 3}",
                         tuple(" ".join(rng.choice(WORDS[p * 10:(p + 1) * 10], 5)) for _ in range(n)))
            for p in range(n_prompts)]


@pytest.fixture
def built(tmp_path):
    entries = _entries()
    lib = build_library(tmp_path / "lib", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")
    return lib, entries, tmp_path / "lib"


def _reference(entries, queries, k, exclude=()):
    """Brute force: cosine similarity of bag-of-words vectors, in numpy."""
    tok, emb = WordTokenizer(), BagOfWords()

    def vec(texts):
        ids = tok(texts)["input_ids"]
        out = np.zeros((len(texts), DIM))
        for r, row in enumerate(ids):
            for i in row:
                out[r, i % DIM] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    keys = vec([t for e in entries for t in e.texts])
    values = np.array([i for i, e in enumerate(entries) for _ in e.texts])
    sims = vec(queries) @ keys.T
    sims[:, np.isin(values, list(exclude))] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return values[top], np.take_along_axis(sims, top, 1)


def test_flat_search_matches_brute_force(built):
    lib, entries, _ = built
    queries = ["w1 w2 w3 w4", "w35 w36 w31", "w50 w59 w1"]
    ids, sims = lib.search(lib.embed(BagOfWords(), WordTokenizer(), queries), 5)
    ref_ids, ref_sims = _reference(entries, queries, 5)
    np.testing.assert_allclose(sims, ref_sims, rtol=1e-5)
    # the prompts agree wherever the similarity is not tied with the next hit
    untied = np.abs(np.diff(ref_sims, axis=1)) > 1e-6
    assert untied.any() and (ids[:, :-1][untied] == ref_ids[:, :-1][untied]).all()


def test_exclusion_skips_prompts_and_still_returns_k(built):
    lib, entries, _ = built
    q = lib.embed(BagOfWords(), WordTokenizer(), ["w1 w2 w3 w4"])
    ids, sims = lib.search(q, 5, exclude=[0])
    assert 0 not in ids and (ids >= 0).all()
    _, ref_sims = _reference(entries, ["w1 w2 w3 w4"], 5, exclude=[0])
    np.testing.assert_allclose(sims, ref_sims, rtol=1e-5)


@pytest.mark.parametrize("index", [IndexSettings(type="ivf", nlist=4, nprobe=4), IndexSettings(type="hnsw")])
def test_approximate_indexes_agree_with_flat(tmp_path, index):
    entries = _entries()
    flat = build_library(tmp_path / "flat", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "b")
    approx = build_library(tmp_path / "approx", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "b", index)
    q = flat.embed(BagOfWords(), WordTokenizer(), [" ".join(e.texts[0].split()[:3]) for e in entries])
    _, s_flat = flat.search(q, 3)
    _, s_approx = load_library(tmp_path / "approx").search(q, 3)
    # nprobe = nlist makes IVF exhaustive; HNSW on 120 keys with efSearch 128 is exact in practice
    np.testing.assert_allclose(s_approx, s_flat, rtol=1e-5)


def test_round_trip_and_manifest(built):
    lib, entries, root = built
    again = load_library(root, RETRIEVER)
    np.testing.assert_array_equal(again.keys, lib.keys)
    assert again.prompt_ids == [e.prompt_id for e in entries] and len(again) == 120
    m = json.loads((root / "manifest.json").read_text())
    assert m["retriever"] == RETRIEVER and m["bank_hash"] == "bank0" and m["index"]["type"] == "flat"
    assert set(m["files"]) == {"keys.safetensors", "index.faiss", "instances.jsonl"}
    assert m["build_key"] == build_key(entries, "bank0", RETRIEVER, IndexSettings(), True, 512)


@pytest.mark.parametrize("name", ["keys.safetensors", "index.faiss", "instances.jsonl"])
def test_edited_file_is_refused(built, name):
    _, _, root = built
    data = bytearray((root / name).read_bytes())
    data[len(data) // 2] ^= 1
    (root / name).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_library(root)


def test_edited_manifest_and_other_retriever_are_refused(built):
    _, _, root = built
    with pytest.raises(ArtifactError, match="retriever"):
        load_library(root, {**RETRIEVER, "config_hash": "other"})
    m = json.loads((root / "manifest.json").read_text())
    m["sources"][0] = "elsewhere"
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="manifest_hash"):
        load_library(root)


def test_build_key_follows_the_inputs():
    entries = _entries()
    base = build_key(entries, "b", RETRIEVER, IndexSettings(), True, 512)
    changed = [LibraryEntry(entries[0].prompt_id, entries[0].source, entries[0].texts[:-1]), *entries[1:]]
    assert build_key(changed, "b", RETRIEVER, IndexSettings(), True, 512) != base
    assert build_key(entries, "b2", RETRIEVER, IndexSettings(), True, 512) != base
    assert build_key(entries, "b", RETRIEVER, IndexSettings(type="hnsw"), True, 512) != base


def test_key_texts_first_or_seeded_random_rows_per_dataset():
    texts = [f"row {i}" for i in range(50)]
    assert key_texts(texts, 5) == ("row 0", "row 1", "row 2", "row 3", "row 4")
    drawn = key_texts(texts, 5, "random", seed=0, key="glue/mrpc")
    assert len(set(drawn)) == 5 and drawn != key_texts(texts, 5)
    assert list(drawn) == sorted(drawn, key=lambda t: int(t.split()[1]))  # kept in row order
    # the draw depends on the seed and the dataset only: every prompt of a dataset keeps the same rows
    other_prompt = [f"other template, row {i}" for i in range(50)]
    assert [t.split()[-1] for t in key_texts(other_prompt, 5, "random", 0, "glue/mrpc")] == [t.split()[-1] for t in drawn]
    assert key_texts(texts, 5, "random", seed=1, key="glue/mrpc") != drawn
    assert key_texts(texts, 5, "random", seed=0, key="paws") != drawn
    assert key_texts(texts[:3], 5, "random") == tuple(texts[:3])  # fewer rows than n: all of them
    with pytest.raises(ValueError, match="library sample 'last'"):
        key_texts(texts, 5, "last")


def test_pooling_is_recorded_and_keys_of_the_default_pooling_keep_their_build_key(tmp_path):
    entries = _entries()
    old = build_key(entries, "bank0", RETRIEVER, IndexSettings(), True, 512)
    assert build_key(entries, "bank0", RETRIEVER, IndexSettings(), True, 512, "masked") == old
    assert build_key(entries, "bank0", RETRIEVER, IndexSettings(), True, 512, "padded") != old
    lib = build_library(tmp_path / "lib", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")
    assert lib.manifest["pooling"] == "masked" and load_library(tmp_path / "lib").pooling == "masked"
    # padded keys need the encoder's states at pad positions: a bag of words has none
    with pytest.raises(ValueError, match="only the PyTorch retriever"):
        build_library(tmp_path / "lib2", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0", pooling="padded")


def test_a_library_is_published_whole_and_a_foreign_folder_is_not_replaced(tmp_path):
    """The library folder is a store entry: a rebuild replaces the earlier one whole (no stage left
    beside it), a folder holding anything else is refused untouched, an empty one is used, and a link
    in the library's place is not written through."""
    from rospr.store import StoreError

    entries = _entries()
    first = build_library(tmp_path / "lib", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")
    again = build_library(tmp_path / "lib", entries[:3], BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")
    assert again.build_key != first.build_key and load_library(tmp_path / "lib").build_key == again.build_key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "index.faiss").write_bytes(b"the user's own index")
    with pytest.raises(ArtifactError, match="not a rospr library"):
        build_library(theirs, entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")
    assert [p.name for p in theirs.iterdir()] == ["index.faiss"]
    (tmp_path / "empty").mkdir()
    assert len(build_library(tmp_path / "empty", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")) == 120
    (tmp_path / "link").symlink_to(theirs, target_is_directory=True)
    with pytest.raises(StoreError, match="symbolic link"):
        build_library(tmp_path / "link", entries, BagOfWords(), WordTokenizer(), RETRIEVER, "bank0")
    assert [p.name for p in theirs.iterdir()] == ["index.faiss"]


def test_a_texts_key_stands_for_the_texts_in_the_one_key():
    entries = _entries()
    keyed = [LibraryEntry(e.prompt_id, e.source, e.texts, texts_key=f"k{i}") for i, e in enumerate(entries)]
    no_texts = [LibraryEntry(e.prompt_id, e.source, texts_key=f"k{i}") for i, e in enumerate(entries)]
    key = build_key(keyed, "b", RETRIEVER, IndexSettings(), True, 512)
    assert key == build_key(no_texts, "b", RETRIEVER, IndexSettings(), True, 512)  # told without rendering
    assert key != build_key(entries, "b", RETRIEVER, IndexSettings(), True, 512)


def test_class_8_what_users_meet_faiss_loads_without_its_info_lines():
    """class 8: what users meet. faiss's loader logs six INFO lines ("Loading faiss with AVX2 support", ...) when
    imported; with logging at INFO (as ``rospr run`` sets it), importing it through rospr.library shows none of
    them, while its warnings still pass and rospr's own INFO lines too."""
    import subprocess
    import sys

    code = ("import logging; logging.basicConfig(level=logging.INFO, format='%(name)s %(levelname)s %(message)s')\n"
            "import rospr.library\nimport faiss\nfaiss.IndexFlatIP(4)\n"
            "logging.getLogger('faiss.loader').warning('a loader warning')\n"
            "logging.getLogger('rospr.library').info('ours')\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300).stderr
    assert "Loading faiss" not in err and "faiss.loader INFO" not in err, err
    assert "faiss.loader WARNING a loader warning" in err and "rospr.library INFO ours" in err, err
