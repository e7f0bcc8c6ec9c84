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
