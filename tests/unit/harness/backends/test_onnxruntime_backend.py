"""The onnxruntime backend and the Triton twin's model.py, against the PyTorch reference."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, scoring_examples

from rospr_harness.backends import create_backend
from rospr_harness.backends.torch_backend import TorchScorer
from rospr_harness.config import load_config
from rospr.data import Example
from rospr.scoring import Convention, collate, encode_examples, rank_classify, score_encoded


EXAMPLES = [*scoring_examples(), Example("t", "p", 6, "red", ("a",))]  # and a one-choice input


def prompt_cases(d_model: int) -> dict:
    rng = np.random.default_rng(0)
    soft = (rng.normal(size=(5, d_model)) * 0.5).astype(np.float32)
    mixed = [None if i % 3 == 0 else (rng.normal(size=(2 + i % 4, d_model)) * 0.5).astype(np.float32)
             for i in range(len(EXAMPLES))]
    return {"no_prompt": None, "soft_prompt": soft, "mixed_in_batch": mixed}


def assert_parity(got: list[np.ndarray], ref: list[np.ndarray], encoded, tol: float = 1e-4) -> float:
    """Identical predictions, every score within ``tol``; returns the max abs difference."""
    worst = 0.0
    for g, r, e in zip(got, ref, encoded):
        assert g.shape == r.shape
        worst = max(worst, float(np.max(np.abs(g - r))))
        assert rank_classify(g, e, Convention()) == rank_classify(r, e, Convention())
    assert worst <= tol, worst
    return worst


@pytest.fixture(scope="module")
def ort_backend(tiny_model_dir, tmp_path_factory):
    cfg = load_config(None, tree={
        "model": {"name_or_path": str(tiny_model_dir)},
        "tasks": ["builtin/sentiment"],
        # one export per test session, shared with test_triton
        "onnxruntime": {"cache_dir": str(tmp_path_factory.getbasetemp() / "onnx-cache"), "threads": 2},
    })
    assert cfg.backend == "onnxruntime"  # the default
    return create_backend(cfg), cfg


@pytest.fixture(scope="module")
def reference(tiny_backbone):
    model, tokenizer, _ = tiny_backbone
    return TorchScorer(model), encode_examples(tokenizer, EXAMPLES, Convention())


@pytest.mark.parametrize("case", ["no_prompt", "soft_prompt", "mixed_in_batch"])
def test_parity_with_torch(ort_backend, reference, case):
    backend, _ = ort_backend
    torch_scorer, encoded = reference
    prompt = prompt_cases(torch_scorer.prompt_dim)[case]
    ref = score_encoded(torch_scorer, encoded, prompt, batch_size=4)
    for bs in (1, 3, 16):
        assert_parity(score_encoded(backend.scorer, encoded, prompt, batch_size=bs), ref, encoded)


def test_mixed_prompt_lengths_do_not_depend_on_the_batch(ort_backend, reference):
    """Prompts of different lengths in one batch: the same scores as each row alone, in both backends."""
    backend, _ = ort_backend
    torch_scorer, encoded = reference
    prompts = prompt_cases(torch_scorer.prompt_dim)["mixed_in_batch"]
    alone = score_encoded(torch_scorer, encoded, prompts, batch_size=1)
    for scorer in (torch_scorer, backend.scorer):
        assert_parity(score_encoded(scorer, encoded, prompts, batch_size=len(encoded)), alone, encoded)


def test_empty_prompt_axis_is_padded(ort_backend, reference):
    """P=0 (no prompt in the whole batch) is sent as P=1 with a zero mask: the contract's "no prompt"."""
    backend, _ = ort_backend
    torch_scorer, encoded = reference
    batch = collate(encoded, [None] * len(encoded), torch_scorer.prompt_dim)
    assert batch.prompt_embeds.shape[1] == 0
    valid = batch.choice_mask.any(-1)
    np.testing.assert_allclose(backend.scorer.score(batch)[valid], torch_scorer.score(batch)[valid], atol=1e-4, rtol=0)


def test_identity_and_cache_reuse(ort_backend, monkeypatch):
    backend, cfg = ort_backend
    assert backend.name == "onnxruntime" and backend.identity["d_model"] == 128
    assert backend.identity["onnx_provider"] == "CPUExecutionProvider"
    import rospr_export.export as ex

    def no_export(*a, **k):
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(ex, "export_models", no_export)
    again = create_backend(cfg)
    assert again.identity["onnx_cache_key"] == backend.identity["onnx_cache_key"]


def test_session_options_refuse_unknown(ort_backend, tmp_path):
    from rospr_harness.backends.onnxruntime_backend import make_session

    with pytest.raises(ValueError, match="graph_optimization"):
        make_session(tmp_path / "x.onnx", graph_optimization="max")
    with pytest.raises(ValueError, match="not available"):
        make_session(tmp_path / "x.onnx", providers=["NoSuchExecutionProvider"])


# -- the Triton twin's model.py, run in process with a stand-in for the stub's module ----------------


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class _Response:
    def __init__(self, output_tensors, error=None):
        self.output_tensors, self.error = output_tensors, error


def _fake_pb_utils():
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor = _Tensor
    m.InferenceResponse = _Response
    m.TritonError = lambda msg: msg
    m.get_input_tensor_by_name = lambda request, name: request[name]
    return m


@pytest.fixture(scope="module")
def twin_model(ort_backend, tmp_path_factory):
    from rospr_export.repository import write_repository
    from rospr_harness.cache import cache_root

    _, cfg = ort_backend
    folder = cache_root("onnx", cfg.onnxruntime.cache_dir) / cfg_key(cfg)
    build = write_repository(folder, tmp_path_factory.mktemp("repo"))
    model_dir = build / "twin" / "t0_scorer"
    sys.modules["triton_python_backend_utils"] = _fake_pb_utils()
    try:
        spec = importlib.util.spec_from_file_location("twin_model", model_dir / "1" / "model.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("triton_python_backend_utils", None)
    config = _pbtxt_to_json(model_dir / "config.pbtxt")
    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(model_dir), "model_version": "1",
                      "model_name": "t0_scorer"})
    return model


def cfg_key(cfg) -> str:
    from rospr_export.identity import cache_key

    return cache_key(cfg.model.name_or_path, None, cfg.model.dtype)


def _pbtxt_to_json(path: Path) -> dict:
    """The parts of a config.pbtxt that model.py reads, as Triton hands them over (JSON)."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    msg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    return json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True))


def test_twin_runs_several_requests_of_different_sizes_in_one_execute(twin_model, reference, monkeypatch):
    torch_scorer, encoded = reference
    prompts = prompt_cases(torch_scorer.prompt_dim)["mixed_in_batch"]
    groups = [[0], [1, 2, 3], [4, 5], [6]]  # batch sizes 1, 3, 2, 1 with different S, P, C, T each
    requests, refs = [], []
    for idx in groups:
        b = collate([encoded[i] for i in idx], [prompts[i] for i in idx], torch_scorer.prompt_dim)
        refs.append((torch_scorer.score(b), b.choice_mask.any(-1)))
        requests.append({n: _Tensor(n, getattr(b, n)) for n in
                         ("input_ids", "attention_mask", "prompt_embeds", "prompt_mask", "choice_ids", "choice_mask")})
    assert len({r["input_ids"].array.shape for r in requests}) > 1
    calls = []
    run = twin_model.session.run
    monkeypatch.setattr(twin_model.session, "run", lambda *a, **k: calls.append(a) or run(*a, **k), raising=False)
    responses = twin_model.execute(requests)
    assert len(calls) == 1  # one session run for all requests
    assert len(responses) == len(requests)
    for resp, (ref, valid) in zip(responses, refs):
        assert resp.error is None
        scores = resp.output_tensors[0].as_numpy()
        assert scores.shape == ref.shape  # each request gets its own batch and choice count back
        np.testing.assert_allclose(scores[valid], ref[valid], atol=1e-4, rtol=0)


def test_twin_reports_errors_per_request(twin_model):
    bad = {"input_ids": _Tensor("input_ids", np.zeros((1, 2), np.int64))}
    responses = twin_model.execute([bad, bad])
    assert len(responses) == 2 and all(r.error for r in responses)


def test_export_cache_is_a_content_store(tiny_model_dir, tmp_path, monkeypatch):
    """A killed exporter's stage is swept; a concurrent caller's good export, published first, is kept
    (this caller's is discarded); a damaged one is replaced."""
    import os

    import rospr_export.export as export_module
    from rospr_harness.backends import onnxruntime_backend as ob
    from rospr_export.identity import cache_key
    from rospr_export.manifest import verify_export

    cache = tmp_path / "onnx"
    key = cache_key(None, tiny_model_dir, "float32")
    dead = cache / f".stage-{key}-dead"  # a stage whose writer died (its lock file gone with it)
    dead.mkdir(parents=True)
    folder = ob.ensure_export(None, tiny_model_dir, "float32", cache)
    assert sorted(os.listdir(cache)) == [key] and folder == cache / key
    real_export = export_module.export_models

    def racing_export(model, out, **kwargs):  # another caller publishes the same export meanwhile
        real_export(model, out, **kwargs)
        os.rename(out, out.parent / "other")
        real_export(model, out, **kwargs)
        os.rename(out.parent / "other", folder)

    monkeypatch.setattr(export_module, "export_models", racing_export)
    ob.export_store(cache).discard(key)
    assert ob.ensure_export(None, tiny_model_dir, "float32", cache) == folder
    assert sorted(os.listdir(cache)) == [key]
    monkeypatch.setattr(export_module, "export_models", real_export)
    (folder / "retriever.onnx").write_bytes(b"damaged")
    assert ob.ensure_export(None, tiny_model_dir, "float32", cache) == folder
    assert (folder / "retriever.onnx").read_bytes() != b"damaged" and sorted(os.listdir(cache)) == [key]
    assert verify_export(folder, full=True)


def test_an_export_without_recorded_digests_is_exported_again(ort_backend, tmp_path):
    """A cached export whose manifest lists no file digests is not used as it is: the backend exports
    again, and its identity carries the content hash of the graph it then reads."""
    import hashlib
    import shutil

    backend, cfg = ort_backend
    key = backend.identity["onnx_cache_key"]
    cache = tmp_path / "onnx"
    folder = cache / key
    shutil.copytree(Path(cfg.onnxruntime.cache_dir) / key, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    again = create_backend(load_config(None, tree={"model": {"name_or_path": cfg.model.name_or_path},
                                                   "tasks": ["builtin/sentiment"],
                                                   "onnxruntime": {"cache_dir": str(cache), "threads": 1}}))
    graph_sha = hashlib.sha256((folder / "t0_scorer.onnx").read_bytes()).hexdigest()
    assert json.loads((folder / "manifest.json").read_text())["files"]["t0_scorer.onnx"] == graph_sha
    assert again.identity["onnx_graph_sha256"] == hashlib.sha256(
        json.dumps({"t0_scorer.onnx": graph_sha}, separators=(",", ":")).encode()).hexdigest()


# -- onnxruntime's optimised graph, saved beside the export ------------------------------------------


@pytest.fixture
def own_export(ort_backend, tmp_path):
    """A copy of the session's export (its manifest and graph), so files beside it can be changed."""
    import shutil

    from rospr_export.manifest import find_manifest

    backend, cfg = ort_backend
    src = Path(cfg.onnxruntime.cache_dir) / backend.identity["onnx_cache_key"]
    folder = tmp_path / src.name
    folder.mkdir()
    for name in ("manifest.json", "t0_scorer.onnx"):
        shutil.copy2(src / name, folder / name)
    return folder, find_manifest(folder)


def optimised(folder: Path) -> list[Path]:
    """The optimised graphs of the export ``folder``: entries of their own store beside it."""
    return sorted((folder.parent / "ort-optimized").glob("*/model.onnx"))


def test_the_optimised_graph_is_saved_once_and_scores_as_the_graph_does(own_export, reference):
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer, make_session, open_graph

    folder, manifest = own_export
    torch_scorer, encoded = reference
    prompt = prompt_cases(torch_scorer.prompt_dim)["mixed_in_batch"]
    graph = (folder / "t0_scorer.onnx").read_bytes()
    online = score_encoded(OnnxScorer(make_session(graph)), encoded, prompt, batch_size=3)
    plain = score_encoded(OnnxScorer(make_session(graph, graph_optimization="disabled")), encoded, prompt, batch_size=3)

    first = open_graph(folder, manifest, "t0_scorer")  # optimises, and saves the result
    [saved] = optimised(folder)
    stat = saved.stat()
    again = open_graph(folder, manifest, "t0_scorer")  # opens the saved graph, optimisation off
    assert saved.stat().st_mtime_ns == stat.st_mtime_ns and optimised(folder) == [saved]  # not written again
    for session in (first, again):
        got = score_encoded(OnnxScorer(session), encoded, prompt, batch_size=3)
        for g, o in zip(got, online):
            np.testing.assert_array_equal(g, o)  # the same kernels on the same graph: the same numbers
        assert_parity(got, plain, encoded)  # and the unoptimised graph's within the export tolerance (1e-4)


@pytest.mark.parametrize("damage", ["tail_zeroed", "truncated"])
def test_a_changed_optimised_graph_is_refused_and_rebuilt(own_export, reference, caplog, damage):
    """Damaged after it was saved: bytes onnxruntime still opens (the last 16 zeroed), or bytes it
    cannot parse (cut in half: its error is not the run's, the copy is made again)."""
    from rospr.store import StoreError
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer, open_graph, optimized_store

    folder, manifest = own_export
    torch_scorer, encoded = reference
    ref = score_encoded(OnnxScorer(open_graph(folder, manifest, "t0_scorer")), encoded, None, batch_size=4)
    [saved] = optimised(folder)
    store = optimized_store(folder)
    good = saved.read_bytes()
    saved.write_bytes(good[:-16] + bytes(16) if damage == "tail_zeroed" else good[: len(good) // 2])
    with pytest.raises(StoreError, match="changed after it was written"):
        store.verify_sealed(saved.parent)
    with caplog.at_level("WARNING"):
        got = score_encoded(OnnxScorer(open_graph(folder, manifest, "t0_scorer")), encoded, None, batch_size=4)
    assert "optimising the graph again" in caplog.text
    assert saved.read_bytes() == good  # rebuilt: the same optimisation of the same graph
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    store.verify_sealed(saved.parent)  # intact again


def test_an_optimised_graph_written_during_its_open_is_refused(own_export, monkeypatch, caplog):
    """onnxruntime reads the copy through a descriptor on the file being hashed; a write to that file
    while the session opens (its bytes put back, so the hash passes) still refuses the session opened
    from it: its mtime and ctime moved."""
    import os

    from rospr_harness.backends import onnxruntime_backend as ob

    folder, manifest = own_export
    ob.open_graph(folder, manifest, "t0_scorer")
    [saved] = optimised(folder)
    held = os.open(saved, os.O_RDONLY)  # the file's inode stays in use: its number is not given again
    inode = os.fstat(held).st_ino
    real, seen = ob.make_session, []

    def make_session(model, **kw):
        if str(model).startswith("/proc/self/fd/"):
            seen.append(model)
            with open(model, "r+b") as fh:  # the same inode: rewrite one byte with itself
                first = fh.read(1)
                fh.seek(0)
                fh.write(first)
        return real(model, **kw)

    monkeypatch.setattr(ob, "make_session", make_session)
    try:
        with caplog.at_level("WARNING"):
            ob.open_graph(folder, manifest, "t0_scorer")
    finally:
        os.close(held)
    assert seen and "changed after it was saved" in caplog.text
    assert saved.stat().st_ino != inode  # made again, and renamed over the one written to


def test_an_optimised_graph_of_another_graph_is_never_opened(own_export, reference, monkeypatch):
    """An entry whose sealed record names another graph's sha256 under this graph's name (resealed by
    hand) is never opened: it is discarded and made again."""
    import os

    from rospr.artifacts import write_manifest
    from rospr_harness.backends import onnxruntime_backend as ob

    folder, manifest = own_export
    ob.open_graph(folder, manifest, "t0_scorer")
    [saved] = optimised(folder)
    store = ob.optimized_store(folder)
    record = store.read_manifest(saved.parent)
    record.pop("manifest_hash")
    write_manifest(saved.parent / "manifest.json", {**record, "graph_sha256": "0" * 64})
    store.verify_sealed(saved.parent)  # sealed and whole: only the record's graph is another's
    real, opened = ob.make_session, []

    def make_session(model, **kw):
        opened.append(model)
        return real(model, **kw)

    monkeypatch.setattr(ob, "make_session", make_session)
    held = os.open(saved, os.O_RDONLY)  # the planted file's inode stays in use: its number is not given again
    try:
        planted = os.fstat(held).st_ino
        ob.open_graph(folder, manifest, "t0_scorer")  # not this graph's: optimised again and published in its place
    finally:
        os.close(held)
    assert not any(str(m).startswith("/proc/self/fd/") for m in opened)  # the planted copy was never opened
    assert saved.stat().st_ino != planted
    assert store.read_manifest(saved.parent)["graph_sha256"] == manifest["files"]["t0_scorer.onnx"]


def test_a_graph_whose_optimised_copy_cannot_be_written_still_opens(own_export, reference, caplog):
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer, open_graph, optimized_store

    folder, manifest = own_export
    torch_scorer, encoded = reference
    optimized_store(folder).root.write_text("")  # a file where the store's folder would be
    with caplog.at_level("WARNING"):
        session = open_graph(folder, manifest, "t0_scorer")
    assert "the optimised graph cannot be saved" in caplog.text and optimised(folder) == []
    assert_parity(score_encoded(OnnxScorer(session), encoded, None, batch_size=4),
                  score_encoded(torch_scorer, encoded, None, batch_size=4), encoded)
