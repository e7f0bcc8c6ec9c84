"""harness/serve.py (`rospr serve`): a port in use is refused before anything starts, ready is never
reported for a server it did not start, what dead predecessors left (a server, a work folder) is
swept and nothing a live process owns, and a `rospr serve` killed with SIGKILL leaves no server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO, cli, dead_pid, error_line

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")


def _fake_repo(tmp_path: Path) -> Path:
    """A folder that passes for a model repository (``start`` refuses before anything loads it)."""
    (tmp_path / "repo" / "t0_scorer").mkdir(parents=True)
    (tmp_path / "repo" / "t0_scorer" / "config.pbtxt").write_text('name: "t0_scorer"\n')
    return tmp_path / "repo"


def _listening_socket(port: int = 0):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


def test_serve_with_a_missing_repository(tmp_path):
    error_line(cli("serve", "--repo", tmp_path / "no-repo"), str(tmp_path / "no-repo"), "not a model repository")


@pytest.mark.parametrize("args, needle", [(["--http-port", "70000"], "--http-port 70000"),
                                          (["--grpc-port", "-1"], "--grpc-port -1"),
                                          (["--metrics-port", "65536"], "--metrics-port 65536"),
                                          (["--startup-timeout", "nan"], "--startup-timeout nan"),
                                          (["--startup-timeout", "1e9"], "--startup-timeout 1000000000.0")])
def test_serve_refuses_ports_and_waits_out_of_range_before_starting_anything(tmp_path, args, needle):
    error_line(cli("serve", "--repo", tmp_path, *args), needle)


@pytest.mark.parametrize("taken", ["http", "grpc", "metrics"])
def test_serve_refuses_a_port_in_use_before_starting_anything(tmp_path, taken):
    from rospr_harness.serve import free_port

    busy = _listening_socket()
    port = busy.getsockname()[1]
    ports = {"http": free_port(avoid=(port,))}
    ports["grpc"] = free_port(avoid=(port, ports["http"]))
    ports["metrics"] = free_port(avoid=(port, ports["http"], ports["grpc"]))
    ports[taken] = port
    try:
        proc = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "serve", "--repo", str(_fake_repo(tmp_path)),
                               *(a for kind, p in ports.items() for a in (f"--{kind}-port", str(p)))], cwd=REPO,
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "ROSPR_SERVE_STATE": str(tmp_path / "state")})
    finally:
        busy.close()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out and "Triton ready" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and f"port {port} ({taken})" in lines[0] and "already in use" in lines[0], out
    assert not list((tmp_path / "state").glob("*.json"))  # nothing was started, so nothing recorded


def _sleeper(tag: str) -> subprocess.Popen:
    """A process in its own group whose command line carries ``--id=<tag>`` (as a tritonserver's does)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--id={tag}"],
                            start_new_session=True)


def test_reap_ends_only_its_own_stale_servers(tmp_path):
    from rospr_harness.serve import reap_stale_servers

    from rospr_harness.procs import start_time

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    stale, alive_parent, reused = _sleeper("rospr-stale"), _sleeper("rospr-kept"), _sleeper("someone-else")
    try:
        dead = dead_pid()
        records = {
            "stale": {"pid": stale.pid, "start": start_time(stale.pid), "parent": dead,
                      "id": "rospr-stale"},                                            # parent gone: reaped
            "kept": {"pid": alive_parent.pid, "parent": os.getpid(), "id": "rospr-kept"},  # parent alive: kept
            "reused": {"pid": reused.pid, "parent": dead, "id": "rospr-old"},          # pid reused: not touched
        }
        for name, info in records.items():
            (state / f"{name}.json").write_text(json.dumps(info))
        (state / "garbage.json").write_text("{")
        assert reap_stale_servers(state) == [stale.pid]
        assert stale.wait(timeout=15) is not None
        assert alive_parent.poll() is None and reused.poll() is None
        assert sorted(p.name for p in state.glob("*.json")) == ["kept.json"]
    finally:
        for p in (stale, alive_parent, reused):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_ready_is_never_reported_for_a_server_it_did_not_start(tmp_path, monkeypatch):
    """Another server answers ready on the port (the port check raced): start refuses, reports nothing."""
    import http.server
    import threading

    import rospr_harness.serve as serve

    try:
        serve.tritonserver_dist()
    except serve.ServerError as exc:
        pytest.skip(str(exc))

    class Impostor(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # a healthy Triton of someone else
            body = b'{"name": "triton", "version": "2.51.0"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    impostor = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=impostor.serve_forever, daemon=True).start()
    monkeypatch.setattr(serve, "port_in_use", lambda host, port: False)
    monkeypatch.setenv("ROSPR_SERVE_STATE", str(tmp_path / "state"))
    server = serve.TritonServer(_fake_repo(tmp_path), http_port=impostor.server_address[1], startup_timeout_s=60)
    try:
        with pytest.raises(serve.ServerError) as info:
            server.start()
        assert "another server answers" in str(info.value) or "Address already in use" in str(info.value)
        assert server.process is None and not list((tmp_path / "state").glob("*.json"))
    finally:
        impostor.shutdown()
        server.stop()


def test_serve_sweeps_the_work_folders_its_dead_predecessors_left(tmp_path):
    from rospr_harness.serve import OWNER_FILE, WORKDIR_PREFIX, _start_time, sweep_stale_workdirs

    def folder(name: str, owner: dict | None) -> Path:
        d = tmp_path / f"{WORKDIR_PREFIX}{name}"
        (d / "backends").mkdir(parents=True)
        if owner is not None:
            (d / OWNER_FILE).write_text(json.dumps(owner))
        return d

    dead = folder("dead", {"pid": dead_pid(), "start": "1"})
    reused = folder("reused", {"pid": os.getpid(), "start": "0"})  # our pid now, another process then
    alive = folder("alive", {"pid": os.getpid(), "start": _start_time(os.getpid())})
    unowned = folder("unowned", None)  # another version's, or one being made: left alone
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / OWNER_FILE).write_text(json.dumps({"pid": dead_pid(), "start": "1"}))

    assert sorted(sweep_stale_workdirs(tmp_path)) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert alive.is_dir() and unowned.is_dir() and other.is_dir()


# A leader (a tritonserver SIGTERMed while it loads its models: no handler yet) that dies and leaves a
# member of its group which ignores SIGTERM and waits for its parent with kill(pid, 0) (a python
# backend stub): ``stop`` reaps the leader at once, so the member sees it gone and exits by itself;
# an unreaped leader is a zombie that kill(pid, 0) finds, and the member would wait for SIGKILL.
_STUB = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
parent = os.getppid()
open(sys.argv[1] + ".started", "w").close()
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    time.sleep(0.05)
open(sys.argv[1], "w").write("parent gone")
"""
_LEADER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
time.sleep(600)
"""


def test_stop_reaps_a_leader_that_died_so_its_stubs_see_it_gone(tmp_path):
    import time

    from rospr_harness.procs import ManagedProcess, group_members

    mark = tmp_path / "stub-saw-its-parent-gone"
    child = ManagedProcess([sys.executable, "-c", _LEADER, _STUB, str(mark)], tag=str(mark)).start()
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{mark}.started").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(group_members(child.pid)) == 2
        pgid = child.pid
        child.stop(timeout_s=20)
        assert group_members(pgid) == []
        assert mark.read_text() == "parent gone"  # it ended by itself, not by the SIGKILL
    finally:
        child.stop()


def test_class5_the_server_state_is_the_users_own_never_a_fixed_name_in_tmp(tmp_path, monkeypatch):
    """class 5: the record of started servers lives under the user's runtime folder, else rospr's cache
    root, and a planted one (open to others) is refused before any process is signalled."""
    from rospr.errors import StateError
    from rospr_harness.serve import reap_stale_servers, state_dir

    monkeypatch.delenv("ROSPR_SERVE_STATE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert state_dir() == tmp_path / "run" / "rospr-serve"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / "serve"
    planted = tmp_path / "home" / "serve"
    planted.mkdir(parents=True)
    planted.chmod(0o777)
    with pytest.raises(StateError, match=rf"{planted} has mode 0777, open to others"):
        reap_stale_servers()


# class 5: a python backend stub that dies (an OOM kill) is seen, and the server is not kept up as ready.
# A leader that starts a "stub" (argv[0] triton_python_backend_stub, given its model.py) and never collects
# its exit, as tritonserver does not: the killed stub stays a zombie, which still has its pid and start time.
_STUB_LEADER = """
import subprocess, sys, time
subprocess.Popen(["triton_python_backend_stub", "-c", "import time; time.sleep(600)", sys.argv[1]],
                 executable=sys.executable)
time.sleep(600)
"""


def test_class5_a_dead_python_stub_is_seen_and_the_server_is_not_ready(tmp_path):
    import signal
    import time

    from rospr_harness.procs import ManagedProcess, group_members, same_process
    from rospr_harness.serve import TritonServer, dead_stubs, stub_processes

    model_py = str(tmp_path / "repo" / "t0_scorer" / "1" / "model.py")
    leader = ManagedProcess([sys.executable, "-c", _STUB_LEADER, model_py], tag=model_py).start()
    try:
        deadline = time.monotonic() + 30
        while len(group_members(leader.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        stubs = stub_processes(leader.pids())
        (stub,) = stubs
        assert stubs[stub][1] == "t0_scorer" and dead_stubs(stubs) == []
        server = TritonServer.__new__(TritonServer)  # the watchdog of a started server, on this process group
        server.process, server._stubs = leader.popen, stubs
        assert server.problem() is None
        os.kill(stub, signal.SIGKILL)
        while not dead_stubs(stubs) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert dead_stubs(stubs) == [f"t0_scorer (pid {stub})"]
        assert same_process(stub, stubs[stub][0])  # a zombie: its pid and start time alone would say alive
        assert f"the python backend stub of t0_scorer (pid {stub}) died" in server.problem()
        leader.stop(10)
        assert server.problem().startswith("tritonserver exited")
    finally:
        leader.stop(10)


def test_class3_a_readiness_poll_of_a_silent_or_flooding_port_is_bounded(monkeypatch):
    """class 3 (issue 32): each readiness question goes through the bounded reader: a port that accepts
    and stays silent, or answers without end, is "not ready" at the poll's deadline or byte limit."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from rospr_harness import serve

    monkeypatch.setattr(serve, "POLL_TIMEOUT_S", 0.3)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        assert serve._poll(f"http://127.0.0.1:{silent.getsockname()[1]}/v2/health/ready") is None

    class Flood(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(1 << 12):
                    self.wfile.write(b"x" * 4096)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flood)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(serve, "POLL_TIMEOUT_S", 30.0)
        assert serve._poll(f"http://127.0.0.1:{server.server_address[1]}/v2") is None  # over POLL_MAX_BYTES
    finally:
        server.shutdown()
        server.server_close()
