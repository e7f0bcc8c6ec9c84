"""``rospr_harness.backends``: the table of backends routes each name to its module's factories with the
config sections they take, and an unknown name is refused in one line naming the known ones."""

from __future__ import annotations

import re
import sys
import types

import pytest

from rospr_harness.backends import BACKENDS, create_backend, create_embedder
from rospr_harness.config import BACKENDS as CONFIG_BACKENDS
from rospr_harness.config import load_config
from helpers import Listener


def config(tiny_model_dir, backend: str, **more):
    return load_config(None, tree={"model": {"name_or_path": str(tiny_model_dir)}, "tasks": ["builtin/sentiment"],
                                   "backend": backend, **more})


def test_the_table_has_every_backend_a_config_accepts():
    assert sorted(BACKENDS) == sorted(CONFIG_BACKENDS)


@pytest.fixture
def fake_modules(monkeypatch):
    """Stand-ins for the backend modules that record what each factory was given."""
    calls = []

    def recorder(name):
        return lambda *args: calls.append((name, args)) or name

    for entry in BACKENDS.values():
        module = types.SimpleNamespace(**{f: recorder(f) for f in (
            "create_torch_backend", "create_torch_embedder", "create_onnxruntime_backend",
            "create_onnxruntime_embedder", "create_triton_backend")})
        module.TritonEmbedder = types.SimpleNamespace(from_config=recorder("TritonEmbedder.from_config"))
        monkeypatch.setitem(sys.modules, entry.module, module)
    monkeypatch.setattr("rospr.tokenizer.load_tokenizer", lambda retriever, revision: ("tokenizer", retriever))
    return calls


def test_each_backend_gets_its_sections(tiny_model_dir, fake_modules):
    for name in BACKENDS:
        cfg = config(tiny_model_dir, name)
        create_backend(cfg)
        create_embedder(cfg, str(tiny_model_dir))
    m, r = None, str(tiny_model_dir)
    cfgs = {n: config(tiny_model_dir, n) for n in BACKENDS}
    t, o, tr = cfgs["torch"], cfgs["onnxruntime"], cfgs["triton"]
    assert fake_modules == [
        ("create_torch_backend", (t.model, t.scoring)),
        ("create_torch_embedder", (r, t.model, m)),
        ("create_onnxruntime_backend", (o.model, o.onnxruntime, o.scoring)),
        ("create_onnxruntime_embedder", (r, o.model, o.onnxruntime, o.scoring, m)),
        ("create_triton_backend", (tr.model, tr.triton, [tr.triton.url])),
        ("TritonEmbedder.from_config", (tr.triton, r, m)),
    ]


def test_served_embedders_come_with_the_tokenizer_json_and_ray_urls_reach_triton(tiny_model_dir, fake_modules):
    r = str(tiny_model_dir)
    assert create_embedder(config(tiny_model_dir, "onnxruntime"), r) == ("create_onnxruntime_embedder", ("tokenizer", r))
    urls = ["127.0.0.1:1", "127.0.0.1:2"]
    cfg = config(tiny_model_dir, "triton", ray={"enabled": True, "triton_urls": urls})
    create_backend(cfg)
    assert fake_modules[-1] == ("create_triton_backend", (cfg.model, cfg.triton, urls))


def test_an_unknown_backend_is_one_line_naming_the_known_ones(tiny_model_dir):
    cfg = config(tiny_model_dir, "torch").model_copy(update={"backend": "tensorrt"})
    for make in (lambda: create_backend(cfg), lambda: create_embedder(cfg, str(tiny_model_dir))):
        with pytest.raises(ValueError) as info:
            make()
        message = str(info.value)
        assert "\n" not in message and "'tensorrt'" in message
        assert all(name in message for name in CONFIG_BACKENDS)


def test_the_torch_backend_loads_the_checkpoint(tiny_model_dir):
    backend = create_backend(config(tiny_model_dir, "torch", scoring={"threads": 1}))
    assert backend.name == "torch" and backend.model is not None and backend.scorer.threads == 1
    assert backend.identity["d_model"] == backend.scorer.prompt_dim
    embedder, tokenizer = create_embedder(config(tiny_model_dir, "torch"), str(tiny_model_dir))
    assert embedder.dim > 0 and tokenizer.eos_token_id is not None


def test_the_torch_backends_key_holds_its_precision_and_device(tiny_model_dir):
    """bfloat16 scores are not float32's: a unit scored in one is never reused for the other."""
    from rospr_harness.cache import scorer_part

    f32 = create_backend(config(tiny_model_dir, "torch"))
    bf16 = create_backend(config(tiny_model_dir, "torch", model={"name_or_path": str(tiny_model_dir), "dtype": "bfloat16"}))
    assert (f32.identity["dtype"], bf16.identity["dtype"], f32.identity["device"]) == ("float32", "bfloat16", "cpu")
    assert scorer_part("torch", f32.identity, str(tiny_model_dir)) != scorer_part("torch", bf16.identity, str(tiny_model_dir))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_triton_address_that_accepts_and_never_answers_says_it_timed_out(protocol):
    pytest.importorskip("tritonclient")
    from rospr_harness.backends.base import BackendUnavailable
    from rospr_harness.backends.triton_backend import TritonModelClient

    server = Listener("silent")
    try:
        with pytest.raises(BackendUnavailable) as info:
            TritonModelClient("t0_scorer", f"127.0.0.1:{server.port}", protocol, timeout_s=1.0)
    finally:
        server.close()
    msg = str(info.value)
    assert f"{protocol}://127.0.0.1:{server.port}" in msg and "timed out after 1 s" in msg
    assert ": ." not in msg  # the reason is never empty


def test_class_4_one_device_check_for_every_backend():
    """class 4: no figure hides what happened. ``check_device`` is the one refusal of a ``model.device`` a backend
    cannot score on (no backend falls back to the CPU without a word): checked by hand over each case; the
    backend is asked what it has only for a CUDA device."""
    from rospr_harness.backends.base import check_device
    from rospr.errors import SettingError

    def never():
        raise AssertionError("asked for a CPU device")

    check_device("cpu", "torch", never)
    for device, cuda, needle in [("gpu", never, "not a device name"), ("cuda:x", never, "not a device name"),
                                 ("CPU", never, "not a device name"), ("cuda", lambda: (0, "no provider"), "no CUDA"),
                                 ("cuda:0", lambda: (0, "no provider"), "no provider"),
                                 ("cuda:2", lambda: (2, "two"), "sees 2 CUDA device(s)")]:
        with pytest.raises(SettingError, match=re.escape(needle)) as info:
            check_device(device, "onnxruntime", cuda)
        assert f"model.device={device!r}" in str(info.value)
    check_device("cuda:1", "torch", lambda: (2, "two"))
    check_device("cuda:7", "onnxruntime", lambda: (None, "a CUDA provider, devices not counted"))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_class_4_cuda_where_the_backend_has_none_is_refused_before_loading(tiny_model_dir, backend, monkeypatch,
                                                                           tmp_path):
    """``model.device: cuda`` with a backend that has no CUDA here (torch's CPU build; onnxruntime without its CUDA
    provider, which used to score on the CPU without a word) is refused in one line naming the backend and what it
    has, before any export or load, by ``rospr run`` as by the library."""
    import importlib

    from helpers import cli, error_line

    from rospr.errors import SettingError

    count, found = importlib.import_module(BACKENDS[backend].module).cuda_devices()
    if count != 0:
        pytest.skip(f"{backend} has CUDA here ({found})")
    module = importlib.import_module(BACKENDS[backend].module)
    for loader in ("ensure_export", "load_backbone"):  # nothing is exported or loaded before the refusal
        if hasattr(module, loader):
            monkeypatch.setattr(module, loader, lambda *a, **k: pytest.fail("loaded before the device check"))
    cfg = config(tiny_model_dir, backend, model={"name_or_path": str(tiny_model_dir), "device": "cuda"})
    with pytest.raises(SettingError, match=f"backend {backend} has no CUDA device here") as info:
        create_backend(cfg)
    assert found in str(info.value)
    with pytest.raises(SettingError, match="has no CUDA device"):
        create_embedder(cfg, str(tiny_model_dir))
    path = tmp_path / "c.yaml"
    path.write_text(f"model: {{name_or_path: {tiny_model_dir}, device: cuda}}\nbackend: {backend}\n"
                    "tasks: [builtin/sentiment]\n")
    error_line(cli("run", path, "--out", tmp_path / "run"), "model.device='cuda'", f"backend {backend}")
