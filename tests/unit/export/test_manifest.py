"""The export manifest is sealed as a whole, and its validation figures must show a passed check.

Every field of a real export's manifest (scorer and retriever graphs in one cache) is edited in turn:
``rospr verify`` fails on each. A careful forger who reseals the manifest after editing a validation
figure still fails, on the figure itself. A byte flipped in a graph is found by the stat-keyed check
even with the mtime put back, and an explicit export with a flipped byte is refused, naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from helpers import flip_a_weight
from typer.testing import CliRunner

import rospr.artifacts as digests

from rospr_harness.cli import app
from rospr.artifacts import seal
from rospr_export.manifest import ExportIntegrityError, verify_export
from rospr_export.validate import HALF_TOLERANCE, SCORER_TOLERANCE


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    from rospr_harness.backends.onnxruntime_backend import ensure_export

    cache = tmp_path_factory.mktemp("onnx")
    return {"t0_scorer": ensure_export(tiny_model_dir, None, "float32", cache),
            "retriever": ensure_export(None, tiny_model_dir, "float32", cache)}


def leaves(value, path=()):
    """(path, value) of every scalar in a JSON value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, (*path, i))
    else:
        yield path, value


def edited(value):
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if value is None:
        return "x"
    return str(value) + "x"


def put(manifest: dict, path: tuple, value) -> dict:
    m = json.loads(json.dumps(manifest))
    node = m
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return m


def copy_of(folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "export"
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns(".digests.json"))
    return out


def verify_cli(folder: Path):
    return CliRunner().invoke(app, ["verify", str(folder)])


@pytest.mark.parametrize("graph", ["t0_scorer", "retriever"])
def test_every_field_is_sealed(exported, graph, tmp_path):
    folder = copy_of(exported[graph], tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert verify_cli(folder).exit_code == 0
    paths = [p for p, _ in leaves(manifest) if p != ("manifest_hash",)]
    assert any(p[-1] == "tolerance" for p in paths) and any(p[-1] == "max_abs_diff" for p in paths)
    for path, value in leaves(manifest):
        if path == ("manifest_hash",):
            continue
        (folder / "manifest.json").write_text(json.dumps(put(manifest, path, edited(value))))
        res = verify_cli(folder)
        assert res.exit_code == 1, (path, res.output)
        with pytest.raises(ExportIntegrityError):
            verify_export(folder, full=True)
    (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "manifest_hash"}))
    assert "before rospr sealed its manifests" in verify_cli(folder).output


def _resealed(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(seal(manifest)))


@pytest.mark.parametrize("graph, change, field", [
    ("t0_scorer", lambda v: v.update(tolerance=v["tolerance"] * 10), "tolerance"),
    ("t0_scorer", lambda v: v.update(tolerance=HALF_TOLERANCE), "tolerance"),
    ("retriever", lambda v: v.update(tolerance=SCORER_TOLERANCE), "tolerance"),
    ("t0_scorer", lambda v: v.update(max_abs_diff=v["max_abs_diff"] / 2), "max_abs_diff"),
    ("retriever", lambda v: v.update(max_abs_diff=0.0), "max_abs_diff"),
    # a graph that failed its check, with figures that agree with each other
    ("t0_scorer", lambda v: v.update(per_shape=[1.0] * len(v["per_shape"]), max_abs_diff=1.0), "above the tolerance"),
    ("retriever", lambda v: v.update(per_shape=[*v["per_shape"][:-1], 1e-3],
                                     max_abs_diff=max(*v["per_shape"][:-1], 1e-3)), "above the tolerance"),
    ("t0_scorer", lambda v: v.update(per_shape=v["per_shape"][:1], max_abs_diff=v["per_shape"][0]), "per_shape"),
    ("t0_scorer", lambda v: v.update(shapes=v["shapes"][:1]), "shapes"),
    ("retriever", lambda v: v.update(graph="t0_scorer"), "graph"),
])
def test_resealed_validation_figures_are_checked(exported, graph, change, field, tmp_path):
    folder = copy_of(exported[graph], tmp_path)
    _resealed(folder, lambda m: change(m["graphs"][graph]["validation"]))
    res = verify_cli(folder)
    assert res.exit_code == 1 and field in res.output, res.output
    with pytest.raises(ExportIntegrityError, match=field):
        verify_export(folder)


def test_a_half_precision_tolerance_is_refused_on_a_float32_export(exported, tmp_path):
    """The tolerance follows the export's dtype: relabelling the dtype does not loosen it either."""
    folder = copy_of(exported["t0_scorer"], tmp_path)

    def relabel(m):
        m["dtype"] = "float16"
        m["graphs"]["t0_scorer"]["validation"]["tolerance"] = SCORER_TOLERANCE

    _resealed(folder, relabel)
    with pytest.raises(ExportIntegrityError, match="tolerance"):
        verify_export(folder)


def test_each_graph_and_dtype_has_its_tolerance():
    from rospr_export.validate import RETRIEVER_TOLERANCE, expected_tolerance

    assert expected_tolerance("retriever", "float16", None) == RETRIEVER_TOLERANCE  # the retriever is float32
    assert expected_tolerance("t0_scorer", "float32", None) == SCORER_TOLERANCE
    assert expected_tolerance("t0_scorer", "float32", "float16") == HALF_TOLERANCE  # a float16 prompt input
    assert expected_tolerance("t0_scorer", "bfloat16", "float32") == HALF_TOLERANCE
    assert expected_tolerance("t0_scorer", "float16", None) == HALF_TOLERANCE


@pytest.fixture
def remembered(exported, tmp_path, monkeypatch):
    """A private copy of the scorer export, verified once so that its digests are remembered (stat key
    of now)."""
    folder = tmp_path / "onnx" / exported["t0_scorer"].name
    shutil.copytree(exported["t0_scorer"], folder)
    monkeypatch.setattr(digests, "RACY_S", -1.0)  # remember at once (the copy is fresh)
    verify_export(folder)
    assert str((folder / "t0_scorer.onnx").resolve()) in json.loads((folder / ".digests.json").read_text())["files"]
    time.sleep(0.05)  # past the ctime tick of the copy, so the flip below gets a ctime of its own
    return folder


def test_the_stat_keyed_check_alone_finds_a_flip_with_the_mtime_restored(remembered):
    graph = remembered / "t0_scorer.onnx"
    before = os.stat(graph)
    flip_a_weight(graph)
    os.utime(graph, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ExportIntegrityError, match=r"t0_scorer\.onnx: sha256 .* differs from .*manifest\.json"):
        verify_export(remembered)


def test_an_explicit_export_with_a_flipped_byte_is_refused_by_name(exported, tmp_path):
    from rospr_export.repository import write_repository

    export_dir = tmp_path / "export"
    shutil.copytree(exported["t0_scorer"], export_dir)
    r = CliRunner().invoke(app, ["verify", str(export_dir), str(exported["t0_scorer"].parent)])
    assert r.exit_code == 0, r.output
    flip_a_weight(export_dir / "t0_scorer.onnx")
    with pytest.raises(ExportIntegrityError, match=str(export_dir / "t0_scorer.onnx")):
        write_repository(export_dir, tmp_path / "repo")
    assert not (tmp_path / "repo" / "triton").exists()
    r = CliRunner().invoke(app, ["verify", str(export_dir)])
    said = " ".join(r.output.split())
    assert r.exit_code == 1 and "Traceback" not in said and "failed:" in said, said
    assert "t0_scorer.onnx: sha256" in said and "differs from" in said, said
