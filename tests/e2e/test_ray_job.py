"""`ray job submit -- rospr run ...` on a loopback Ray cluster that the test starts (harness/ray_session.py).

A head node (``ray start --head --block``) on 127.0.0.1 with its dashboard (the Jobs API) on 127.0.0.1 and
every other port of its picked free, Ray's token authentication on (``RAY_AUTH_MODE=token`` with a token
made for this test in ``RAY_AUTH_TOKEN``: Ray 2.60 turns it on by itself for a ``ray.init()`` that starts
its own Ray, but for ``ray start`` only when a token is already there). ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps 127.0.0.1 as
the node IP (Ray swaps that spelling of loopback for the host's routable address otherwise; see the
module docstring of ``rospr_harness.ray_session``). Then:

- a submission without the token is refused (the cluster is not open to whoever reaches the port);
- a small run (the tiny model, builtin tasks, ``ray.enabled: auto`` and no ``ray.address``) submitted
  with the token succeeds; inside the job ``rospr run`` joins the job's cluster and says so in one line;
- the run's scoring actors were on that cluster: Ray's state API lists them under the job's id, on the
  head's node, and results.json's execution names that node and 127.0.0.1; actor output reaches the job's
  logs (``ray.log_to_driver`` is on when joining).

The head is stopped by its pid in a ``finally`` (its ``--block`` process stops its node), and anything of
it still alive by pid: never ``ray stop``, which would stop every Ray of this user.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from helpers import stop_ray_node, WHOLE_PROCESS_TIMEOUT_S

pytestmark = pytest.mark.slow
VENV_BIN = Path(sys.executable).parent
# the cluster's nodes and the actors of a submitted job (by submission id), as JSON on the last line
STATE = """
import json, sys
from ray.job_submission import JobSubmissionClient
from ray.util.state import list_actors, list_nodes
url, submission = sys.argv[1], sys.argv[2]
job_id = JobSubmissionClient(url).get_job_info(submission).job_id
nodes = [{"id": n.node_id, "ip": n.node_ip} for n in list_nodes(address=url)]
actors = [{"class": a.class_name, "node": a.node_id, "pid": a.pid, "state": a.state}
          for a in list_actors(address=url, filters=[("job_id", "=", job_id)], detail=True)]
print(json.dumps({"job_id": job_id, "nodes": nodes, "actors": actors}))
"""


def _ports(n: int) -> list[int]:
    from rospr_harness.serve import free_port

    ports: list[int] = []
    for _ in range(n):
        ports.append(free_port(avoid=tuple(ports)))
    return ports


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (401 without a token): it is up
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout_s:.0f}s")


def test_ray_job_submit_of_a_run_joins_the_loopback_cluster(tiny_model_dir, tmp_path, tmp_path_factory):
    ray_bin = VENV_BIN / "ray"
    if not ray_bin.exists():
        pytest.skip("no `ray` command in this environment")
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_JOB_ID", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    gcs, dashboard, agent_http, agent_grpc, metrics, runtime_env, client, manager = _ports(8)
    temp = Path(tempfile.mkdtemp(prefix="rj-", dir="/tmp"))  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env}",
         f"--ray-client-server-port={client}", f"--node-manager-port={manager}", "--num-cpus=2",
         "--disable-usage-stats", f"--temp-dir={temp}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_http(f"{url}/api/version", 90)

        # without the token: refused
        no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
        no_token["HOME"] = str(tmp_path / "home")  # no ~/.ray/auth_token to fall back on
        refused = subprocess.run([str(ray_bin), "job", "submit", "--address", url, "--", "true"], env=no_token,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "Authentication" in refused.stdout + refused.stderr, refused

        run_dir = tmp_path / "run"
        config = tmp_path / "job.yaml"
        config.write_text(yaml.safe_dump({
            "model": {"name_or_path": str(tiny_model_dir)},
            "backend": "onnxruntime",
            "onnxruntime": {"cache_dir": str(tmp_path_factory.getbasetemp() / "trust-onnx-cache")},
            "method": ["t0"],
            "tasks": [{"name": "builtin/sentiment", "limit": 8, "prompts": ["review_sentiment"]},
                      {"name": "builtin/topic", "limit": 8, "prompts": ["classify_topic"]}],
            "scoring": {"batch_size": 4},
            "cache": {"enabled": False},
            "ray": {"enabled": "auto", "scorers": 2, "num_cpus_per_scorer": 0.5},
        }))
        submission = f"rospr-test-{secrets.token_hex(4)}"
        # the dashboard answers before the head's job agent has registered with it: until then a submission
        # is answered "No available agent to submit job, please try again later" (HTTP 500) and not created
        deadline = time.monotonic() + 120
        while True:
            job = subprocess.run(
                [str(ray_bin), "job", "submit", "--address", url, "--submission-id", submission,
                 "--runtime-env-json", json.dumps({"env_vars": {"PYTHONUNBUFFERED": "1"}}), "--",
                 str(VENV_BIN / "rospr"), "run", str(config), "--out", str(run_dir)],
                env=env, capture_output=True, text=True, timeout=WHOLE_PROCESS_TIMEOUT_S)
            logs = job.stdout + job.stderr
            if "No available agent to submit job" not in logs or time.monotonic() > deadline:
                break
            time.sleep(2)
        assert job.returncode == 0 and f"Job '{submission}' succeeded" in logs, logs[-6000:]
        assert "joining the Ray cluster at 127.0.0.1:" in " ".join(logs.split()), logs[-6000:]

        # Ray's state API, asked with the token (in a process of its own: Ray reads RAY_AUTH_MODE once)
        state = subprocess.run([sys.executable, "-c", STATE, url, submission], env=env, capture_output=True,
                               text=True, timeout=120)
        assert state.returncode == 0, state.stderr[-4000:]
        seen = json.loads(state.stdout.splitlines()[-1])
        assert [n["ip"] for n in seen["nodes"]] == ["127.0.0.1"], seen
        head_node = seen["nodes"][0]["id"]
        scorers = [a for a in seen["actors"] if a["class"] == "ScoringActor"]
        assert len(scorers) == 2 and all(a["node"] == head_node for a in scorers), seen
        # actor output reached the job's logs (log_to_driver), under the actors' own pids; what they print
        # is whatever Python writes to their stderr (today: a deprecation warning of Ray's actor info call)
        printed = {int(m) for m in re.findall(r"\(ScoringActor pid=(\d+)\)", logs)}
        assert printed and printed <= {a["pid"] for a in scorers}, (printed, scorers, logs[-4000:])

        results = json.loads((run_dir / "results.json").read_text())
        execution = results["execution"]
        assert execution["executor"] == "ray" and execution["scorers"] == 2, execution
        assert set(execution["nodes"]) == {head_node}, execution  # node id -> ip, batches
        assert {n["ip"] for n in execution["nodes"].values()} == {"127.0.0.1"}, execution
        assert len(results["units"]) == 2 and all(u["n"] == 8 for u in results["units"])
    finally:
        stop_ray_node(head)
        shutil.rmtree(temp, ignore_errors=True)
