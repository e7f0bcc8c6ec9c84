"""The prompt bank on disk: round trip, and refusal of anything edited, misshapen or mismatched."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from rospr.artifacts import ArtifactError, seal, sha256_file
from rospr.softprompt import PromptBank, SoftPrompt, mix
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
    bank.compact()  # as a tuning does when it ends
    return tmp_path / "bank"


def _rewrite(bank_dir: Path, pid: str, values: np.ndarray) -> None:
    """Replace a prompt's file and re-seal the manifest, as a careful forger would: only the
    content checks (shape, dtype, finiteness) can catch it."""
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    entry = next(e for e in manifest["prompts"] if e["id"] == pid)
    save_file({"prompt": values}, str(bank_dir / entry["file"]))
    entry["sha256"] = sha256_file(bank_dir / entry["file"])
    (bank_dir / "manifest.json").write_text(json.dumps(seal(manifest)))


def test_round_trip(bank_dir):
    bank = PromptBank.load(bank_dir, BACKBONE)
    assert bank.ids() == ["src/a", "src/b"]
    a = bank.get("src/a")
    np.testing.assert_array_equal(a.values, _prompt("src/a", 1).values)
    assert (a.source, a.template, a.answer_choices, a.steps, a.final_loss) == ("src", "a", ("yes", "no"), 7, 0.5)
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    entry = manifest["prompts"][0]
    assert {"id", "source", "template", "answer_choices", "P", "D", "sha256", "steps", "final_loss"} <= set(entry)
    assert (entry["P"], entry["D"]) == (4, 8) and manifest["backbone"] == BACKBONE
    assert not list(bank_dir.rglob("*.tmp"))


def test_edited_prompt_file_is_refused(bank_dir):
    path = next((bank_dir / "prompts").glob("*.safetensors"))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one number
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        PromptBank.load(bank_dir, BACKBONE)


def test_edited_manifest_is_refused(bank_dir):
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    manifest["prompts"][0]["source"] = "other"
    (bank_dir / "manifest.json").write_text(json.dumps(manifest))
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


def test_prompts_are_journaled_then_compacted(tmp_path):
    """Each add after the first writes one journal line, not the manifest; a reader sees every prompt;
    an edited line is refused; a torn last line is ignored and cut by the next add; compact folds the
    journal into the manifest; opening a bank writes nothing."""
    root = tmp_path / "bank"
    bank = PromptBank.open(root, BACKBONE)
    assert not root.exists()  # opening writes nothing
    bank.add(_prompt("src/a", 1))
    manifest = (root / "manifest.json").read_bytes()
    bank.add(_prompt("src/b", 2))
    bank.add(_prompt("src/c", 3))
    assert (root / "manifest.json").read_bytes() == manifest  # not rewritten per prompt
    lines = (root / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x)["entry"]["id"] for x in lines] == ["src/b", "src/c"]
    assert PromptBank.load(root, BACKBONE).ids() == ["src/a", "src/b", "src/c"]
    np.testing.assert_array_equal(PromptBank.load(root, BACKBONE).get("src/c").values, _prompt("src/c", 3).values)

    with open(root / "journal.jsonl", "ab") as f:  # a crash while appending a line
        f.write(b'{"entry": {"id": "src/d"')
    assert PromptBank.load(root, BACKBONE).ids() == ["src/a", "src/b", "src/c"]
    reopened = PromptBank.open(root, BACKBONE)
    reopened.add(_prompt("src/d", 4))
    assert PromptBank.load(root, BACKBONE).ids() == ["src/a", "src/b", "src/c", "src/d"]
    assert all(json.loads(x) for x in (root / "journal.jsonl").read_text().splitlines())

    journal = (root / "journal.jsonl").read_text().splitlines()
    edited = json.loads(journal[0])
    edited["entry"]["final_loss"] = 0.0
    (root / "journal.jsonl").write_text("\n".join([json.dumps(edited), *journal[1:]]) + "\n")
    with pytest.raises(ArtifactError, match="line 1 does not follow from the manifest"):
        PromptBank.load(root, BACKBONE)
    (root / "journal.jsonl").write_text("\n".join([journal[1], journal[0], *journal[2:]]) + "\n")  # reordered
    with pytest.raises(ArtifactError, match="line 1 does not follow"):
        PromptBank.load(root, BACKBONE)

    (root / "journal.jsonl").write_text("\n".join(journal) + "\n")
    bank = PromptBank.open(root, BACKBONE)
    bank.compact()
    assert not (root / "journal.jsonl").exists()
    assert [e["id"] for e in json.loads((root / "manifest.json").read_text())["prompts"]] == bank.ids()
    assert PromptBank.load(root, BACKBONE).ids() == ["src/a", "src/b", "src/c", "src/d"]
