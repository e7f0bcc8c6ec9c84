"""model.revision / rospr.retriever_revision: the hub commit reaches every from_pretrained, the export
cache key and the results file's provenance."""

from __future__ import annotations

import json

import transformers

from rospr_harness.config import checkpoint_revision, load_config
from rospr_harness.runner import run

SHA = "0123456789abcdef0123456789abcdef01234567"


def spy(monkeypatch, cls, calls: list) -> None:
    """Record the ``revision`` of every ``cls.from_pretrained`` call (and still load)."""
    original = cls.from_pretrained.__func__

    def from_pretrained(klass, name, *args, **kwargs):
        calls.append((cls.__name__, kwargs.get("revision", "<not passed>")))
        return original(klass, name, *args, **kwargs)

    monkeypatch.setattr(cls, "from_pretrained", classmethod(from_pretrained))


def test_checkpoint_revision_says_which_commit_applies():
    tree = {"tasks": ["builtin/nli"], "model": {"name_or_path": "org/t0", "revision": "m"}}
    config = load_config(None, [], tree=tree)
    assert checkpoint_revision(config, "org/t0") == "m"  # the backbone, and the retriever when it is the backbone
    assert checkpoint_revision(config, "org/other") is None
    config = load_config(None, ["rospr.retriever=org/small", "rospr.retriever_revision=r"], tree=tree)
    assert (checkpoint_revision(config, "org/small"), checkpoint_revision(config, "org/t0")) == ("r", "m")


def test_model_revision_reaches_every_load_and_the_provenance(run_config, tmp_path, monkeypatch):
    calls: list = []
    for cls in (transformers.AutoModelForSeq2SeqLM, transformers.AutoTokenizer):
        spy(monkeypatch, cls, calls)
    run(run_config(model={"revision": SHA}, backend="torch", method=["t0"],
                   tasks=[{"name": "builtin/sentiment", "limit": 2, "prompts": ["review_sentiment"]}]), tmp_path / "run")
    assert calls and all(rev == SHA for _, rev in calls), calls
    provenance = json.loads((tmp_path / "run" / "results.json").read_text(encoding="utf-8"))["provenance"]
    # the tiny model is a local folder: loading ignores a revision, so the provenance records none as used
    # (tests/unit/harness/test_provenance.py: a hub name's revision is recorded)
    assert provenance["model_revision"] is None and provenance["retriever_revision"] is None


def test_export_cache_key_follows_the_hub_commit_of_the_revision(monkeypatch):
    import huggingface_hub

    from rospr_export.identity import cache_key

    def no_file(*args, **kwargs):  # no hub here: config.json comes from transformers' resolution below
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_file)

    commits = {"v1": "1" * 40, "v2": "2" * 40, None: "9" * 40}
    asked = []

    def from_pretrained(name, revision=None, **kwargs):
        asked.append((name, revision))
        config = transformers.T5Config(d_model=8, num_layers=1, vocab_size=32)
        config._commit_hash = commits[revision]
        return config

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    keys = {rev: cache_key("org/t0", revision=rev) for rev in ("v1", "v2", None)}
    assert len(set(keys.values())) == 3 and cache_key("org/t0", revision="v1") == keys["v1"]
    assert {rev for _, rev in asked} == {"v1", "v2", None}
    asked.clear()
    assert cache_key(None, "org/small", retriever_revision="v1") != cache_key(None, "org/small", retriever_revision="v2")
    assert {rev for _, rev in asked} == {"v1", "v2"}


def test_onnxruntime_backend_loads_the_tokenizer_and_export_at_the_revision(run_config, tmp_path, monkeypatch):
    import rospr.tokenizer as tok_module
    from rospr_harness.backends import onnxruntime_backend as ort_backend

    seen: dict[str, list] = {"export": [], "tokenizer": []}
    real_ensure, real_tok = ort_backend.ensure_export, tok_module.load_tokenizer

    def ensure_export(*args, **kwargs):
        seen["export"].append(kwargs.get("revision"))
        return real_ensure(*args, **kwargs)

    def load_tokenizer(name, revision=None):
        seen["tokenizer"].append(revision)
        return real_tok(name, revision)

    monkeypatch.setattr(ort_backend, "ensure_export", ensure_export)
    monkeypatch.setattr(tok_module, "load_tokenizer", load_tokenizer)
    run(run_config(model={"revision": SHA}, backend="onnxruntime", method=["t0"],
                   tasks=[{"name": "builtin/sentiment", "limit": 2, "prompts": ["review_sentiment"]}],
                   onnxruntime={"cache_dir": str(tmp_path / "onnx"), "threads": 1}), tmp_path / "run")
    assert seen["export"] and set(seen["export"]) == {SHA}
    assert seen["tokenizer"] and set(seen["tokenizer"]) == {SHA}  # the run's, and the export's backbone
