"""Whole runs and whole processes around a Triton server (moved from
tests/unit/harness/backends/test_triton_backend.py and
tests/unit/harness/test_serve.py, names and assertions kept): a server that goes down during a run keeps the units
finished before it; `rospr serve` starts, serves metrics and stops cleanly on SIGTERM; `rospr serve`
killed with SIGKILL leaves no server behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import descendants, served_repo
from unit.harness.backends.test_triton_backend import _children, _metrics, _run_tree, repo  # noqa: F401  (repo: that module's fixture)

from rospr_harness.backends import BackendUnavailable
from rospr_harness.config import load_config
from rospr_harness.serve import TritonServer, _process_group_members, free_port

REPO = Path(__file__).resolve().parents[2]


def _wait_ready(proc: subprocess.Popen, http: int, timeout_s: float = 120) -> None:
    """Poll ``rospr serve``'s readiness on ``http`` until it answers 200, the process ends, or ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)


def test_server_down_during_the_run_keeps_finished_units(repo, tiny_model_dir, tmp_path):
    from rospr_harness.runner import run

    with TritonServer(repo) as s:
        cfg = load_config(None, tree=_run_tree(tiny_model_dir, backend="triton",
                                               triton={"url": s.grpc_url, "retries": 2, "backoff_s": 0.05}))

        class StopAfterFirstUnit:
            def start(self, total):
                pass

            def advance(self, n):
                pass

            def unit_done(self, unit):
                s.stop()

        with pytest.raises(BackendUnavailable, match="after 3 attempts"):
            run(cfg, tmp_path / "run", observer=StopAfterFirstUnit())
    # Targets run side by side (max_active), so a unit whose batches were all back when the server went
    # down is finished too: at least the first, never all, each with its whole records file.
    from rospr_harness.runner import plan_targets

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert 1 <= len(results["units"]) < len(plan_targets(cfg)) * len(cfg.method)
    for unit in results["units"]:
        lines = (tmp_path / "run" / unit["records"]).read_text().splitlines()
        assert len(lines) == unit["n"] == 12


@pytest.mark.slow
def test_serve_killed_with_sigkill_leaves_no_server(tiny_model_dir, tmp_path_factory, tmp_path):
    repo = served_repo(tiny_model_dir, tmp_path_factory)
    http = free_port()
    grpc = free_port(avoid=(http,))
    proc = subprocess.Popen([sys.executable, "-m", "rospr_harness.cli", "serve", "--repo", str(repo), "--http-port",
                             str(http), "--grpc-port", str(grpc), "--metrics-port", "0"], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "ROSPR_SERVE_STATE": str(tmp_path / "st")})
    server_pid = None
    try:
        _wait_ready(proc, http)
        kids = [p for p in descendants(proc.pid) if "tritonserver" in Path(f"/proc/{p}/comm").read_text()]
        assert kids, "no tritonserver under rospr serve"
        server_pid = kids[0]
        assert len(list((tmp_path / "st").glob("*.json"))) == 1  # recorded for a later reap
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 60
        while _process_group_members(server_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _process_group_members(server_pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if server_pid and _process_group_members(server_pid):
            os.killpg(server_pid, signal.SIGKILL)


def test_rospr_serve_cli_starts_and_stops_cleanly(repo):
    http = free_port()
    grpc = free_port(avoid=(http,))
    metrics = free_port(avoid=(http, grpc))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rospr_harness.cli", "serve", "--repo", str(repo), "--http-port", str(http),
         "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env={**os.environ, "COLUMNS": "400"},
    )
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1) as r:
                    ready = r.status == 200
                    break
            except OSError:
                time.sleep(0.3)
        assert ready, proc.stdout.read() if proc.poll() is not None else "not ready"
        page = _metrics(f"127.0.0.1:{metrics}/metrics")  # the endpoint `rospr serve` turns on by default
        assert 'nv_inference_request_success{model="t0_scorer",version="1"}' in page
        server_pid = _children(proc.pid)[0]  # tritonserver, started by the CLI in its own group
        workdir = Path(os.readlink(f"/proc/{server_pid}/cwd"))
        assert workdir.name.startswith("rospr-triton-") and len(_process_group_members(server_pid)) >= 3
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "stopping Triton" in out
    assert _process_group_members(server_pid) == []
    assert not workdir.exists()


@pytest.mark.slow
def test_class5_serve_stops_with_a_clear_message_when_a_python_stub_dies(tiny_model_dir, tmp_path_factory, tmp_path):
    """class 5 (issue 32): a python backend stub killed (an OOM kill in life) leaves Triton answering ready
    while every inference of that model fails: `rospr serve` says which stub died and stops, so nothing
    answers ready any more."""
    repo = served_repo(tiny_model_dir, tmp_path_factory)
    http = free_port()
    grpc = free_port(avoid=(http,))
    proc = subprocess.Popen([sys.executable, "-m", "rospr_harness.cli", "serve", "--repo", str(repo), "--http-port",
                             str(http), "--grpc-port", str(grpc), "--metrics-port", "0"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "ROSPR_SERVE_STATE": str(tmp_path / "st"), "COLUMNS": "400"})
    try:
        _wait_ready(proc, http)
        time.sleep(1.0)  # rospr serve records its stubs once the server is ready
        stubs = [p for p in descendants(proc.pid)
                 if Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].endswith(b"triton_python_backend_stub")]
        assert stubs, "no python backend stub under rospr serve"
        os.kill(stubs[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 2, stderr
        said = " ".join(stderr.split())
        assert "the python backend stub of" in said and f"(pid {stubs[0]}) died" in said, said
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
