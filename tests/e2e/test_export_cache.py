"""A whole run over a damaged export cache: a byte flipped in the cached ``t0_scorer.onnx`` (with its
mtime put back, or even with the remembered digest forged) never reaches a score and is never stored
in the unit cache. The export is redone and the run's numbers are the untouched run's. The references
are independent: ``hashlib`` over the file bytes, and the flipped graph run directly through
onnxruntime to show the byte would have changed the scores.
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
from helpers import finished_run, flip_a_weight
from typer.testing import CliRunner

import rospr.artifacts as digests  # FileDigests, RACY_S, stat_key
from rospr_export.manifest import verify_export
from rospr_export.validate import scorer_check_inputs
from rospr_harness.cli import app
from rospr_harness.schema import read_results

TASKS = [{"name": "builtin/animals", "limit": 10, "prompts": ["mentions_animal", "is_there_animal"]},
         {"name": "builtin/sentiment", "limit": 8}]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    return hashlib.sha256(json.dumps({"t0_scorer.onnx": sha(folder / "t0_scorer.onnx")}, separators=(",", ":"))
                          .encode()).hexdigest()


@pytest.fixture(scope="module")
def golden(run_config, tmp_path_factory):
    """An untouched run (and its export cache, whose digests are then remembered)."""
    root = tmp_path_factory.mktemp("export-cache")
    config, res = finished_run(run_config, root, TASKS)
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
