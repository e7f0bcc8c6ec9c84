"""The prompt bank on disk: round trip, and refusal of anything edited, misshapen or mismatched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from rospr.artifacts import ArtifactError, seal, sha256_file
from rospr.softprompt import PromptBank, SoftPrompt, entry_name, mix
from rospr.store import StoreError
from helpers import REPO

BACKBONE = {"name": "tiny", "config_hash": "abc123", "d_model": 8, "vocab_size": 100, "n_parameters": 1234,
            "weights": "0123456789abcdef"}


def _prompt(pid: str, seed: int, p: int = 4) -> SoftPrompt:
    values = np.random.default_rng(seed).normal(size=(p, 8)).astype(np.float32)
    source, template = pid.rsplit("/", 1)
    return SoftPrompt(pid, source, template, ("yes", "no"), values, steps=7, final_loss=0.5, seed=seed, train_key=f"k{seed}")


@pytest.fixture
def bank_dir(tmp_path: Path) -> Path:
    bank = PromptBank.open(tmp_path / "bank", BACKBONE)
    bank.add(_prompt("src/a", 1))
    bank.add(_prompt("src/b", 2))
    return tmp_path / "bank"


def _entry_manifest(bank_dir: Path, pid: str) -> Path:
    return bank_dir / entry_name(pid) / "manifest.json"


def _rewrite(bank_dir: Path, pid: str, values: np.ndarray) -> None:
    """Replace a prompt's file and re-seal its entry's manifest, as a careful forger would: only the
    content checks (shape, dtype, finiteness) can catch it."""
    path = _entry_manifest(bank_dir, pid)
    manifest = json.loads(path.read_text())
    save_file({"prompt": values}, str(path.parent / "prompt.safetensors"))
    manifest["files"]["prompt.safetensors"] = sha256_file(path.parent / "prompt.safetensors")
    path.write_text(json.dumps(seal(manifest)))


def test_round_trip(bank_dir):
    bank = PromptBank.load(bank_dir, BACKBONE)
    assert bank.ids() == ["src/a", "src/b"]
    a = bank.get("src/a")
    np.testing.assert_array_equal(a.values, _prompt("src/a", 1).values)
    assert (a.source, a.template, a.answer_choices, a.steps, a.final_loss) == ("src", "a", ("yes", "no"), 7, 0.5)
    manifest = json.loads(_entry_manifest(bank_dir, "src/a").read_text())
    entry = manifest["prompt"]
    assert {"id", "source", "template", "answer_choices", "P", "D", "steps", "final_loss"} <= set(entry)
    assert (entry["P"], entry["D"]) == (4, 8) and manifest["backbone"] == BACKBONE
    assert bank.entry("src/a")["sha256"] == manifest["files"]["prompt.safetensors"]
    assert not [p for p in bank_dir.rglob("*") if p.name.startswith(".")]  # no stage left


def test_edited_prompt_file_is_refused(bank_dir):
    path = next((bank_dir / "prompts").glob("*/prompt.safetensors"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one number
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        PromptBank.load(bank_dir, BACKBONE)


def test_edited_manifest_is_refused(bank_dir):
    path = _entry_manifest(bank_dir, "src/a")
    manifest = json.loads(path.read_text())
    manifest["prompt"]["source"] = "other"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest_hash"):
        PromptBank.load(bank_dir, BACKBONE)


@pytest.mark.parametrize("values, message", [
    (np.zeros((5, 8), np.float32), "P=4"),
    (np.zeros((4, 8), np.float64), "float32"),
    (np.full((4, 8), np.nan, np.float32), "non-finite"),
])
def test_bad_content_is_refused(bank_dir, values, message):
    _rewrite(bank_dir, "src/a", values)
    with pytest.raises(ArtifactError, match=message):
        PromptBank.load(bank_dir, BACKBONE)


def test_backbone_mismatch_is_refused(bank_dir):
    with pytest.raises(ArtifactError, match="trained for backbone"):
        PromptBank.load(bank_dir, {**BACKBONE, "config_hash": "other"})
    with pytest.raises(ArtifactError, match="d_model"):
        PromptBank.load(bank_dir, {**BACKBONE, "d_model": 16})


def test_non_finite_prompt_is_not_saved(tmp_path):
    bad = SoftPrompt("s/t", "s", "t", (), np.full((2, 8), np.inf, np.float32))
    with pytest.raises(ArtifactError, match="non-finite"):
        PromptBank.open(tmp_path, BACKBONE).add(bad)


def test_mix_is_the_weighted_sum():
    a, b = _prompt("s/a", 1), _prompt("s/b", 2)
    np.testing.assert_allclose(mix([a, b], [0.25, 0.75]), 0.25 * a.values + 0.75 * b.values, rtol=1e-6)


def test_no_pickle_in_the_method():
    root = REPO / "rospr"
    for path in root.glob("*.py"):
        text = path.read_text()
        for banned in ("import pickle", "torch.save", "allow_pickle=True", "np.save("):
            assert banned not in text, f"{path.name} uses {banned}"
        # one exception: a published weights file (the authors' T0_small.pt) is read, never written, and only
        # through torch's restricted unpickler (rospr.retriever.read_state_dict)
        for call in re.findall(r"torch\.load\(.*", text):  # the call, to the end of its line
            assert "weights_only=True" in call, f"{path.name}: {call}"


def test_each_prompt_is_its_own_store_entry(tmp_path):
    """Opening writes nothing; each add publishes one sealed entry and leaves the others' bytes as
    they were; a reader sees every prompt; a stage left by a dead writer is not a prompt."""
    root = tmp_path / "bank"
    bank = PromptBank.open(root, BACKBONE)
    assert not root.exists()  # opening writes nothing
    bank.add(_prompt("src/a", 1))
    first = _entry_manifest(root, "src/a").read_bytes()
    bank.add(_prompt("src/b", 2))
    bank.add(_prompt("src/c", 3))
    assert _entry_manifest(root, "src/a").read_bytes() == first  # not rewritten per prompt
    assert sorted(p.name for p in (root / "prompts").iterdir()) == sorted(
        entry_name(pid).split("/")[1] for pid in ("src/a", "src/b", "src/c"))
    assert PromptBank.load(root, BACKBONE).ids() == ["src/a", "src/b", "src/c"]
    np.testing.assert_array_equal(PromptBank.load(root, BACKBONE).get("src/c").values, _prompt("src/c", 3).values)
    (root / "prompts" / ".stage-x-dead").mkdir()  # a writer killed mid-way
    (root / "prompts" / ".stage-x-dead" / "prompt.safetensors").write_bytes(b"half")
    assert PromptBank.load(root, BACKBONE).ids() == ["src/a", "src/b", "src/c"]
    bank.add(_prompt("src/b", 5))  # replaces its entry: one entry per id
    assert PromptBank.load(root, BACKBONE).get("src/b").seed == 5
    assert not (root / "prompts" / ".stage-x-dead").exists()  # swept by the next write


def test_two_writers_of_one_bank_keep_both_their_prompts(tmp_path):
    """Two tunings into one bank, each opened before the other wrote (two processes at once): there
    is no bank-level file for the second to overwrite, so both keep their prompts."""
    root = tmp_path / "bank"
    one, two = PromptBank.open(root, BACKBONE), PromptBank.open(root, BACKBONE)
    one.add(_prompt("left/a", 1))
    two.add(_prompt("right/a", 2))
    one.add(_prompt("left/b", 3))
    assert PromptBank.load(root, BACKBONE).ids() == ["left/a", "left/b", "right/a"]


def test_a_planted_link_in_the_bank_is_not_written_through(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "bank"
    root.mkdir()
    (root / "prompts").symlink_to(outside)
    with pytest.raises(StoreError, match="symbolic link"):
        PromptBank.open(root, BACKBONE).add(_prompt("src/a", 1))
    assert list(outside.iterdir()) == []
    (root / "prompts").unlink()
    (root / "prompts").mkdir()
    (root / entry_name("src/a")).symlink_to(outside, target_is_directory=True)  # one entry's folder
    with pytest.raises(StoreError, match="symbolic link"):
        PromptBank.open(root, BACKBONE).add(_prompt("src/a", 1))
    assert list(outside.iterdir()) == []


def _previous_layout(root: Path, prompts: list[SoftPrompt], journal: bool = False) -> None:
    """A bank as rospr wrote it before its prompts were store entries: one sealed manifest.json
    (version 2) listing prompts/<slug>.safetensors, and maybe a journal of an interrupted tuning."""
    from safetensors.numpy import save

    from rospr.softprompt import _slug

    (root / "prompts").mkdir(parents=True)
    entries = []
    for p in prompts:
        rel = f"prompts/{_slug(p.id)}.safetensors"
        (root / rel).write_bytes(save({"prompt": p.values}, metadata={"id": p.id}))
        entries.append({"id": p.id, "source": p.source, "template": p.template, "answer_choices": list(p.answer_choices),
                        "P": p.shape[0], "D": p.shape[1], "dtype": "float32", "file": rel,
                        "sha256": sha256_file(root / rel), "train_key": p.train_key, "steps": p.steps,
                        "final_loss": p.final_loss, "seed": p.seed})
    manifest = {"format": "rospr-prompt-bank", "version": 2, "backbone": BACKBONE, "prompts": entries}
    (root / "manifest.json").write_text(json.dumps(seal(manifest)))
    if journal:
        (root / "journal.jsonl").write_text('{"entry": {"id": "src/z"}, "chain": "0"}\n')


def test_a_bank_of_the_previous_layout_is_moved_into_entries_on_open(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    prompts = [_prompt("src/a", 1), _prompt("src/b", 2)]
    _previous_layout(old, prompts, journal=True)
    fresh = PromptBank.open(new, BACKBONE)
    for p in prompts:
        fresh.add(p)
    bank = PromptBank.load(old, BACKBONE)
    assert bank.ids() == ["src/a", "src/b"]
    assert bank.content_hash() == PromptBank.load(new, BACKBONE).content_hash()  # the same prompt files
    np.testing.assert_array_equal(bank.get("src/b").values, prompts[1].values)
    assert not (old / "manifest.json").exists() and not (old / "journal.jsonl").exists()
    assert sorted(p.name for p in (old / "prompts").iterdir()) == sorted(p.name for p in (new / "prompts").iterdir())


def test_an_edited_bank_of_the_previous_layout_is_refused_not_moved(tmp_path):
    _previous_layout(tmp_path, [_prompt("src/a", 1)])
    victim = next((tmp_path / "prompts").glob("*.safetensors"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\1")
    with pytest.raises(ArtifactError, match="sha256"):
        PromptBank.load(tmp_path, BACKBONE)
    assert (tmp_path / "manifest.json").exists()
