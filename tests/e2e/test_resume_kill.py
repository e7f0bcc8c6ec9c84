"""A whole ``rospr run`` (a subprocess, the real onnxruntime scorer) SIGKILLed mid-way and then resumed
equals an uninterrupted run, unit by unit, with no unit lost or counted twice, and leaves no temporary
file. (The other resume and unit-cache cases, in process with the fake scorer:
tests/unit/harness/test_runner_resume.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import resume_settings, same_units

from rospr_harness.schema import read_results
from rospr_harness.runner import run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference(run_config, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-kill")
    settings = resume_settings(root)
    run_config.write(root / "config.yaml", **settings)
    res = run(run_config(**settings), root / "uninterrupted")
    return settings, root, res


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(reference, run_config, tmp_path):
    settings, root, ref = reference
    total = len(ref.units)
    out = tmp_path / "killed"
    # its own unit cache: the run computes its units (a cached unit does not rewrite results.json, so a run
    # of cached units is never caught half-way)
    env = {**os.environ, "ROSPR_UNIT_CACHE": str(tmp_path / "units")}
    proc = subprocess.Popen([sys.executable, "-m", "rospr_harness.cli", "run", str(root / "config.yaml"), "--out", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if len(json.loads((out / "results.json").read_text())["units"]) >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    partial = read_results(out / "results.json")
    assert 2 <= len(partial.units) < total

    res = run(run_config(**settings), out, resume=True)
    ex = res.execution.model_dump()
    assert ex["resumed"] == len(partial.units) and ex["resumed"] + ex["computed"] == total, ex
    same_units(out, root / "uninterrupted")
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".*.tmp"))
