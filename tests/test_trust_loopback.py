"""Issue 10, item 5: a local Ray of a run listens on 127.0.0.1 only, without dashboard or usage stats.

The listening sockets are read from the kernel (``/proc/net/tcp{,6}`` joined with each process's
``/proc/<pid>/fd`` socket inodes), not from Ray, for every process of the Ray session: the driver and
all its descendants (GCS, raylet, agents, workers, actors). Ray is started in a fresh interpreter, so
that the test session's own Ray (``ray_cluster`` fixture) is not the one looked at.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from harness.config import load_config
    from harness.ray_session import run_ray

    cfg = load_config(None, tree={"tasks": ["builtin/animals"], "ray": {"enabled": True, "num_cpus": 1}})
    with run_ray(cfg.ray) as use_ray:
        import ray
        from ray._common.usage import usage_lib

        @ray.remote(num_cpus=0.5)
        class Probe:
            def pid(self):
                return os.getpid()

        actor = Probe.remote()
        actor_pid = ray.get(actor.pid.remote())
        sys.path.insert(0, sys.argv[1])
        from test_trust_loopback import listening_sockets, descendants

        pids = [os.getpid()] + descendants(os.getpid())
        out = {"use_ray": use_ray, "actor_pid": actor_pid, "pids": pids,
               "node_ip": ray.util.get_node_ip_address(),
               "usage_stats": usage_lib.usage_stats_enabled(),
               "sockets": listening_sockets(pids)}
    print("RESULT " + json.dumps(out))
    """
)


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/<p>/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _address(hex_addr: str) -> str:
    """A /proc/net/tcp address (little-endian words of hex) as text: 127.0.0.1, ::, ::ffff:127.0.0.1."""
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_sockets(pids: list[int]) -> list[dict]:
    """The TCP sockets in LISTEN state (st 0A) that the processes ``pids`` hold: pid, address, port."""
    listen: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":
                addr, port = f[1].split(":")
                listen[f[9]] = (_address(addr), int(port, 16))
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = fd.readlink().name if hasattr(fd, "readlink") else Path(fd).resolve().name
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = target[len("socket:["):-1]
                if inode in listen:
                    out.append({"pid": pid, "address": listen[inode][0], "port": listen[inode][1]})
    return out


def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_address_decoding_matches_hand_values():
    # 0100007F: 127.0.0.1 written as a little-endian word; an IPv4-mapped ::ffff:127.0.0.1 in tcp6
    assert _address("0100007F") == "127.0.0.1"
    assert _address("00000000") == "0.0.0.0"
    assert _address("0000000000000000FFFF00000100007F") == "::ffff:7f00:1"
    assert _loopback("::ffff:7f00:1") and _loopback("::1") and not _loopback("::") and not _loopback("0.0.0.0")


def test_local_ray_of_a_run_listens_on_loopback_only():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(Path(__file__).parent)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert res["use_ray"] is True
    assert res["node_ip"] == "127.0.0.1"
    assert res["usage_stats"] is False
    assert res["actor_pid"] in res["pids"]  # the actor's worker process is among those inspected
    socks = res["sockets"]
    # GCS, raylet, agents and workers all listen somewhere: an empty list would prove nothing
    assert len({s["pid"] for s in socks}) >= 4, socks
    exposed = [s for s in socks if not _loopback(s["address"])]
    assert exposed == [], exposed
    assert 8265 not in {s["port"] for s in socks}  # no dashboard on its default port


# -- rospr serve: its ports, its own server, nothing left behind ---------------------------------------


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


@pytest.mark.parametrize("taken", ["http", "grpc"])
def test_serve_refuses_a_port_in_use_before_starting_anything(tmp_path, taken):
    from harness.serve import free_port

    busy = _listening_socket()
    port = busy.getsockname()[1]
    other = free_port(avoid=(port,))
    http, grpc = (port, other) if taken == "http" else (other, port)
    try:
        proc = subprocess.run([sys.executable, "-m", "harness.cli", "serve", "--repo", str(_fake_repo(tmp_path)),
                               "--http-port", str(http), "--grpc-port", str(grpc)], cwd=REPO,
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


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _sleeper(tag: str) -> subprocess.Popen:
    """A process in its own group whose command line carries ``--id=<tag>`` (as a tritonserver's does)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", f"--id={tag}"],
                            start_new_session=True)


def test_reap_ends_only_its_own_stale_servers(tmp_path):
    from harness.serve import reap_stale_servers

    state = tmp_path / "state"
    state.mkdir()
    stale, alive_parent, reused = _sleeper("rospr-stale"), _sleeper("rospr-kept"), _sleeper("someone-else")
    try:
        dead = _dead_pid()
        records = {
            "stale": {"pid": stale.pid, "parent": dead, "id": "rospr-stale"},         # parent gone: reaped
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

    import harness.serve as serve

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


def served_repo(model_dir: Path, tmp_path_factory) -> Path:
    """A `rospr export` build folder of the tiny model (scorer and retriever), once per test session."""
    from rospr_export.export import export_models
    from rospr_export.repository import write_repository

    out = tmp_path_factory.getbasetemp() / "trust-served-repo"
    if not (out / "twin").is_dir():
        export_models(model_dir, out / "onnx", retriever=model_dir)
        write_repository(out / "onnx", out)
    return out


@pytest.mark.slow
def test_serve_killed_with_sigkill_leaves_no_server(tiny_model_dir, tmp_path_factory, tmp_path):
    import signal
    import time
    import urllib.request

    from harness.serve import _process_group_members, free_port

    repo = served_repo(tiny_model_dir, tmp_path_factory)
    http = free_port()
    grpc = free_port(avoid=(http,))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "serve", "--repo", str(repo), "--http-port",
                             str(http), "--grpc-port", str(grpc)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "ROSPR_SERVE_STATE": str(tmp_path / "st")})
    server_pid = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
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


# -- issue 18, class 3: every network read has a total deadline -------------------------------------

import socket  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402


class _Listener:
    """A loopback server that accepts and then never answers (``silent``), or answers one byte at a
    time (``trickle``: an HTTP response whose body would take minutes)."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.mode, self.conns, self.stop = mode, [], threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode == "trickle":
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"{" * 100000:
                if self.stop.is_set():
                    return
                conn.send(bytes([byte]))
                time.sleep(0.02)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture(params=["silent", "trickle"])
def listener(request):
    server = _Listener(request.param)
    yield server
    server.close()


def test_a_bigbench_url_that_never_finishes_answering_is_cut_at_its_deadline(listener, monkeypatch, caplog):
    import logging

    from harness.tasks.base import TaskError
    from harness.tasks.bigbench import BigBenchTask

    monkeypatch.setenv("ROSPR_NET_TIMEOUT", "0.5")
    caplog.set_level(logging.INFO, logger="harness.tasks.fetch")
    with pytest.raises(TaskError) as info:
        BigBenchTask("emoji_movie", location=f"http://127.0.0.1:{listener.port}/tasks").parts()
    msg = str(info.value)
    assert f"127.0.0.1:{listener.port}/tasks/emoji_movie/task.json" in msg
    assert "timed out after 0.5 s" in msg and "ROSPR_NET_TIMEOUT" in msg
    assert any("waiting up to 0.5 s" in r.getMessage() for r in caplog.records)  # the wait is visible


def test_read_url_refuses_a_deadline_setting_that_is_not_a_positive_number(monkeypatch):
    from harness.tasks.base import TaskError
    from harness.tasks.fetch import read_url

    for bad in ("0", "-1", "nan", "soon", "inf"):
        monkeypatch.setenv("ROSPR_NET_TIMEOUT", bad)
        with pytest.raises(TaskError, match="ROSPR_NET_TIMEOUT"):
            read_url("http://127.0.0.1:9/")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_triton_address_that_accepts_and_never_answers_says_it_timed_out(protocol):
    pytest.importorskip("tritonclient")
    from harness.backends.base import BackendUnavailable
    from harness.backends.triton_backend import TritonModelClient

    server = _Listener("silent")
    try:
        with pytest.raises(BackendUnavailable) as info:
            TritonModelClient("t0_scorer", f"127.0.0.1:{server.port}", protocol, timeout_s=1.0)
    finally:
        server.close()
    msg = str(info.value)
    assert f"{protocol}://127.0.0.1:{server.port}" in msg and "timed out after 1 s" in msg
    assert ": ." not in msg  # the reason is never empty
