"""harness/ray_session.py: a local Ray of a run listens on 127.0.0.1 only, without dashboard or usage
statistics (a whole local Ray session, started in a fresh interpreter; moved from
tests/unit/harness/test_ray_session.py).

The listening sockets are read from the kernel (``/proc/net/tcp{,6}`` joined with each process's
``/proc/<pid>/fd`` socket inodes), not from Ray, for every process of the Ray session: the driver and
all its descendants (GCS, raylet, agents, workers, actors). Ray is started in a fresh interpreter, so
that the test session's own Ray (``ray_cluster`` fixture) is not the one looked at."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import WHOLE_PROCESS_TIMEOUT_S
from unit.harness.test_ray_session import _loopback

REPO = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]  # helpers.py, which the script imports

LOOPBACK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from rospr_harness.config import load_config
    from rospr_harness.ray_session import run_ray

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
        from helpers import descendants, listening_sockets

        pids = [os.getpid()] + descendants(os.getpid())
        out = {"use_ray": use_ray, "actor_pid": actor_pid, "pids": pids,
               "node_ip": ray.util.get_node_ip_address(),
               "usage_stats": usage_lib.usage_stats_enabled(),
               "sockets": listening_sockets(pids)}
    print("RESULT " + json.dumps(out))
    """
)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_local_ray_of_a_run_listens_on_loopback_only():
    pytest.importorskip("ray")
    proc = subprocess.run([sys.executable, "-c", LOOPBACK_SCRIPT, str(TESTS)], cwd=REPO,
                          capture_output=True, text=True, timeout=WHOLE_PROCESS_TIMEOUT_S)
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
