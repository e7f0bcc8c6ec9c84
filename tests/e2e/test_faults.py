"""A whole run under faults at scale gives the numbers of an uninterrupted run (harness/runner/ray_executor.py).

- Two Triton servers (``ray.triton_urls``), one SIGKILLed after the first unit: its work moves to the
  other server, the run completes with the uninterrupted run's numbers, and ``execution`` says which
  servers and nodes did the work and what was retried.
- A two-node Ray cluster on this machine (``ray start --head`` and ``ray start --address``, each with
  ``--block`` so that stopping that one process by its pid stops its node), the worker node's raylet
  SIGKILLed after the first unit: the lost actor's batches are resubmitted to the head node's actor
  and the results equal the in-process reference.

The cluster stays on loopback: Ray 2.60 swaps ``--node-ip-address=127.0.0.1`` (and only that spelling of
loopback) for the host's routable address, so the head is ``127.0.0.2`` and the worker ``127.0.0.3``
(Linux routes all of 127.0.0.0/8 to ``lo``), and the driver joins from ``127.0.0.2``
(``rospr_harness.ray_session._join_kwargs``). No traffic of this test leaves the loopback range.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from rospr_harness.schema import read_records, read_results
from rospr_harness.runner import run
from helpers import descendants, served_repo, stop_ray_node

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# three built-in tasks, 24 rows each: enough units that a fault comes with most of the run to do
RUN = {"method": ["t0"], "tasks": [{"name": "builtin/animals", "limit": 24}, {"name": "builtin/nli", "limit": 24},
                                   {"name": "builtin/sentiment", "limit": 24}], "scoring": {"batch_size": 4}}


def assert_same_numbers(run_dir: Path, ref_dir: Path) -> None:
    """Unit by unit: the same units, predictions and accuracies; scores within 1e-5."""
    got, ref = read_results(run_dir / "results.json"), read_results(ref_dir / "results.json")
    assert [(u.task, u.prompt, u.method) for u in got.units] == [(u.task, u.prompt, u.method) for u in ref.units]
    for g, r in zip(got.units, ref.units):
        assert (g.n, g.accuracy) == (r.n, r.accuracy), (g.task, g.prompt)
        grec, rrec = read_records(run_dir / g.records), read_records(ref_dir / r.records)
        assert [x.prediction for x in grec] == [x.prediction for x in rrec]
        for a, b in zip(grec, rrec):
            np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-5)
    assert got.overall == pytest.approx(ref.overall, abs=1e-12)


class AfterFirstUnit:
    """A run observer that calls ``action`` once, when the first unit is written."""

    def __init__(self, action) -> None:
        self.action, self.done = action, False

    def start(self, total):
        self.total = total

    def advance(self, n):
        pass

    def unit_done(self, unit):
        if not self.done:
            self.done = True
            self.action()


# -- two Triton servers ------------------------------------------------------------------------------


def test_a_triton_server_killed_mid_run_moves_its_work_to_the_other(run_config, tiny_model_dir, tmp_path_factory,
                                                                   tmp_path, ray_cluster, monkeypatch):
    pytest.importorskip("tritonclient.grpc")
    from rospr_harness.serve import ServerError, TritonServer, _process_group_members

    monkeypatch.setenv("ROSPR_ONNX_CACHE", str(tmp_path_factory.getbasetemp() / "trust-onnx-cache"))
    repo = served_repo(tiny_model_dir, tmp_path_factory)
    try:
        first, second = TritonServer(repo).start(), TritonServer(repo).start()
    except ServerError as exc:
        pytest.skip(f"no local Triton server: {str(exc).splitlines()[0]}")
    try:
        cfg = run_config(**RUN, backend="triton", triton={"retries": 1, "backoff_s": 0.05, "timeout_s": 20},
                         ray={"enabled": True, "scorers": 2, "num_cpus_per_scorer": 0.5,
                              "triton_urls": [first.grpc_url, second.grpc_url]})
        reference = run(cfg, tmp_path / "uninterrupted")
        assert set(reference.execution.servers) == {first.grpc_url, second.grpc_url}

        def kill_first():
            os.killpg(first.process.pid, signal.SIGKILL)

        obs = AfterFirstUnit(kill_first)
        res = run(cfg, tmp_path / "faulted", observer=obs)
        assert obs.done and obs.total > 3  # the kill came with most of the run still to do
        assert not _process_group_members(first.process.pid)
        ex = res.execution.model_dump()
        assert list(ex["servers_lost"]) == [first.grpc_url]
        assert ex["servers"][second.grpc_url] > 0
        assert sum(ex["servers"].values()) == sum(n["batches"] for n in ex["nodes"].values())
        assert ex["resubmitted"] == len(ex["retried"]) >= 1
        assert all(r["server"] == first.grpc_url and "unavailable" in r["reason"] for r in ex["retried"])
        assert_same_numbers(tmp_path / "faulted", tmp_path / "uninterrupted")
        on_disk = json.loads((tmp_path / "faulted" / "results.json").read_text())["execution"]
        assert on_disk["servers_lost"] == ex["servers_lost"] and on_disk["retried"] == ex["retried"]
    finally:
        first.stop()
        second.stop()


def test_every_server_gone_ends_the_run_with_one_clear_error(run_config, tiny_model_dir, tmp_path_factory, tmp_path,
                                                             ray_cluster, monkeypatch):
    pytest.importorskip("tritonclient.grpc")
    from rospr_harness.backends import BackendUnavailable
    from rospr_harness.serve import ServerError, TritonServer

    monkeypatch.setenv("ROSPR_ONNX_CACHE", str(tmp_path_factory.getbasetemp() / "trust-onnx-cache"))
    repo = served_repo(tiny_model_dir, tmp_path_factory)
    try:
        servers = [TritonServer(repo).start(), TritonServer(repo).start()]
    except ServerError as exc:
        pytest.skip(f"no local Triton server: {str(exc).splitlines()[0]}")
    try:
        cfg = run_config(**RUN, backend="triton", triton={"retries": 1, "backoff_s": 0.05, "timeout_s": 20},
                         ray={"enabled": True, "scorers": 2, "num_cpus_per_scorer": 0.5,
                              "triton_urls": [s.grpc_url for s in servers]})
        obs = AfterFirstUnit(lambda: [os.killpg(s.process.pid, signal.SIGKILL) for s in servers])
        with pytest.raises(BackendUnavailable, match="every Triton server of ray.triton_urls is unavailable"):
            run(cfg, tmp_path / "run", observer=obs)
        kept = json.loads((tmp_path / "run" / "results.json").read_text())
        assert len(kept["units"]) >= 1 and all((tmp_path / "run" / u["records"]).is_file() for u in kept["units"])
    finally:
        for s in servers:
            s.stop()


# -- a Ray worker node lost ------------------------------------------------------------------------------

DRIVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from rospr_harness.config import load_config
    from rospr_harness.runner import run

    tree, out, victim = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3])

    class KillWorkerNode:
        done = False
        def start(self, total): self.total = total
        def advance(self, n): pass
        def unit_done(self, unit):
            if not self.done:
                self.done = True
                os.kill(victim, signal.SIGKILL)  # the worker node's raylet: its actors die with it
                import time, ray
                deadline = time.monotonic() + 120  # go on once Ray knows the node is gone
                while sum(n["Alive"] for n in ray.nodes()) > 1 and time.monotonic() < deadline:
                    time.sleep(0.5)

    obs = KillWorkerNode()
    res = run(load_config(None, tree=tree), out, observer=obs)
    print("RESULT " + json.dumps({"killed": obs.done, "total": obs.total, "execution": res.execution.model_dump()}))
    """
)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_a_ray_worker_node_lost_mid_run_changes_nothing(run_config, tmp_path_factory, tmp_path):
    from rospr_harness.serve import free_port

    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        pytest.skip("no `ray` command in this environment")
    cache = tmp_path_factory.getbasetemp() / "trust-onnx-cache"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0", "ROSPR_ONNX_CACHE": str(cache),
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # a multi-node cluster (the default on Linux)
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    common = ["--block", "--num-cpus=1", "--disable-usage-stats"]
    head = subprocess.Popen([str(ray_bin), "start", "--head", f"--port={port}", "--include-dashboard=false",
                             "--node-ip-address=127.0.0.2", *common], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    worker = None
    try:
        address = f"127.0.0.2:{port}"
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline:  # the head is up when `ray status` answers
            status = subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env,
                                    capture_output=True, text=True)
            if status.returncode == 0:
                break
            time.sleep(2)
        assert status is not None and status.returncode == 0, status.stderr[-2000:] if status else "no status"
        worker = subprocess.Popen([str(ray_bin), "start", f"--address={address}", "--node-ip-address=127.0.0.3",
                                   *common], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        raylet = None
        while time.monotonic() < deadline and raylet is None:
            raylet = next((p for p in descendants(worker.pid) if _comm(p) == "raylet"), None)
            time.sleep(0.5)
        assert raylet, "the worker node's raylet did not start"
        while time.monotonic() < deadline:  # and it has joined: two alive nodes, 2 CPUs
            out = subprocess.run([str(ray_bin), "status", f"--address={address}"], env=env,
                                 capture_output=True, text=True).stdout
            if "2.0 CPU" in out or "0.0/2.0 CPU" in out:
                break
            time.sleep(2)

        # One scorer per node (1 CPU each); a lost actor is not restarted (nowhere to place it): the
        # driver resubmits its batches to the head node's actor.
        ray_tree = {"enabled": True, "address": address, "scorers": 2, "num_cpus_per_scorer": 1,
                    "max_restarts": 0, "max_task_retries": 0, "max_batch_attempts": 3}
        tree = run_config.tree(**RUN, ray=ray_tree)
        proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(tree), str(tmp_path / "lost"), str(raylet)],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stderr[-4000:]
        result = json.loads(lines[-1][len("RESULT "):])
        assert result["killed"] and result["total"] > 3
        ex = result["execution"]
        assert len(ex["nodes"]) == 2, ex  # both nodes scored batches before the loss
        assert ex["actors_lost"] == 1 and ex["actor_restarts"] == 0, ex
        assert ex["resubmitted"] == len(ex["retried"]) and all("died" in r["reason"] for r in ex["retried"]), ex
    finally:
        if worker is not None:
            stop_ray_node(worker)
        stop_ray_node(head)

    reference = run(run_config(**RUN), tmp_path / "reference")
    assert reference.execution.executor == "in_process"
    assert_same_numbers(tmp_path / "lost", tmp_path / "reference")
