"""Identities belong to the weights, not the architecture.

Model B is the tiny model with one weight tensor perturbed and saved to another folder: the same
config, hence the same architecture and config hash, other weights. Every artifact made from one
(export, retriever graph, prompt bank, peft-imported prompt, library) is refused or rebuilt for the
other; identities of local checkpoints are read from their files, without torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rospr.artifacts import ArtifactError, seal
from rospr.identity import config_digest, retriever_identity, weights_digest
from rospr.softprompt import BANK_FORMAT, PromptBank, SoftPrompt, entry_name, rekey
from helpers import REPO



def perturbed_copy(src: Path, out: Path, scale: float = 1e-2, seed: int = 1) -> Path:
    """A copy of checkpoint ``src`` whose first weight tensor has noise added: another model of one shape."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, out)
    tensors = load_file(str(src / "model.safetensors"))
    name = sorted(tensors)[0]
    rng = np.random.default_rng(seed)
    tensors[name] = (tensors[name] + scale * rng.standard_normal(tensors[name].shape)).astype(tensors[name].dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="module")
def model_b(tiny_model_dir, tmp_path_factory) -> Path:
    return perturbed_copy(tiny_model_dir, tmp_path_factory.mktemp("model-b") / "tiny-b")


@pytest.fixture(scope="module")
def identities(tiny_model_dir, model_b):
    from rospr.backbone import load_backbone

    return load_backbone(tiny_model_dir)[2].as_dict(), load_backbone(model_b)[2].as_dict()


def test_one_architecture_two_weights_digests(tiny_model_dir, model_b, tmp_path):
    assert config_digest(tiny_model_dir) == config_digest(model_b)
    a, b = weights_digest(tiny_model_dir), weights_digest(model_b)
    assert a != b and len(a) == len(b) == 16
    # by hand: sha256 over the tokenization rule, then each weight file's name and sha256, then each
    # tokenizer file's, in name order
    from rospr.tokenizer import TOKENIZATION

    h = hashlib.sha256(TOKENIZATION.encode())
    tokenizer_files = sorted(["spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])
    for name in ["model.safetensors", *tokenizer_files]:
        h.update(name.encode())
        h.update(hashlib.sha256((model_b / name).read_bytes()).hexdigest().encode())
    assert b == h.hexdigest()[:16] == weights_digest(model_b, full=True)
    # another perturbation, of a size no test would notice in the scores, is another model too
    c = perturbed_copy(tiny_model_dir, tmp_path / "c", scale=1e-7, seed=2)
    assert weights_digest(c) not in (a, b)


def test_backbone_identity_differs_only_in_its_weights(identities):
    a, b = identities
    assert {k: v for k, v in a.items() if k != "weights"} == {k: v for k, v in b.items() if k != "weights"} | {
        "name": a["name"]}
    assert a["weights"] != b["weights"]


def test_retriever_identity_reads_files_and_imports_neither_torch_nor_transformers(tiny_model_dir, model_b):
    code = ("import json, sys\nfrom rospr.identity import retriever_identity\n"
            f"ids = [retriever_identity({str(tiny_model_dir)!r}), retriever_identity({str(model_b)!r})]\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "print(json.dumps({'ids': ids, 'heavy': heavy}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []
    a, b = out["ids"]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    volatile = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash")
    by_hand = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k not in volatile},
                                        sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert a["config_hash"] == b["config_hash"] == by_hand and a["dim"] == b["dim"] == config["d_model"]
    assert a["weights"] == weights_digest(tiny_model_dir) != b["weights"] == weights_digest(model_b)


def test_a_folder_without_config_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="config.json: missing"):
        retriever_identity(tmp_path)


# -- prompt banks ------------------------------------------------------------------------------------------
def _prompt(pid: str, d: int, seed: int = 0) -> SoftPrompt:
    values = np.random.default_rng(seed).normal(size=(3, d)).astype(np.float32)
    source, template = pid.rsplit("/", 1)
    return SoftPrompt(pid, source, template, ("yes", "no"), values, 1, 0.5, seed, f"key{seed}")


def test_a_bank_of_model_a_is_refused_for_model_b(identities, tmp_path):
    a, b = identities
    bank = PromptBank.open(tmp_path / "bank", a)
    bank.add(_prompt("src/t", a["d_model"]))
    assert PromptBank.load(tmp_path / "bank", a).get("src/t").shape == (3, a["d_model"])
    for opener in (lambda: PromptBank.load(tmp_path / "bank", b), lambda: PromptBank.open(tmp_path / "bank", b)):
        with pytest.raises(ArtifactError) as info:
            opener()
        message = str(info.value)
        assert a["weights"] in message and b["weights"] in message and "\n" not in message
        assert "point model.name_or_path" in message and "tune a bank for this model" in message
    # an identity that gives no weights cannot stand for one
    with pytest.raises(ArtifactError, match="weights"):
        PromptBank.load(tmp_path / "bank", {k: v for k, v in a.items() if k != "weights"})
    # the bank's content hash (part of every library build key) follows the weights
    assert bank.content_hash() != PromptBank.open(tmp_path / "b2", b).content_hash()


def test_a_peft_imported_prompt_keeps_to_the_weights_of_its_bank(identities, tiny_model_dir, tmp_path):
    from rospr.peft_adapter import import_adapter, model_shape, write_adapter

    a, b = identities
    config = json.loads((tiny_model_dir / "config.json").read_text())
    values = np.random.default_rng(3).normal(size=(4, a["d_model"])).astype(np.float32)
    adapter = write_adapter(values, tmp_path / "adapter", str(tiny_model_dir), model_shape(config))
    bank = PromptBank.open(tmp_path / "bank", a)
    import_adapter(bank, adapter, "builtin/animals", "mentions_animal", ("yes", "no"), model_shape(config))
    assert PromptBank.load(tmp_path / "bank", a).ids() == ["builtin/animals/mentions_animal"]
    with pytest.raises(ArtifactError, match=b["weights"]):
        PromptBank.load(tmp_path / "bank", b)


def _version_1_bank(root: Path, identity: dict, d: int) -> Path:
    """A bank as rospr wrote it before the weights were recorded: one manifest.json of version 1 listing
    prompts/<slug>.safetensors, no 'weights' in its backbone."""
    from safetensors.numpy import save

    from rospr.artifacts import sha256_file
    from rospr.softprompt import _slug

    p = _prompt("src/t", d)
    rel = f"prompts/{_slug(p.id)}.safetensors"
    (root / "prompts").mkdir(parents=True)
    (root / rel).write_bytes(save({"prompt": p.values}, metadata={"id": p.id}))
    entry = {"id": p.id, "source": p.source, "template": p.template, "answer_choices": list(p.answer_choices),
             "P": p.shape[0], "D": p.shape[1], "dtype": "float32", "file": rel, "sha256": sha256_file(root / rel),
             "train_key": p.train_key, "steps": p.steps, "final_loss": p.final_loss, "seed": p.seed}
    backbone = {k: v for k, v in identity.items() if k != "weights"}
    manifest = {"format": BANK_FORMAT, "version": 1, "backbone": backbone, "prompts": [entry]}
    (root / "manifest.json").write_text(json.dumps(seal(manifest)))
    return root


def test_a_bank_tuned_before_weights_were_recorded_is_refused_until_rekeyed(identities, tmp_path):
    a, b = identities
    root = _version_1_bank(tmp_path / "old", a, a["d_model"])
    with pytest.raises(ArtifactError, match=r"version 1.*rospr bank rekey --bank .* --model M"):
        PromptBank.load(root, a)
    with pytest.raises(ArtifactError, match="config_hash"):  # another architecture cannot be claimed
        rekey(root, {**a, "config_hash": "0" * 16})
    rekey(root, b)  # the user's word: tuned on B
    manifest = json.loads((root / entry_name("src/t") / "manifest.json").read_text())  # moved into the store layout
    assert manifest["format"] == BANK_FORMAT and manifest["version"] == 3 and manifest["backbone"]["weights"] == b["weights"]
    assert not (root / "manifest.json").exists()
    assert PromptBank.load(root, b).get("src/t").train_key == "key0"  # prompts and train keys kept
    with pytest.raises(ArtifactError, match=a["weights"]):
        PromptBank.load(root, a)
    with pytest.raises(ArtifactError, match="nothing to re-key"):
        rekey(root, b)


def test_rekey_refuses_an_edited_old_bank(identities, tmp_path):
    a, _ = identities
    root = _version_1_bank(tmp_path / "old", a, a["d_model"])
    prompt = next((root / "prompts").glob("*.safetensors"))
    data = bytearray(prompt.read_bytes())
    data[-1] ^= 1
    prompt.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        rekey(root, a)


def test_cli_rekey(identities, tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    a, _ = identities
    root = _version_1_bank(tmp_path / "old", a, a["d_model"])
    res = CliRunner().invoke(app, ["bank", "rekey", "--bank", str(root), "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    assert PromptBank.load(root, a).ids() == ["src/t"]
    res = CliRunner().invoke(app, ["bank", "rekey", "--bank", str(root), "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "nothing to re-key" in res.output


# -- libraries ---------------------------------------------------------------------------------------------
class HashEmbedder:
    """An ``Embedder`` that needs no model: token ids folded into 8 buckets."""

    dim = 8

    def embed(self, input_ids, attention_mask):
        out = np.zeros((input_ids.shape[0], self.dim), np.float32)
        for r, (ids, m) in enumerate(zip(input_ids, attention_mask)):
            for i in ids[m.astype(bool)]:
                out[r, int(i) % self.dim] += 1
        return out


class WordIds:
    eos_token_id, pad_token_id = 1, 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[2 + len(w) for w in t.split()] for t in texts]}


def test_a_library_of_retriever_a_is_refused_for_retriever_b(tiny_model_dir, model_b, tmp_path):
    from rospr.library import LibraryEntry, build_library, load_library

    ra, rb = retriever_identity(tiny_model_dir), retriever_identity(model_b)
    entries = [LibraryEntry("s/a", "s", ("one two", "three four five")), LibraryEntry("s/b", "s", ("six",))]
    build_library(tmp_path / "lib", entries, HashEmbedder(), WordIds(), ra, "bank")
    assert len(load_library(tmp_path / "lib", ra)) == 3
    with pytest.raises(ArtifactError) as info:
        load_library(tmp_path / "lib", rb)
    assert ra["weights"] in str(info.value) and rb["weights"] in str(info.value)
    assert "point rospr.retriever" in str(info.value)
    with pytest.raises(ArtifactError, match="weights"):  # an identity without weights proves nothing
        load_library(tmp_path / "lib", {k: v for k, v in ra.items() if k != "weights"})
    # a library written before the retriever's weights were recorded
    manifest = json.loads((tmp_path / "lib" / "manifest.json").read_text())
    manifest["version"] = 1
    manifest["retriever"].pop("weights")
    (tmp_path / "lib" / "manifest.json").write_text(json.dumps(seal(manifest)))
    with pytest.raises(ArtifactError, match="before rospr recorded the retriever's weights.*delete it to rebuild"):
        load_library(tmp_path / "lib")


# -- exports -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exports(tiny_model_dir, tmp_path_factory):
    """The scorer and retriever exports of model A in a cache of their own."""
    from rospr_harness.backends.onnxruntime_backend import ensure_export

    cache = tmp_path_factory.mktemp("onnx-a")
    return cache, ensure_export(tiny_model_dir, None, "float32", cache), ensure_export(None, tiny_model_dir,
                                                                                       "float32", cache)


def _place(folder: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".digests.json"))


@pytest.mark.parametrize("role", ["model", "retriever"])
def test_an_export_of_model_a_is_refused_for_model_b(exports, tiny_model_dir, model_b, role):
    from rospr_export.identity import export_sources
    from rospr_export.manifest import ExportSourceError, verify_export

    _, scorer, retriever = exports
    folder, graph = (scorer, "t0_scorer") if role == "model" else (retriever, "retriever")
    sources = export_sources(model_b, None) if role == "model" else export_sources(None, model_b)
    verify_export(folder, sources=export_sources(*((tiny_model_dir, None) if role == "model" else (None, tiny_model_dir))))
    with pytest.raises(ExportSourceError) as info:
        verify_export(folder, sources=sources)
    message = str(info.value)
    assert weights_digest(tiny_model_dir) in message and weights_digest(model_b) in message
    assert graph in message and "\n" not in message


@pytest.mark.parametrize("role", ["model", "retriever"])
def test_an_export_of_model_a_placed_in_model_bs_cache_entry_is_exported_again(exports, tiny_model_dir, model_b,
                                                                                 role, caplog):
    from rospr_harness.backends.onnxruntime_backend import ensure_export, export_folder
    from rospr_export.manifest import find_manifest

    cache, scorer, retriever = exports
    args = (model_b, None) if role == "model" else (None, model_b)
    target = export_folder(*args, "float32", cache)
    _place(scorer if role == "model" else retriever, target)
    with caplog.at_level(logging.WARNING):
        folder = ensure_export(*args, "float32", cache)
    assert folder == target
    manifest = find_manifest(folder)
    recorded = manifest["model_weights"] if role == "model" else manifest["graphs"]["retriever"]["weights"]
    assert recorded == weights_digest(model_b)
    assert any(weights_digest(tiny_model_dir) in r.getMessage() and "exporting again" in r.getMessage()
               for r in caplog.records)


def test_the_onnxruntime_backend_of_model_b_names_b_s_weights(exports, tiny_model_dir, model_b):
    """The run's identity (what the report and the bank check see) is the weights scored."""
    from rospr_harness.backends.onnxruntime_backend import create_onnxruntime_backend, export_folder
    from rospr_harness.config import load_config

    cache, scorer, _ = exports
    _place(scorer, export_folder(model_b, None, "float32", cache))
    config = load_config(None, [], tree={"model": {"name_or_path": str(model_b)}, "backend": "onnxruntime",
                                         "tasks": [{"name": "builtin/sentiment"}],
                                         "onnxruntime": {"cache_dir": str(cache)}})
    backend = create_onnxruntime_backend(config.model, config.onnxruntime, config.scoring)
    assert backend.identity["weights"] == weights_digest(model_b) != weights_digest(tiny_model_dir)
    assert backend.identity["name"] == model_b.name


def test_an_unsealed_export_in_the_cache_is_exported_again(exports, tiny_model_dir, tmp_path, caplog):
    """An export written before manifests were sealed: one warning line, then a fresh export."""
    from rospr_harness.backends.onnxruntime_backend import ensure_export, export_folder
    from rospr_export.manifest import find_manifest

    _, scorer, _ = exports
    cache = tmp_path / "onnx"
    target = export_folder(tiny_model_dir, None, "float32", cache)
    _place(scorer, target)
    old = find_manifest(target)
    for key in ("manifest_hash", "format", "version", "model_config"):
        old.pop(key)
    (target / "manifest.json").write_text(json.dumps(old))
    with caplog.at_level(logging.WARNING):
        ensure_export(tiny_model_dir, None, "float32", cache)
    assert "manifest_hash" in find_manifest(target)
    assert any("before rospr sealed its manifests" in r.getMessage() for r in caplog.records)
