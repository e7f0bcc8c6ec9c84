"""Issue 10, item 5: a local Ray of a run listens on 127.0.0.1 only, without dashboard or usage stats.

The listening sockets are read from the kernel (``/proc/net/tcp{,6}`` joined with each process's
``/proc/<pid>/fd`` socket inodes), not from Ray, for every process of the Ray session: the driver and
all its descendants (GCS, raylet, agents, workers, actors). Ray is started in a fresh interpreter, so
that the test session's own Ray (``ray_cluster`` fixture) is not the one looked at.
"""

from __future__ import annotations

import json
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
    from harness.runner.ray_executor import ray_session

    cfg = load_config(None, tree={"tasks": ["builtin/animals"], "ray": {"enabled": True, "num_cpus": 1}})
    with ray_session(cfg) as use_ray:
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
