"""`rospr bench gpu` on a machine without a GPU: one line, a non-zero exit, nothing installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rospr_bench import bench_gpu


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


def test_cli_one_line_nonzero_exit(tmp_path):
    rospr = Path(sys.executable).with_name("rospr")
    env = {**os.environ, "PATH": str(tmp_path)}
    out = subprocess.run([str(rospr), "bench", "gpu", "--out", str(tmp_path / "r")], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no NVIDIA GPU here" in lines[0], out.stderr
    assert not (tmp_path / "r").exists()


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
