"""export/isolated.py: the export where the running environment cannot import Optimum.

The environment itself (pip over the registry) is made by `rospr export-env` in .ci/run's transformers 5
environment, never by a test; here the child protocol runs with the running interpreter standing in for
it, and the export it makes is compared with the in-process one."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from rospr_export import isolated


def test_why_this_environment_cannot_export(monkeypatch):
    monkeypatch.delenv(isolated.CHILD, raising=False)
    monkeypatch.setattr(isolated.metadata, "version", lambda name: "5.23.0")
    assert "transformers 5.23.0 is installed and optimum-onnx needs < 4.58" == isolated.unable_here()
    monkeypatch.setattr(isolated.metadata, "version", lambda name: "4.57.6")
    monkeypatch.setattr(isolated.util, "find_spec", lambda name: None)
    assert "optimum-onnx is not installed" in isolated.unable_here()
    monkeypatch.setenv(isolated.CHILD, "1")
    assert isolated.unable_here() is None  # the child exports with what it has


def test_the_requirements_pin_every_file_by_sha256():
    text = isolated.REQUIREMENTS.read_text()
    reqs = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", text, flags=re.M)
    assert dict(reqs)["transformers"].startswith("4.57") and "optimum-onnx" in dict(reqs)
    blocks = re.split(r"\n(?=[A-Za-z])", text.split("\n", 5)[-1].strip())
    assert len(blocks) == len(reqs) and all(re.search(r"--hash=sha256:[0-9a-f]{64}", b) for b in blocks)


def test_the_key_follows_the_requirements(tmp_path, monkeypatch):
    first = isolated.env_key()
    other = tmp_path / "requirements.txt"
    other.write_text(isolated.REQUIREMENTS.read_text() + "\n# another pin\n")
    monkeypatch.setattr(isolated, "REQUIREMENTS", other)
    assert isolated.env_key() != first


def test_an_environment_not_made_yet_is_refused_offline_naming_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSPR_EXPORT_ENV", str(tmp_path / "envs"))
    monkeypatch.setenv(isolated.NO_INSTALL, "1")
    with pytest.raises(isolated.ExportEnvironmentError, match="run `rospr export-env` first"):
        isolated.environment()


# slow: a whole export in the other environment (27 s on 2 loaded cores)
@pytest.mark.slow
def test_the_export_made_in_the_other_environment_is_the_same_export(tiny_model_dir, tmp_path, monkeypatch):
    """The child protocol end to end (the running interpreter stands in for the export environment)
    against an export made in process: the same identity, weights, config and validation."""
    from rospr_export.export import export_models

    if isolated.unable_here() is not None:
        pytest.skip(f"needs an environment that exports in process ({isolated.unable_here()})")
    here = export_models(tiny_model_dir, tmp_path / "here")
    monkeypatch.setattr(isolated, "environment", lambda: Path(sys.executable))
    there = isolated.export_elsewhere("a test", dict(model_name_or_path=str(tiny_model_dir),
                                                     out_dir=str(tmp_path / "there")))
    for key in ("model", "model_weights", "model_config", "export_version", "opset", "dtype"):
        assert there.manifest[key] == here.manifest[key], key
    assert there.manifest["files"] == here.manifest["files"]  # the same graph, byte for byte
    assert [v.max_abs_diff <= v.tolerance for v in there.validations] == [True]


# slow: a child interpreter of the other environment (15 s on 2 loaded cores)
@pytest.mark.slow
def test_a_refusal_in_the_child_is_the_same_error_here(tmp_path, monkeypatch):
    """One of ours (here: no checkpoint) comes back as its own class and message; anything else as
    ExportEnvironmentError with the child's last lines."""
    from rospr.errors import RosprError

    monkeypatch.setattr(isolated, "environment", lambda: Path(sys.executable))
    missing = tmp_path / "no-such-model"
    with pytest.raises(RosprError, match=str(missing)) as err:
        isolated.export_elsewhere("a test", dict(model_name_or_path=str(missing), out_dir=str(tmp_path / "out")))
    assert not isinstance(err.value, isolated.ExportEnvironmentError)
    with pytest.raises(isolated.ExportEnvironmentError, match=r"failed \(exit 1\)"):
        isolated.export_elsewhere("a test", dict(model_name_or_path=str(missing), no_such_argument=1,
                                                 out_dir=str(tmp_path / "out")))
