"""Issue 10, item 3: every artifact is verified before use.

A byte flipped in a cached ``t0_scorer.onnx`` (with its mtime put back, or even with the remembered
digest forged) never reaches a score and is never stored in the unit cache: the export is redone
and the run's numbers are the untouched run's. An explicit export with a flipped byte is refused,
naming the file. The references are independent: ``hashlib`` over the file bytes, and the flipped
graph run directly through onnxruntime to show the byte would have changed the scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import rospr.artifacts as digests  # FileDigests, RACY_S, stat_key (re-exported by rospr_export.digests)
from rospr_export.manifest import ExportIntegrityError, verify_export
from rospr_export.validate import scorer_check_inputs
from rospr_harness.cli import app
from rospr_harness.config import load_config
from rospr_harness.results import read_results
from rospr_harness.runner import run

TASKS = [{"name": "builtin/animals", "limit": 10, "prompts": ["mentions_animal", "is_there_animal"]},
         {"name": "builtin/sentiment", "limit": 8}]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def flip_a_weight(graph: Path) -> None:
    """XOR the exponent byte of the first value of the LM head's weight (a [d_model, vocab] MatMul)."""
    import onnx

    model = onnx.load(str(graph))
    head = max((t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[1] > t.dims[0]),
               key=lambda t: len(t.raw_data))
    data = graph.read_bytes()
    at = data.find(head.raw_data[:256])
    assert at > 0 and data.count(head.raw_data[:256]) == 1
    with open(graph, "r+b") as fh:
        fh.seek(at + 3)  # little-endian float32: byte 3 holds the sign and the top of the exponent
        byte = fh.read(1)[0]
        fh.seek(at + 3)
        fh.write(bytes([byte ^ 0x40]))


def direct_scores(graph: Path) -> np.ndarray:
    """Scores of the contract's check inputs through an unchecked onnxruntime session of ``graph``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    d_model = json.loads((graph.parent / "manifest.json").read_text())["graphs"]["t0_scorer"]["d_model"]
    feeds = scorer_check_inputs((3, 9, 2, 3, 4), 200, d_model, seed=1)
    return sess.run(["scores"], feeds)[0]


def scorer_folder(cache: Path) -> Path:
    (folder,) = [d for d in cache.iterdir() if (d / "t0_scorer.onnx").is_file()]
    return folder


def graph_sha256(folder: Path) -> str:
    """The graph's content hash as the unit-cache key should carry it, from the file bytes."""
    return hashlib.sha256(json.dumps({"t0_scorer.onnx": sha(folder / "t0_scorer.onnx")}, sort_keys=True)
                          .encode()).hexdigest()


@pytest.fixture(scope="module")
def golden(tiny_model_dir, tmp_path_factory):
    """An untouched run (and its export cache, whose digests are then remembered)."""
    root = tmp_path_factory.mktemp("trust-artifacts")
    tree = {"model": {"name_or_path": str(tiny_model_dir)}, "tasks": TASKS, "scoring": {"batch_size": 4},
            "onnxruntime": {"cache_dir": str(root / "onnx"), "threads": 1}}
    config = root / "run.yaml"
    config.write_text(json.dumps(tree))
    res = run(load_config(config), root / "golden")
    folder = scorer_folder(root / "onnx")
    good = sha(folder / "t0_scorer.onnx")
    assert json.loads((folder / "manifest.json").read_text())["files"]["t0_scorer.onnx"] == good
    return config, root, res, good


@pytest.fixture
def cache_copy(golden, tmp_path, monkeypatch):
    """A private copy of the export cache with the scorer's digest remembered (stat key of now)."""
    _, root, _, _ = golden
    cache = tmp_path / "onnx"
    shutil.copytree(root / "onnx", cache)
    monkeypatch.setattr(digests, "RACY_S", -1.0)  # remember at once (the copy is fresh)
    folder = scorer_folder(cache)
    verify_export(folder)
    assert str((folder / "t0_scorer.onnx").resolve()) in json.loads((folder / ".digests.json").read_text())["files"]
    time.sleep(0.05)  # past the ctime tick of the copy, so the flip below gets a ctime of its own
    return cache, folder


def same_as_golden(out: Path, golden_res) -> None:
    res = read_results(out / "results.json")
    assert [(u.task, u.prompt, u.n, u.accuracy, u.sha256) for u in res.units] == \
        [(u.task, u.prompt, u.n, u.accuracy, u.sha256) for u in golden_res.units]


@pytest.mark.parametrize("how", ["in_place", "mtime_restored", "digest_memo_forged"])
def test_a_flipped_byte_in_the_cached_scorer_never_reaches_a_score(golden, cache_copy, tmp_path, how):
    config, root, golden_res, good = golden
    cache, folder = cache_copy
    graph = folder / "t0_scorer.onnx"
    before = os.stat(graph)
    good_scores = direct_scores(graph)
    flip_a_weight(graph)
    if how != "in_place":
        os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(graph).st_size == before.st_size and os.stat(graph).st_mtime_ns == before.st_mtime_ns
    if how == "digest_memo_forged":
        # as if the change happened beneath the file system: the remembered digest fits the new stat key
        memo = json.loads((folder / ".digests.json").read_text())
        memo["files"][str(graph.resolve())] = {"stat": digests.stat_key(os.stat(graph)), "sha256": good}
        (folder / ".digests.json").write_text(json.dumps(memo))
    assert sha(graph) != good
    assert not np.allclose(direct_scores(graph), good_scores, atol=1e-3)  # it would change the scores

    units = tmp_path / "units"
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(tmp_path / "run"), "--set",
                                 f"onnxruntime.cache_dir={cache}", "--set", "cache.enabled=true", "--set",
                                 f"cache.dir={units}"])
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    # caught by the stat-keyed check, or (forged memo) by the full hash of the bytes the session loads
    assert ("checking the whole export in full" if how == "digest_memo_forged" else "exporting again") in said, said
    same_as_golden(tmp_path / "run", golden_res)
    assert sha(graph) == good  # exported again, into the same content address
    metas = [json.loads(m.read_text()) for m in sorted(units.glob("*/*/meta.json"))]
    assert len(metas) == len(golden_res.units)
    for meta in metas:  # only units of the good graph, keyed by it
        assert meta["parts"]["model"]["identity"]["onnx_graph_sha256"] == graph_sha256(folder)


def test_the_stat_keyed_check_alone_finds_a_flip_with_the_mtime_restored(cache_copy):
    _, folder = cache_copy
    graph = folder / "t0_scorer.onnx"
    before = os.stat(graph)
    flip_a_weight(graph)
    os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ExportIntegrityError, match=r"t0_scorer\.onnx: sha256 .* differs from .*manifest\.json"):
        verify_export(folder)


def test_file_digests_against_hashlib(tmp_path, monkeypatch):
    f = tmp_path / "w.bin"
    f.write_bytes(bytes(range(256)) * 64)
    memo = tmp_path / "memo.json"
    fresh = digests.FileDigests(memo)
    assert fresh.sha256(f) == sha(f)
    assert fresh.entries == {}  # written just now: too recent to remember (ctime granularity)
    monkeypatch.setattr(digests, "RACY_S", -1.0)
    d = digests.FileDigests(memo)
    assert d.sha256(f) == sha(f)
    d.save()
    assert json.loads(memo.read_text())["files"][str(f.resolve())]["sha256"] == sha(f)
    time.sleep(0.05)
    st = os.stat(f)
    with open(f, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert digests.FileDigests(memo).sha256(f) == sha(f) != json.loads(memo.read_text())["files"][str(f.resolve())]["sha256"]


def test_an_export_without_recorded_digests_is_exported_again(golden, tmp_path):
    from rospr_harness.backends import create_backend

    config, root, _, good = golden
    cache = tmp_path / "onnx"
    shutil.copytree(root / "onnx", cache)
    folder = scorer_folder(cache)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    backend = create_backend(load_config(config, [f"onnxruntime.cache_dir={cache}"]))
    assert json.loads((folder / "manifest.json").read_text())["files"]["t0_scorer.onnx"] == sha(folder / "t0_scorer.onnx")
    assert backend.identity["onnx_graph_sha256"] == graph_sha256(folder)


def test_an_explicit_export_with_a_flipped_byte_is_refused_by_name(golden, tmp_path):
    from rospr_export.repository import write_repository

    _, root, _, _ = golden
    export_dir = tmp_path / "export"
    shutil.copytree(scorer_folder(root / "onnx"), export_dir)
    r = CliRunner().invoke(app, ["verify", str(export_dir), str(root / "onnx")])
    assert r.exit_code == 0, r.output
    flip_a_weight(export_dir / "t0_scorer.onnx")
    with pytest.raises(ExportIntegrityError, match=str(export_dir / "t0_scorer.onnx")):
        write_repository(export_dir, tmp_path / "repo")
    assert not (tmp_path / "repo" / "triton").exists()
    r = CliRunner().invoke(app, ["verify", str(export_dir)])
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and "Traceback" not in said and "failed:" in said, said
    assert "t0_scorer.onnx: sha256" in said and "differs from" in said, said
