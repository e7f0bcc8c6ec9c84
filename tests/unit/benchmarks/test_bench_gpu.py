"""`rospr bench gpu` (benchmarks/bench_gpu.py, benchmarks/gpu_check.py): on a machine without a GPU,
one line, a non-zero exit, nothing installed; with ``--no-install``, the check's GPU path on the CPU
(the tiny shape) and in an environment with only what a bare GPU machine has, through
``python -m benchmarks`` (benchmarks/__main__.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rospr_bench import bench_gpu, gpu_check
from helpers import REPO



@pytest.fixture
def no_install(monkeypatch):
    """Any pip call or package probe would be a failure of the 'stops at once' promise."""
    def refuse(*args, **kwargs):
        raise AssertionError("bench gpu tried to install or probe packages without a GPU")

    monkeypatch.setattr(bench_gpu, "_pip", refuse)
    monkeypatch.setattr(bench_gpu, "ensure_packages", refuse)


def test_no_nvidia_smi_stops_at_once(monkeypatch, tmp_path, no_install):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvidia-smi
    with pytest.raises(bench_gpu.NoGPUError, match="no NVIDIA GPU here"):
        bench_gpu.main(["--out", str(tmp_path / "results")])
    assert not (tmp_path / "results").exists()


def test_driver_without_devices_stops(monkeypatch, tmp_path, no_install):
    fake = tmp_path / "nvidia-smi"  # what nvidia-smi says with a driver and no device
    fake.write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(bench_gpu.NoGPUError, match="lists no GPU \\(No devices were found\\)"):
        bench_gpu.main([])


def test_listed_gpus_are_read(monkeypatch, tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert bench_gpu.cuda_gpus() == ["GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)"]


@pytest.mark.parametrize("flags", [[], ["--no-install"]])
def test_cli_one_line_nonzero_exit(tmp_path, flags):
    rospr = Path(sys.executable).with_name("rospr")
    env = {**os.environ, "PATH": str(tmp_path)}
    out = subprocess.run([str(rospr), "bench", "gpu", *flags, "--out", str(tmp_path / "r")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no NVIDIA GPU here" in lines[0], out.stderr
    assert not (tmp_path / "r").exists()


# slow: the check's tuning loop on the CPU (35 s on 2 loaded cores)
@pytest.mark.slow
def test_tuning_check_runs_its_gpu_code_on_the_cpu(tiny_model_dir):
    """The tuning section's code path with the CPU standing in for the GPU: every run learns the same
    prompt's losses within its tolerance of float32 on the CPU, and reports a step time."""
    from rospr_harness.tasks import get_task
    from rospr_harness.tasks.base import DataSettings

    rows = get_task("builtin/animals", DataSettings()).load("mentions_animal", split="train", limit=32).examples
    got = bench_gpu.tuning_check(tiny_model_dir, rows, device="cpu", steps=3, batch_size=8)
    runs = {r["run"]: r for r in got["runs"]}
    assert list(runs) == [name for name, *_ in bench_gpu.TUNING_RUNS]
    reference = runs["float32 cpu (reference)"]["losses"]
    # float32 on the stand-in device is the reference computation: equal to 1e-5
    assert max(abs(a - b) for a, b in zip(runs["float32"]["losses"], reference)) < 1e-5
    bf16 = runs["bfloat16 checkpointed"]
    assert (bf16["dtype"], bf16["gradient_checkpointing"], bf16["micro_batch_size"]) == ("bfloat16", True, 4)
    assert max(abs(a - b) for a, b in zip(bf16["losses"], reference)) < 0.05 * max(reference)
    assert got["ok"] and all(r["step_s"] > 0 and r["peak_memory_bytes"] is None for r in got["runs"])


def test_full_path_refuses_the_random_shape():
    with pytest.raises(ValueError, match="--size t0-3b: random weights are the --no-install check's"):
        bench_gpu.main(["--size", "t0-3b"])


def test_random_model_has_t0_3b_shape():
    """bigscience/T0_3B's config.json (t5-v1_1-xl lm-adapt), built on the meta device: no memory, no download."""
    import torch

    model = gpu_check.random_t5(gpu_check.SHAPES["t0-3b"](), "meta", seed=0)
    c = model.config
    assert (c.d_model, c.d_ff, c.num_layers, c.num_decoder_layers, c.num_heads, c.d_kv, c.vocab_size) == \
        (2048, 5120, 24, 24, 32, 64, 32128)
    # gated GELU; untied: the LM head is a matrix of its own (transformers 5 says tie_word_embeddings=True
    # of every T5 config, and keeps T5 v1.1's "no rescaling" in scale_decoder_outputs)
    assert c.feed_forward_proj == "gated-gelu" and model.lm_head.weight is not model.shared.weight
    assert sum(p.numel() for p in model.parameters()) == 2_849_757_184  # T0-3B's parameter count
    assert next(model.parameters()).dtype == torch.float32


def test_random_rows_have_exact_lengths():
    """Every row has the lengths the memory table assumes: the tuner's own encoding gives S and T."""
    from rospr.tuning import TuneSettings, _encode_pairs

    rows = gpu_check.random_examples(5, input_tokens=24, target_tokens=6, vocab=4096, seed=0)
    pairs = _encode_pairs(gpu_check.IdTokenizer(), rows, TuneSettings(max_input_tokens=24, max_target_tokens=6))
    assert [(len(i), len(t)) for i, t in pairs] == [(24, 6)] * 5
    assert all(t[-1] == 1 and min(i) >= 3 for i, t in pairs)  # EOS ends the target; no pad/eos/unk in the input


# slow: the whole check in a fresh interpreter (16 s on 2 loaded cores)
@pytest.mark.slow
def test_no_install_check_runs_its_gpu_path_on_the_cpu(tmp_path):
    """The command's GPU path with the CPU as its device and the tiny shape: the JSON's parts, float32
    and bfloat16 losses that agree, and the parts this machine cannot run named."""
    bench_gpu.main(["--no-install", "--device", "cpu", "--size", "tiny", "--tuning-steps", "3", "--out", str(tmp_path)])
    got = json.loads((tmp_path / "gpu.json").read_text())
    assert got["mode"] == "no-install" and got["device"] == "cpu" and got["gpus"] == []
    assert {"machine", "settings", "shape", "tuning", "plan", "scores", "skipped", "ok", "seconds"} <= set(got)
    f32, bf16 = got["tuning"]["runs"]
    assert (f32["dtype"], f32["gradient_checkpointing"], f32["micro_batch_size"]) == ("float32", False, 4)
    assert (bf16["dtype"], bf16["gradient_checkpointing"], bf16["micro_batch_size"]) == ("bfloat16", True, 2)
    assert len(f32["losses"]) == len(bf16["losses"]) == 3
    # bfloat16 with checkpointing and micro-batches learns what float32 does: within 5% at each step
    assert max(abs(a - b) for a, b in zip(f32["losses"], bf16["losses"])) < 0.05 * max(f32["losses"])
    for run in (f32, bf16):
        assert run["step_s"] > 0 and run["peak_memory_bytes"] is None and run["peak_within_table_reserve"] is None
        assert run["table_peak_bytes"] > run["table_activations_per_example_bytes"] > 0
    assert [p["run"] for p in got["plan"]] == ["float32", "bfloat16 checkpointed"]
    assert all(p["estimated_step_s"] > 0 and p["gemm_tflops"] > 0 for p in got["plan"])
    # checkpointing recomputes the forward: the plan counts more FLOPs for the bfloat16 run's step
    assert got["plan"][1]["flops_per_step"] > got["plan"][0]["flops_per_step"]
    bank = got["bank"]  # the bfloat16 step scaled by hand: 1000 steps, batch 4 -> 32, 313 prompts
    assert bank["run"] == "bfloat16 checkpointed" and bank["device"] == "cpu" and bank["batch_size"] == 4
    assert bank["prompt_s"] == pytest.approx(bf16["step_s"] * 1000 * 32 / 4)
    assert bank["bank_hours"] == pytest.approx(bank["prompt_s"] * 313 / 3600)
    f32_scores, bf16_scores = got["scores"]["rows"]
    assert f32_scores["max_abs_diff"] == 0.0  # the CPU against itself: the same computation
    assert bf16_scores["dtype"] == "bfloat16" and bf16_scores["max_abs_diff"] <= 2.0
    assert {"onnxruntime_cuda", "faiss_gpu", "export"} <= set(got["skipped"])  # this machine: no CUDA builds
    assert got["faiss"] is None and got["ok"] is True


# What a bare GPU machine lacks of this environment (torch, transformers, numpy, onnxruntime, peft are
# there): rospr itself is not installed either, only the checkout on PYTHONPATH.
BARE_LACKS = {"pydantic", "pydantic_core", "rich", "typer", "faiss", "faiss_cpu", "ray", "tritonclient",
              "datasets", "pyarrow", "sentencepiece", "optimum", "optimum_onnx", "lm_eval", "matplotlib", "onnx",
              "pandas", "rospr"}


def _bare_site(tmp_path) -> Path:
    """This environment's site-packages less ``BARE_LACKS``, as links in one folder (no .pth files: no
    installed rospr); where two site folders hold one name, the first on sys.path wins, as in Python."""
    bare = tmp_path / "site"
    bare.mkdir()
    for site in dict.fromkeys(Path(p) for p in sys.path if Path(p).name in ("site-packages", "dist-packages")):
        for entry in site.iterdir() if site.is_dir() else ():
            top = entry.name.split("-")[0].split(".")[0].lower()
            keep = top not in BARE_LACKS and entry.suffix != ".pth" and not entry.name.startswith("__editable__")
            if keep and not (bare / entry.name).exists():
                (bare / entry.name).symlink_to(entry)
    return bare


@pytest.mark.slow
def test_no_install_needs_only_what_a_bare_machine_has(tmp_path):
    """``PYTHONPATH=<checkout> python -m benchmarks gpu --no-install``, in an interpreter that sees only
    what a bare GPU machine has: the check runs and names what it skipped (the torch backend without
    pydantic); without a GPU it says so in one line."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(_bare_site(tmp_path))}
    command = [sys.executable, "-S", "-m", "benchmarks", "gpu", "--no-install"]
    out = subprocess.run([*command, "--device", "cpu", "--size", "tiny", "--tuning-steps", "2", "--out",
                          str(tmp_path / "r")], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads((tmp_path / "r" / "gpu.json").read_text())
    assert got["tuning"]["losses_agree"] and got["scores"] is None
    assert "pydantic" in got["skipped"]["scores"] and "Optimum is not installed" in got["skipped"]["export"]
    assert got["skipped"]["faiss_gpu"] == "faiss is not installed"
    out = subprocess.run(command, cwd=REPO, env={**env, "PATH": str(tmp_path)}, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: rospr bench gpu: no NVIDIA GPU here (nvidia-smi is not on PATH); run it on a machine with an NVIDIA "
        "GPU and its driver"]
