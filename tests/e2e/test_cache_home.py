"""One user cache root (rospr/cachedirs.py): a run started from another folder reuses the same export
(two whole `rospr run` in subprocesses, from two folders)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

CACHE_VARS = ("ROSPR_ONNX_CACHE", "ROSPR_UNIT_CACHE", "ROSPR_DIGEST_MEMO")


def rospr_run(config: Path, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "run", str(config), "--out", str(cwd / "run")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def exports(onnx_root: Path) -> dict[str, tuple[int, int]]:
    """Each cached export's folder name, with its manifest's inode and mtime (a re-export replaces it)."""
    out = {}
    for manifest in sorted(onnx_root.glob("*/manifest.json")):  # <onnx cache>/<export key>/manifest.json
        st = manifest.stat()
        out[str(manifest.relative_to(onnx_root))] = (st.st_ino, st.st_mtime_ns)
    return out


def test_runs_from_two_folders_share_one_export_cache(tiny_model_dir, tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    env["ROSPR_HOME"] = str(home)
    env["ROSPR_TRACEBACK"] = "1"
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model_dir)}, "backend": "onnxruntime", "method": ["t0"],
        "tasks": [{"name": "builtin/sentiment", "limit": 3, "prompts": ["review_sentiment"]}],
        "cache": {"enabled": True}}), encoding="utf-8")
    first, second = tmp_path / "a", tmp_path / "b" / "elsewhere"
    first.mkdir()
    second.mkdir(parents=True)

    rospr_run(config, first, env)
    made = exports(home / "onnx")
    assert len(made) == 1, made  # the export went under the user cache root ...
    assert not (first / ".cache").exists()  # ... not under the folder the run started in
    assert (home / "units").is_dir() and (home / "digests.json").is_file()

    proc = rospr_run(config, second, env)
    assert exports(home / "onnx") == made  # the same export, untouched: not exported again
    assert "exporting" not in proc.stderr
    assert not (second / ".cache").exists()
    results = json.loads((second / "run" / "results.json").read_text(encoding="utf-8"))
    assert all(u["cached"] for u in results["units"])  # and the unit cache is the same one too
