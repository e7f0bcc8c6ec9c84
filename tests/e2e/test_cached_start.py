"""Fast start on cached artifacts: whole runs in fresh interpreters (moved from tests/test_fast_start.py,
names and assertions kept).

- A run whose export is cached, in a fresh interpreter, ends with no torch, transformers, optimum or
  ray in ``sys.modules`` (it needs onnxruntime and a tokenizer only).
- A run whose weight digests are remembered opens the weight file fewer times than one without the
  memo: the weights are not read again to key the export cache (an audit hook counts the opens).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rospr_export.digests import RACY_S
from rospr_harness.config import load_config
from rospr_harness.runner import run

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "optimum", "ray")

PROBE = r"""
import json, sys
weights = sys.argv[3]
opens = []
def hook(event, args):
    if event == "open" and isinstance(args[0], str) and args[0].endswith(weights):
        opens.append(args[0])
sys.addaudithook(hook)
from rospr_harness.config import load_config
from rospr_harness.runner import run
run(load_config(None, [], tree=json.loads(sys.argv[1])), sys.argv[2])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "ray"))
print(json.dumps({"heavy": heavy, "weight_opens": len(opens)}))
"""


def probe(tree: dict, out: Path, weights: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(tree), str(out), weights], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cached_run_imports_no_torch_and_reads_no_weights(tiny_model_dir, tmp_path, monkeypatch):
    memo = tmp_path / "digests.json"
    monkeypatch.setenv("ROSPR_DIGEST_MEMO", str(memo))
    tree = {"model": {"name_or_path": str(tiny_model_dir)}, "backend": "onnxruntime", "method": ["t0"],
            "tasks": [{"name": "builtin/sentiment", "limit": 3, "prompts": ["review_sentiment"]}],
            "onnxruntime": {"cache_dir": str(tmp_path / "onnx")}, "cache": {"enabled": False}}
    weights = tiny_model_dir / "model.safetensors"
    # a digest is remembered only for a file settled for RACY_S (rospr_export.digests): wait for the fixture's
    settle = RACY_S + 0.2 - (time.time() - os.stat(weights).st_ctime)
    if settle > 0:
        time.sleep(settle)
    run(load_config(None, [], tree=tree), tmp_path / "first")  # exports; remembers the weights' digest
    assert str(weights.resolve()) in json.loads(memo.read_text())["files"]
    env = {**os.environ, "ROSPR_DIGEST_MEMO": str(memo)}

    cached = probe(tree, tmp_path / "cached", weights.name, env)
    assert cached["heavy"] == [], cached["heavy"]

    memo.unlink()  # the same run without the memo hashes the weights again
    cold = probe(tree, tmp_path / "cold", weights.name, env)
    assert cold["weight_opens"] > cached["weight_opens"]
    assert cold["heavy"] == []


def test_cached_rospr_var_run_imports_neither_torch_nor_transformers(tiny_model_dir, tmp_path):
    """A rospr+var run on a cached export with its bank and library on disk: the identities of the
    model, the retriever and the bank come from files (config.json as JSON, remembered weight digests)."""
    tree = {"model": {"name_or_path": str(tiny_model_dir)}, "backend": "onnxruntime", "method": ["rospr+var"],
            "tasks": [{"name": "builtin/sentiment", "limit": 4, "prompts": ["review_sentiment"]}],
            "scoring": {"batch_size": 4}, "onnxruntime": {"cache_dir": str(tmp_path / "onnx")},
            "cache": {"enabled": False},
            "rospr": {"sources": ["builtin/sentiment", "builtin/nli"], "prompt_bank": str(tmp_path / "bank"),
                      "library": str(tmp_path / "library"),
                      "tune": {"steps": 1, "prompt_length": 2, "batch_size": 4, "source_rows": 8, "parallel": "off"},
                      "library_n": 4, "queries": 2, "top_n": 2, "var_candidates": 2}}
    run(load_config(None, [], tree=tree), tmp_path / "first")  # exports, tunes the bank, builds the library
    stamps = {p: p.stat().st_mtime_ns for p in [*(tmp_path / "bank").rglob("*"), *(tmp_path / "library").rglob("*")]}
    cached = probe(tree, tmp_path / "cached", "model.safetensors", dict(os.environ))
    assert cached["heavy"] == [], cached["heavy"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # the bank and library were reused, not rebuilt
    units = read_results_units(tmp_path / "cached")
    assert [u.method for u in units] == ["rospr+var"] and units[0].retrieval.var_rule


def read_results_units(run_dir: Path):
    from rospr_harness.schema import read_results

    return read_results(run_dir / "results.json").units
