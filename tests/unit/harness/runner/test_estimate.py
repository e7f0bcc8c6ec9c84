"""``rospr plan``'s view of the on-demand ONNX export (rospr_harness.runner.estimate) is the run's: an export
in the cache folder of this checkpoint that was made from other weights (model B's, same architecture)
is reported as exported again, and the run does export it again."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from rospr_harness.config import load_config

from unit.rospr.test_identity import perturbed_copy  # noqa: E402

pytestmark = pytest.mark.slow


def _config(model_dir, cache: Path):
    return load_config(None, tree={"model": {"name_or_path": str(model_dir)}, "backend": "onnxruntime",
                                   "onnxruntime": {"cache_dir": str(cache)},
                                   "tasks": [{"name": "builtin/sentiment", "limit": 4}]})


def test_plan_says_what_the_run_does_with_an_export_of_other_weights(tiny_model_dir, tmp_path, monkeypatch):
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr_harness.runner.estimate import _export_folder, _export_status, _scorer_identity
    from rospr_export.manifest import find_manifest
    from rospr.identity import weights_digest

    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ROSPR_DIGEST_MEMO", raising=False)
    cache = tmp_path / "onnx"
    model_b = perturbed_copy(tiny_model_dir, tmp_path / "tiny-b")
    a_cfg, b_cfg = _config(tiny_model_dir, cache), _config(model_b, cache)

    assert _scorer_identity(b_cfg)[1].startswith("exported on first use into ")
    a_folder = ensure_export(tiny_model_dir, None, "float32", cache)
    assert _export_folder(a_cfg, str(tiny_model_dir), None)[0] == a_folder  # the run's folder
    identity, status = _scorer_identity(a_cfg)
    assert status == f"reused {a_folder}" and identity["weights"] == weights_digest(tiny_model_dir)

    # model A's intact, sealed export placed where model B's belongs
    b_folder = _export_folder(b_cfg, str(model_b), None)[0]
    assert b_folder != a_folder
    shutil.copytree(a_folder, b_folder)
    identity, status = _scorer_identity(b_cfg)
    assert identity is None and status.startswith("exported again on first use")
    assert weights_digest(tiny_model_dir) in status and weights_digest(model_b) in status
    # ... and the run does export it again, from model B
    assert ensure_export(model_b, None, "float32", cache) == b_folder
    assert find_manifest(b_folder)["model_weights"] == weights_digest(model_b)
    assert _scorer_identity(b_cfg)[1] == f"reused {b_folder}"

    # the retriever's export: the same rule
    r_folder = _export_folder(b_cfg, None, str(model_b))[0]
    assert _export_status(b_cfg, str(model_b)) == f"retriever exported on first use into {r_folder}"
    shutil.copytree(ensure_export(None, tiny_model_dir, "float32", cache), r_folder)
    assert _export_status(b_cfg, str(model_b)).startswith("retriever exported again on first use")
    assert ensure_export(None, model_b, "float32", cache) == r_folder
    assert _export_status(b_cfg, str(model_b)) == f"retriever reused {r_folder}"


def test_plan_refuses_a_library_of_another_retriever_as_the_run_does(tiny_model_dir, tmp_path, monkeypatch):
    from rospr_harness.runner.estimate import _library_status
    from rospr.artifacts import ArtifactError
    from rospr.identity import retriever_identity
    from rospr.library import LibraryEntry, build_library
    from rospr.softprompt import PromptBank
    from unit.rospr.test_identity import HashEmbedder, WordIds

    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    model_b = perturbed_copy(tiny_model_dir, tmp_path / "tiny-b")
    ra = retriever_identity(tiny_model_dir)
    build_library(tmp_path / "lib", [LibraryEntry("s/a", "s", ("one two",))], HashEmbedder(), WordIds(), ra, "bank")
    bank = PromptBank.open(tmp_path / "bank", {"name": "tiny", "weights": "0" * 16})

    def config(retriever):
        return load_config(None, tree={"model": {"name_or_path": str(tiny_model_dir)},
                                       "tasks": [{"name": "builtin/sentiment"}],
                                       "rospr": {"retriever": str(retriever), "library": str(tmp_path / "lib")}})

    library, status = _library_status(config(tiny_model_dir), [], bank, [])
    assert library is not None or status.startswith("built")
    with pytest.raises(ArtifactError) as exc:
        _library_status(config(model_b), [], bank, [])
    assert ra["weights"] in str(exc.value) and retriever_identity(model_b)["weights"] in str(exc.value)
    assert "rospr.library=" in str(exc.value)
