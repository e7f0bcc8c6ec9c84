"""harness/ray_session.py: which cluster a run joins, whether actor output reaches the driver, and how
the kernel's socket addresses are read. That a local Ray of a run listens on 127.0.0.1 only (a Ray
started in a fresh interpreter) is tests/e2e/test_ray_session_loopback.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rospr_harness.config import RayConfig
from rospr_harness.ray_session import _join_kwargs, cluster_address, local_init_kwargs, run_ray
from helpers import REPO, proc_address



@pytest.fixture
def no_ray_env(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_ID", raising=False)
    return monkeypatch


def test_the_cluster_comes_from_the_setting_then_ray_address_then_the_job(no_ray_env):
    assert cluster_address(None) == (None, "a local Ray")
    no_ray_env.setenv("RAY_JOB_ID", "02000000")
    assert cluster_address(None)[0] == "auto" and "RAY_JOB_ID" in cluster_address(None)[1]
    no_ray_env.setenv("RAY_ADDRESS", " 127.0.0.1:6390 ")
    assert cluster_address(None) == ("127.0.0.1:6390", "RAY_ADDRESS")
    assert cluster_address("ray://127.0.0.1:10001") == ("ray://127.0.0.1:10001", "ray.address")
    no_ray_env.setenv("RAY_ADDRESS", "  ")
    assert cluster_address(None)[0] == "auto"  # a blank variable names no cluster; the job still does


def test_actor_output_reaches_the_driver_when_joining_and_not_for_a_local_ray():
    assert local_init_kwargs(1)["log_to_driver"] is False
    assert local_init_kwargs(1, log_to_driver=True)["log_to_driver"] is True
    assert _join_kwargs("127.0.0.1:6390")["log_to_driver"] is True
    assert _join_kwargs("127.0.0.1:6390", log_to_driver=False)["log_to_driver"] is False
    assert RayConfig().log_to_driver is None and RayConfig(log_to_driver=True).log_to_driver is True


def test_a_run_joins_the_cluster_ray_address_names_and_says_so(no_ray_env, caplog):
    """Nothing listens at the address: the run is refused at once, naming it (no private Ray started)."""
    pytest.importorskip("ray")
    no_ray_env.setenv("RAY_ADDRESS", "127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger="rospr_harness.ray_session"):
        with pytest.raises(RuntimeError, match=r"RAY_ADDRESS='127.0.0.1:1': no Ray cluster answers.*unset RAY_ADDRESS"):
            with run_ray(RayConfig(enabled=True)):
                pass
    assert "joining the Ray cluster at 127.0.0.1:1 (RAY_ADDRESS" in caplog.text


# -- a local Ray listens on loopback only ---------------------------------------------------------------

def _loopback(address: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def test_address_decoding_matches_hand_values():
    # 0100007F: 127.0.0.1 written as a little-endian word; an IPv4-mapped ::ffff:127.0.0.1 in tcp6
    assert proc_address("0100007F") == "127.0.0.1"
    assert proc_address("00000000") == "0.0.0.0"
    assert proc_address("0000000000000000FFFF00000100007F") == "::ffff:7f00:1"
    assert _loopback("::ffff:7f00:1") and _loopback("::1") and not _loopback("::") and not _loopback("0.0.0.0")


# -- class 3 (issue 32): a Ray connection that does not become a cluster within a bound says so -------------

@pytest.fixture
def silent_port():
    """A loopback port that accepts connections and never says a word."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


@pytest.fixture
def http_port():
    """A loopback port where another service (an HTTP/1 server) answers."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("port", ["silent_port", "http_port"])
def test_class3_a_port_that_is_not_a_ray_cluster_is_refused_within_the_bound(port, no_ray_env, request):
    pytest.importorskip("ray")
    from rospr_harness import ray_session

    no_ray_env.setattr(ray_session, "RAY_CONNECT_TIMEOUT_S", 0.5)
    address = f"127.0.0.1:{request.getfixturevalue(port)}"
    with pytest.raises(RuntimeError, match=rf"ray.address='{address}': {address} accepts connections but did not "
                                           r"answer as a Ray cluster within 0.5 s"):
        with ray_session.ray_started(address):
            pass


def test_class3_auto_naming_a_silent_port_is_refused_within_the_bound(silent_port, no_ray_env):
    """``auto`` resolves as Ray does (here through $RAY_ADDRESS, as a stale address would) and is checked."""
    pytest.importorskip("ray")
    from rospr_harness import ray_session

    no_ray_env.setattr(ray_session, "RAY_CONNECT_TIMEOUT_S", 0.5)
    no_ray_env.setenv("RAY_ADDRESS", f"127.0.0.1:{silent_port}")
    with pytest.raises(RuntimeError, match=rf"RAY_ADDRESS='auto': 127.0.0.1:{silent_port} accepts connections but "
                                           "did not answer as a Ray cluster"):
        with ray_session.ray_started("auto", source="RAY_ADDRESS"):
            pass


def test_class3_a_grpc_server_passes_the_handshake_check():
    """The check is the handshake a GCS completes: a real gRPC server passes it."""
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from rospr_harness.ray_session import _check_gcs

    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        _check_gcs(f"127.0.0.1:{port}", f"127.0.0.1:{port}", 30.0, "ray.address")
    finally:
        server.stop(None)


@pytest.mark.parametrize("listening", [True, False])
def test_class3_a_stale_auto_address_file_is_refused_within_the_bound(listening, silent_port, no_ray_env, tmp_path):
    """The address a stopped `ray start` left in <RAY_TMPDIR>/ray/ray_current_cluster: a port now silent
    (something else took it) or closed is refused at once, naming it, instead of ray.init waiting."""
    pytest.importorskip("ray")
    import socket

    import ray._private.services as services

    from rospr_harness import ray_session

    no_ray_env.setattr(ray_session, "RAY_CONNECT_TIMEOUT_S", 0.5)
    no_ray_env.setattr(services, "find_gcs_addresses", lambda: [])  # no GCS of this machine's other users
    no_ray_env.setenv("RAY_TMPDIR", str(tmp_path))
    if listening:
        port = silent_port
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, then closed: nothing listens there
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{port}\n")
    said = (rf"ray.address='auto': 127.0.0.1:{port} accepts connections but did not answer as a Ray cluster within 0.5 s"
            if listening else rf"ray.address='auto': no Ray cluster answers at 127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match=said):
        with ray_session.ray_started("auto"):
            pass
