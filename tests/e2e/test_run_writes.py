"""A whole `rospr run` writes its run directory, our caches (under the user cache root) and the data
directory, and nothing else: not onnxruntime's telemetry under ``~/.cache/Microsoft/``, not matplotlib's
or torch's caches under ``$HOME`` or the temporary folder (``rospr_harness.thirdparty``); a unit cache that
cannot be written is a warning and the run goes on."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from helpers import cli, isolated_env, written_since


def test_a_run_writes_only_its_run_directory_our_caches_and_the_data_directory(run_config, tmp_path):
    for d in ("home", "tmp", "cwd", "data"):
        (tmp_path / d).mkdir()
    cfg = run_config.write(tmp_path / "cwd" / "c.yaml", backend="onnxruntime",  # onnxruntime: its telemetry
                           tasks=[{"name": "builtin/animals", "limit": 4}], scoring={"batch_size": 4},
                           cache={"enabled": True}, data={"data_dir": str(tmp_path / "data")})
    marker = tmp_path / "marker"
    marker.write_text("")
    time.sleep(0.05)  # mtimes after the marker's
    proc = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "run", str(cfg), "--out", str(tmp_path / "cwd" / "run")],
                          cwd=tmp_path / "cwd", env=isolated_env(tmp_path), capture_output=True, text=True,
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


def test_unwritable_unit_cache_is_a_warning_and_the_run_goes_on(run_config, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = run_config.write(tmp_path / "c.yaml", backend="torch", tasks=[{"name": "builtin/animals", "limit": 4}],
                           scoring={"batch_size": 4}, cache={"enabled": True, "dir": str(blocker / "cache")})
    res = cli("run", cfg, "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    text = " ".join(res.output.split())  # rich wraps the log line at the terminal's width
    assert "unit cache" in text and "cannot be written" in text, res.output
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(results["units"]) == 3  # builtin/animals has three prompts: all written
