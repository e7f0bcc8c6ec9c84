"""A real Triton server (the same ``TritonServer`` as ``rospr serve``) against the PyTorch reference."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rospr_export.repository import write_repository
from rospr_harness.backends import BackendUnavailable, create_backend
from rospr_harness.backends.onnxruntime_backend import ensure_export
from rospr_harness.backends.torch_backend import TorchScorer
from rospr_harness.backends.triton_backend import TritonEmbedder, TritonScorer
from rospr_harness.config import load_config
from rospr_harness.serve import ServerError, TritonServer, _process_group_members, free_port
from rospr.artifacts import seal
from rospr.retriever import TorchEmbedder, embed_texts, load_encoder
from rospr.scoring import Convention, encode_examples, score_encoded

from unit.harness.backends.test_onnxruntime_backend import EXAMPLES, assert_parity, prompt_cases  # noqa: E402
from helpers import REPO

pytestmark = pytest.mark.slow


def build_repo(model_dir, tmp_path_factory, name: str, prompt_dtype: str | None = None) -> Path:
    cache = tmp_path_factory.getbasetemp() / "onnx-cache"  # shared with test_onnxruntime_backend
    scorer = ensure_export(model_dir, None, "float32", cache, prompt_dtype=prompt_dtype)
    retriever = ensure_export(None, model_dir, "float32", cache)
    out = tmp_path_factory.mktemp(name)
    manifest = json.loads((scorer / "manifest.json").read_text())
    other = json.loads((retriever / "manifest.json").read_text())
    for folder, listed in ((retriever, other), (scorer, manifest)):  # one export folder with both graphs
        for file_name in listed.get("files", {}):  # the graphs' files only (not a folder's digest memo)
            os.link(folder / file_name, out / file_name)
    manifest["graphs"].update(other["graphs"])
    manifest["files"] = {**other.get("files", {}), **manifest.get("files", {})}  # each file with its sha256
    (out / "manifest.json").write_text(json.dumps(seal(manifest)))  # one export of both graphs: sealed anew
    return write_repository(out, out)


@pytest.fixture(scope="module")
def repo(tiny_model_dir, tmp_path_factory):
    return build_repo(tiny_model_dir, tmp_path_factory, "repo")


@pytest.fixture(scope="module")
def server(repo, stop_soon):
    s = TritonServer(repo).start()
    yield s
    stop_soon(s)


@pytest.fixture(scope="module")
def reference(tiny_backbone):
    model, tokenizer, _ = tiny_backbone
    return TorchScorer(model), encode_examples(tokenizer, EXAMPLES, Convention())


SETTINGS = {
    "grpc": dict(protocol="grpc"),
    "http": dict(protocol="http"),
    "grpc+shared_memory": dict(protocol="grpc", shared_memory=True),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("case", ["no_prompt", "soft_prompt", "mixed_in_batch"])
def test_parity_with_torch(server, reference, setting, case):
    torch_scorer, encoded = reference
    kw = SETTINGS[setting]
    url = server.grpc_url if kw["protocol"] == "grpc" else server.http_url
    # two rows per request: a batch of 7 becomes 4 requests in flight, batched by the server
    scorer = TritonScorer(url, concurrency=4, max_request_batch=2, **kw)
    try:
        prompt = prompt_cases(torch_scorer.prompt_dim)[case]
        ref = score_encoded(torch_scorer, encoded, prompt, batch_size=7)
        for bs in (1, 7):
            assert_parity(score_encoded(scorer, encoded, prompt, batch_size=bs), ref, encoded)
        assert scorer.client.stats["retries"] == 0
    finally:
        scorer.close()


def test_retriever_matches_torch(server, tiny_model_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    texts = [e.input_text for e in EXAMPLES]
    ref = embed_texts(TorchEmbedder(encoder), tokenizer, texts, batch_size=4)
    emb = TritonEmbedder(server.grpc_url)
    try:
        got = embed_texts(emb, tokenizer, texts, batch_size=3)
    finally:
        emb.close()
    assert np.max(np.abs(got - ref)) <= 1e-5


def _run_tree(model_dir, **extra) -> dict:
    tree = {"model": {"name_or_path": str(model_dir)},
            "tasks": [{"name": "builtin/sentiment", "limit": 12}, {"name": "builtin/topic", "limit": 12}],
            "scoring": {"batch_size": 5}}
    tree.update(extra)
    return tree


def _records(run_dir: Path) -> dict:
    return {p.name: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted((run_dir / "records").glob("*.jsonl"))}


def test_run_same_numbers_as_torch_and_onnxruntime(server, tiny_model_dir, tmp_path, tmp_path_factory):
    from rospr_harness.runner import run

    cache = str(tmp_path_factory.getbasetemp() / "onnx-cache")
    runs = {}
    for name, extra in {
        "torch": {"backend": "torch"},
        "onnxruntime": {"backend": "onnxruntime", "onnxruntime": {"cache_dir": cache}},
        "triton": {"backend": "triton", "triton": {"url": server.grpc_url, "concurrency": 4}},
    }.items():
        res = run(load_config(None, tree=_run_tree(tiny_model_dir, **extra)), tmp_path / name)
        assert res.provenance.backend == name
        runs[name] = _records(tmp_path / name)
    assert runs["torch"].keys() == runs["triton"].keys() and len(runs["torch"]) >= 4
    for name in ("onnxruntime", "triton"):
        for unit, recs in runs["torch"].items():
            for a, b in zip(recs, runs[name][unit]):
                assert a["prediction"] == b["prediction"]
                assert np.max(np.abs(np.array(a["scores"]) - np.array(b["scores"]))) <= 1e-4


def test_wire_dtype_must_match_the_served_model(server):
    with pytest.raises(ValueError, match="wire_dtype=float16"):
        TritonScorer(server.grpc_url, wire_dtype="float16")


def test_float16_on_the_wire(tiny_model_dir, tmp_path_factory, reference, stop_soon):
    torch_scorer, encoded = reference
    repo16 = build_repo(tiny_model_dir, tmp_path_factory, "repo16", prompt_dtype="float16")
    s = TritonServer(repo16).start()
    try:
        scorer = TritonScorer(s.grpc_url, wire_dtype="float16")
        try:
            prompt = prompt_cases(torch_scorer.prompt_dim)["soft_prompt"]
            ref = score_encoded(torch_scorer, encoded, prompt.astype(np.float16).astype(np.float32), batch_size=4)
            assert_parity(score_encoded(scorer, encoded, prompt, batch_size=4), ref, encoded)
        finally:
            scorer.close()
    finally:
        stop_soon(s)


def test_server_down_before_the_run(tiny_model_dir):
    port = free_port()
    cfg = load_config(None, tree=_run_tree(tiny_model_dir, backend="triton",
                                           triton={"url": f"127.0.0.1:{port}", "retries": 0}))
    t = time.monotonic()
    with pytest.raises(BackendUnavailable, match="rospr serve"):
        create_backend(cfg)
    assert time.monotonic() - t < 30


def test_timeout_is_retried_then_reported(server, reference):
    torch_scorer, encoded = reference
    from rospr.scoring import collate

    batch = collate(encoded, [None] * len(encoded), torch_scorer.prompt_dim)
    scorer = TritonScorer(server.grpc_url, timeout_s=1e-4, retries=2, backoff_s=0.01)
    try:
        with pytest.raises(BackendUnavailable, match=r"timed out \(triton.timeout_s=0.0001\) after 3 attempts"):
            scorer.score(batch)
        assert scorer.client.stats["timeouts"] == 3 and scorer.client.stats["retries"] == 2
    finally:
        scorer.close()


def _metrics(url: str) -> dict[str, float]:
    """The samples of a Prometheus text page (``name{labels}`` -> value), comments left out."""
    with urllib.request.urlopen(f"http://{url}", timeout=10) as r:
        text = r.read().decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def test_metrics_endpoint_counts_what_was_served(server, reference):
    """Triton's metrics are on by default (perf_analyzer --collect-metrics, model_analyzer and
    Prometheus read them), on loopback: the scorer's success counter grows by the requests sent."""
    torch_scorer, encoded = reference
    assert server.metrics_url == f"127.0.0.1:{server.metrics_port}/metrics"
    key = 'nv_inference_request_success{model="t0_scorer",version="1"}'
    before = _metrics(server.metrics_url).get(key, 0.0)
    scorer = TritonScorer(server.grpc_url, concurrency=1, max_request_batch=2)
    try:
        score_encoded(scorer, encoded, None, batch_size=len(encoded))  # 7 rows: ceil(7 / 2) = 4 requests
    finally:
        scorer.close()
    after = _metrics(server.metrics_url)
    assert after[key] - before == 4
    assert 'nv_inference_count{model="t0_scorer",version="1"}' in after
    assert any(k.startswith("nv_cpu_utilization") for k in after)  # CPU metrics on


def test_server_stop_leaves_nothing(repo):
    s = TritonServer(repo).start()
    pgid, workdir = s.process.pid, s.workdir
    assert len(s.pids()) >= 3  # the server and one stub per model
    s.stop()
    s.stop()  # twice is fine
    assert _process_group_members(pgid) == [] and not workdir.exists()


def test_broken_repository_says_why(repo, tmp_path):
    import shutil

    broken = tmp_path / "twin"
    shutil.copytree(repo / "twin", broken)
    (broken / "t0_scorer" / "1" / "model.onnx").unlink()
    s = TritonServer(broken, startup_timeout_s=60)
    with pytest.raises(ServerError, match="t0_scorer"):
        s.start()
    assert s.process is None
    with pytest.raises(FileNotFoundError, match="not a model repository"):
        TritonServer(tmp_path / "nothing-here")


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
        except OSError:
            continue
    return kids
