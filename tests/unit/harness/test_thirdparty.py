"""harness/thirdparty.py: importing the harness points the third-party caches (onnxruntime's telemetry,
matplotlib's and torch's caches) under ours, so nothing is written under ``$HOME``."""

from __future__ import annotations

import subprocess
import sys

from helpers import isolated_env


def test_importing_the_harness_then_onnxruntime_and_matplotlib_writes_nothing_under_home(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    code = ("import harness, onnxruntime, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
            "plt.figure(); plt.savefig(__import__('os').devnull, format='png')")
    env = isolated_env(tmp_path)
    env["ROSPR_HOME"] = str(tmp_path / "rospr-home")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "home").rglob("*")) == []
    assert (tmp_path / "rospr-home" / "matplotlib").is_dir()
