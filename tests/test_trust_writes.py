"""Issue 18, class 6: nothing is written where it should not be.

A run writes its run directory, our caches (under the user cache root) and the data directory, and
nothing else: not onnxruntime's telemetry under ``~/.cache/Microsoft/``, not matplotlib's or torch's
caches under ``$HOME`` or the temporary folder (``harness.thirdparty``). A ``rospr serve`` killed with
SIGKILL leaves its work folder; the next start sweeps it (``harness.serve.sweep_stale_workdirs``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
# every variable that would move a cache away from $HOME's default (the test wants the defaults)
_CACHE_VARS = ("ROSPR_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "ROSPR_ONNX_CACHE", "ROSPR_UNIT_CACHE",
               "ROSPR_DIGEST_MEMO", "ROSPR_DATA_CACHE", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME",
               "ORT_DISABLE_TELEMETRY", "ROSPR_SERVE_STATE")


def _isolated_env(root: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _CACHE_VARS}
    env.update(HOME=str(root / "home"), TMPDIR=str(root / "tmp"), PYTHONPATH=str(REPO),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def written_since(marker: Path, roots: list[Path]) -> list[Path]:
    """Every file and folder under ``roots`` created or changed after ``marker`` (``find -newer``)."""
    since = marker.stat().st_mtime
    out = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(folder) / name
                try:
                    if p.lstat().st_mtime > since:
                        out.append(p)
                except FileNotFoundError:
                    continue
    return out


def test_a_run_writes_only_its_run_directory_our_caches_and_the_data_directory(tiny_model_dir, tmp_path):
    for d in ("home", "tmp", "cwd", "data"):
        (tmp_path / d).mkdir()
    cfg = tmp_path / "cwd" / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name_or_path": str(tiny_model_dir)}, "backend": "onnxruntime",  # onnxruntime: its telemetry
        "tasks": [{"name": "builtin/animals", "limit": 4}], "scoring": {"batch_size": 4},
        "cache": {"enabled": True}, "data": {"data_dir": str(tmp_path / "data")}}))
    marker = tmp_path / "marker"
    marker.write_text("")
    time.sleep(0.05)  # mtimes after the marker's
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(cfg), "--out", str(tmp_path / "cwd" / "run")],
                          cwd=tmp_path / "cwd", env=_isolated_env(tmp_path), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    allowed = [tmp_path / "cwd" / "run", tmp_path / "home" / ".cache" / "rospr", tmp_path / "data"]

    def fine(p: Path) -> bool:
        # a path inside an allowed folder, or a folder on the way to one (its mtime moves with it)
        return any(p == a or a in p.parents or p in a.parents for a in allowed)

    stray = [str(p) for p in written_since(marker, [tmp_path / "home", tmp_path / "tmp", tmp_path / "cwd"])
             if not fine(p)]
    assert stray == []
    assert (tmp_path / "cwd" / "run" / "results.json").is_file()
    assert not (tmp_path / "home" / ".cache" / "Microsoft").exists()


def test_importing_the_harness_then_onnxruntime_and_matplotlib_writes_nothing_under_home(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    code = ("import harness, onnxruntime, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
            "plt.figure(); plt.savefig(__import__('os').devnull, format='png')")
    env = _isolated_env(tmp_path)
    env["ROSPR_HOME"] = str(tmp_path / "rospr-home")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300, cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "home").rglob("*")) == []
    assert (tmp_path / "rospr-home" / "matplotlib").is_dir()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_serve_sweeps_the_work_folders_its_dead_predecessors_left(tmp_path):
    from harness.serve import OWNER_FILE, WORKDIR_PREFIX, _start_time, sweep_stale_workdirs

    def folder(name: str, owner: dict | None) -> Path:
        d = tmp_path / f"{WORKDIR_PREFIX}{name}"
        (d / "backends").mkdir(parents=True)
        if owner is not None:
            (d / OWNER_FILE).write_text(json.dumps(owner))
        return d

    dead = folder("dead", {"pid": _dead_pid(), "start": "1"})
    reused = folder("reused", {"pid": os.getpid(), "start": "0"})  # our pid now, another process then
    alive = folder("alive", {"pid": os.getpid(), "start": _start_time(os.getpid())})
    unowned = folder("unowned", None)  # another version's, or one being made: left alone
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / OWNER_FILE).write_text(json.dumps({"pid": _dead_pid(), "start": "1"}))

    assert sorted(sweep_stale_workdirs(tmp_path)) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert alive.is_dir() and unowned.is_dir() and other.is_dir()
