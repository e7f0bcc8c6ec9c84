"""ONNX export: the graphs agree with PyTorch, the cache is content-addressed, the repository is filled."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from rospr_export.export import export_models
from rospr_export.isolated import unable_here
from rospr_export.identity import cache_key
from rospr_export.manifest import find_manifest
from rospr_export.trace import export_retriever, export_scorer
from rospr_export.validate import ExportValidationError
from rospr_export.repository import write_repository
from rospr.retriever import TorchEmbedder, embed_texts, load_encoder

TEXTS = ["the cat sat on the mat", "a", "which is food? pizza or ball", "premise: the dog sat. true or false?",
         "team won the election because of the energy of bread " * 3]


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return export_models(tiny_model_dir, out, retriever=tiny_model_dir)


def test_manifest_records_validation(exported, tiny_backbone):
    m = find_manifest(exported.out_dir)
    scorer = m["graphs"]["t0_scorer"]["validation"]
    assert scorer["max_abs_diff"] <= 1e-4 and len(scorer["shapes"]) >= 3
    assert m["graphs"]["retriever"]["validation"]["max_abs_diff"] <= 1e-5
    assert m["model"]["config_hash"] == tiny_backbone[2].config_hash


def test_graphs_have_dynamic_axes(exported):
    sess = ort.InferenceSession(str(exported.scorer_path), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    assert shapes["input_ids"] == ["batch", "sequence"]
    assert shapes["prompt_embeds"][:2] == ["batch", "prompt_length"] and shapes["prompt_embeds"][2] == 128
    assert shapes["choice_ids"] == ["batch", "choices", "choice_length"]
    out = sess.get_outputs()[0]
    assert out.name == "scores" and out.shape == ["batch", "choices"] and out.type == "tensor(float)"


def test_retriever_graph_matches_torch(exported, tiny_model_dir):
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    reference = embed_texts(TorchEmbedder(encoder), tokenizer, TEXTS, batch_size=2)
    from rospr_harness.backends.onnxruntime_backend import OnnxEmbedder, make_session

    got = embed_texts(OnnxEmbedder(make_session(exported.retriever_path)), tokenizer, TEXTS, batch_size=3)
    assert got.shape == reference.shape and got.dtype == np.float32
    assert np.max(np.abs(got - reference)) <= 1e-5


IN_PROCESS = pytest.mark.skipif(unable_here() is not None, reason=f"traces in process: {unable_here()} "
                                "(export_models itself exports in rospr's export environment there)")


@IN_PROCESS
def test_export_fails_above_tolerance(tiny_backbone, tiny_model_dir, tmp_path):
    from rospr.backbone import load_backbone

    model, _, _ = tiny_backbone
    other, _, _ = load_backbone(tiny_model_dir)
    with torch.no_grad():
        # a reference that is not the exported model
        other.lm_head.weight.add_(0.05 * torch.randn(other.lm_head.weight.shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ExportValidationError, match="differs from PyTorch"):
        export_scorer(model, tmp_path / "t0_scorer.onnx", reference=other)


@IN_PROCESS
def test_external_data(tiny_model_dir, tmp_path):
    encoder, _ = load_encoder(str(tiny_model_dir))
    v = export_retriever(encoder, tmp_path / "retriever.onnx", external_data=True)
    assert (tmp_path / "retriever.onnx_data").stat().st_size > (tmp_path / "retriever.onnx").stat().st_size
    assert v.max_abs_diff <= 1e-5


def test_cache_key_is_content_addressed(tiny_model_dir, tmp_path):
    k = cache_key(tiny_model_dir)
    assert k == cache_key(tiny_model_dir)
    assert k != cache_key(tiny_model_dir, dtype="float16")
    assert k != cache_key(tiny_model_dir, prompt_dtype="float16")
    assert k != cache_key(tiny_model_dir, retriever_name=tiny_model_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_model_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    assert cache_key(copy) == k  # the same content elsewhere is the same export
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    weights["lm_head.weight"][0, 0] += 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert cache_key(copy) != k


def test_repository_is_filled(exported, tmp_path):
    out = write_repository(exported.out_dir, tmp_path / "build")
    for flavour in ("triton", "twin"):
        cfg = (out / flavour / "t0_scorer" / "config.pbtxt").read_text()
        assert 'dims: [ -1, 128 ]' in cfg and 'name: "t0_scorer"' in cfg
        assert (out / flavour / "t0_scorer" / "1" / "model.onnx").is_file()
        ident = cfg.split('key: "rospr_identity" value: { string_value: "')[1].split('" }')[0]
        assert json.loads(ident.replace('\\"', '"'))["d_model"] == 128
        assert "dims: [ 128 ]" in (out / flavour / "retriever" / "config.pbtxt").read_text()
    assert 'backend: "onnxruntime"' in (out / "triton" / "t0_scorer" / "config.pbtxt").read_text()
    assert 'backend: "python"' in (out / "twin" / "t0_scorer" / "config.pbtxt").read_text()
    assert (out / "twin" / "t0_scorer" / "1" / "model.py").is_file()


def test_repository_refuses_unvalidated_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="no validated export"):
        write_repository(tmp_path, tmp_path / "build")


@pytest.mark.slow
def test_float16_export_within_half_tolerance(tiny_model_dir, tmp_path):
    res = export_models(tiny_model_dir, tmp_path, dtype="float16")
    v = res.validations[0]
    assert v.ok and v.max_abs_diff > 0
    sess = ort.InferenceSession(str(res.scorer_path), providers=["CPUExecutionProvider"])
    assert {i.name: i.type for i in sess.get_inputs()}["prompt_embeds"] == "tensor(float16)"
    assert sess.get_outputs()[0].type == "tensor(float)"


@pytest.mark.slow
def test_bfloat16_export_where_onnxruntime_cannot_run_it_is_one_clear_error(tiny_model_dir, tmp_path):
    """onnxruntime's CPU provider has no bfloat16 kernels for some of the graph's ops, and Optimum opens a
    session on the new graph: the refusal says so and where to export instead, with no manifest left."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu runs bfloat16 graphs")
    with pytest.raises(ExportValidationError, match=r"bfloat16 graph cannot be (built|checked) here.*--device cuda"):
        export_models(tiny_model_dir, tmp_path, dtype="bfloat16")
    assert not (tmp_path / "manifest.json").exists()
