"""Class 2: a writer never overwrites what is not ours (``rospr.destination``, and each command that
writes where the user points)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from helpers import cli
from rospr.destination import (MARKER, SYNTHETIC_ROWS, ForeignDestination, claim_file, claim_folder, is_synthetic,
                               marker_kind)

FIX = "choose a new or empty --out"


def write_into(folder: Path, kind: str = "thing", **kw) -> None:
    with claim_folder(folder, kind, FIX, **kw) as out:
        (out / "config.json").write_text("{}")


# -- the rule ----------------------------------------------------------------------------------------


def test_class_2_an_absent_or_empty_folder_is_claimed_and_marked(tmp_path):
    write_into(tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    write_into(tmp_path / "empty")
    for folder in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        assert marker_kind(folder) == "thing" and (folder / "config.json").read_text() == "{}"


def test_class_2_a_folder_of_ours_from_an_earlier_run_is_replaced(tmp_path):
    write_into(tmp_path / "out")
    (tmp_path / "out" / "config.json").write_text("old")
    write_into(tmp_path / "out")
    assert (tmp_path / "out" / "config.json").read_text() == "{}"


def test_class_2_a_folder_with_one_unrelated_file_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ForeignDestination, match=rf"{out}: not a folder rospr wrote \(it holds notes.txt.*{FIX}"):
        write_into(out)
    assert sorted(os.listdir(out)) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_class_2_a_folder_of_another_kind_of_ours_is_refused(tmp_path):
    write_into(tmp_path / "out", kind="library")
    with pytest.raises(ForeignDestination, match="it is rospr's library, not a tiny-model"):
        write_into(tmp_path / "out", kind="tiny-model")


def test_class_2_a_symlinked_destination_is_refused_and_its_target_untouched(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "out").symlink_to(target)
    with pytest.raises(ForeignDestination, match="is a symbolic link .*never through a link"):
        write_into(tmp_path / "out")
    assert os.listdir(target) == []
    write_into(target)  # the folder itself, named directly, is fine (it is empty)


def test_class_2_a_planted_marker_link_does_not_make_a_folder_ours(tmp_path):
    ours = tmp_path / "ours"
    write_into(ours)
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.faiss").write_text("the user's")
    (out / MARKER).symlink_to(ours / MARKER)
    with pytest.raises(ForeignDestination):
        write_into(out)
    assert (out / "index.faiss").read_text() == "the user's"


def test_class_2_a_file_where_a_folder_is_expected_is_refused(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(ForeignDestination, match="is a file, not a folder"):
        write_into(tmp_path / "out")
    assert (tmp_path / "out").read_text() == "a file"


def test_class_2_the_proof_of_an_earlier_unmarked_output_is_accepted(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("ours")
    write_into(out, ours=lambda f: (f / "manifest.json").read_text() == "ours")
    assert marker_kind(out) == "thing"


def test_class_2_a_second_writer_of_one_folder_waits_for_the_first(tmp_path):
    out, order = tmp_path / "out", []

    def second():
        with claim_folder(out, "thing", FIX):
            order.append("second")

    with claim_folder(out, "thing", FIX):
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.3)
        order.append("first")
    other.join(10)
    assert order == ["first", "second"]


def test_class_2_a_marker_that_cannot_be_written_names_itself_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A full disk at the marker (an OSError without a file name, as a failed write has): the error
    names the marker, so the CLI's message names the destination, and no temporary file stays."""
    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError, match="No space left") as failed:
        write_into(tmp_path / "out")
    assert failed.value.filename == str(tmp_path / "out" / MARKER)
    assert sorted(os.listdir(tmp_path / "out")) == [".rospr-owned.lock"]


def test_class_2_a_file_destination_is_ours_only_when_we_wrote_it_and_never_an_input(tmp_path):
    ours = lambda p: json.loads(p.read_text()).get("kind") == "cmp"  # noqa: E731
    assert claim_file(tmp_path / "new.json", FIX, ours) == tmp_path / "new.json"
    (tmp_path / "old.json").write_text('{"kind": "cmp"}')
    assert claim_file(tmp_path / "old.json", FIX, ours) == tmp_path / "old.json"
    (tmp_path / "user.json").write_text('{"kind": "theirs"}')
    with pytest.raises(ForeignDestination, match="not a file rospr wrote"):
        claim_file(tmp_path / "user.json", FIX, ours)
    with pytest.raises(ForeignDestination, match="which this command reads"):
        claim_file(tmp_path / "old.json", FIX, ours, inputs=[tmp_path / "old.json"])
    (tmp_path / "link.json").symlink_to(tmp_path / "old.json")
    with pytest.raises(ForeignDestination, match="symbolic link"):
        claim_file(tmp_path / "link.json", FIX, ours)


# -- each command, through the CLI -------------------------------------------------------------------


def foreign_folder(tmp_path: Path, *names: str) -> Path:
    out = tmp_path / "users"
    for name in names:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("the user's own")
    return out


def assert_refused(res, out: Path, *names: str) -> None:
    assert res.exit_code != 0 and isinstance(res.exception, (ForeignDestination, SystemExit)), res.output
    assert str(out) in res.output and "new or empty --out" in res.output, res.output
    for name in names:
        assert (out / name).read_text() == "the user's own"


def test_class_2_bank_export_peft_keeps_the_users_adapter(tmp_path):
    out = foreign_folder(tmp_path, "adapter_config.json", "adapter_model.safetensors")
    res = cli("bank", "export-peft", "--bank", tmp_path / "no-bank", "--out", out)
    assert_refused(res, out, "adapter_config.json", "adapter_model.safetensors")


def test_class_2_library_build_keeps_the_users_index(tmp_path, tiny_model_dir):
    out = foreign_folder(tmp_path, "index.faiss")
    res = cli("library", "build", "--prompts", tmp_path / "no-bank", "--retriever", tiny_model_dir, "--out", out)
    assert_refused(res, out, "index.faiss")


def test_class_2_tiny_keeps_the_users_config_and_replaces_its_own(tmp_path):
    out = foreign_folder(tmp_path, "config.json")
    assert_refused(cli("tiny", "--out", out), out, "config.json")
    ours = tmp_path / "tiny"
    assert cli("tiny", "--out", ours).exit_code == 0
    (ours / "config.json").write_text("{}")
    assert cli("tiny", "--out", ours).exit_code == 0  # ours from the earlier run: written again
    assert json.loads((ours / "config.json").read_text())["model_type"] == "t5"


def test_class_2_export_keeps_the_users_manifest(tmp_path):
    out = foreign_folder(tmp_path, "onnx/manifest.json")
    res = cli("export", "--model", tmp_path / "no-model", "--out", out)
    assert_refused(res, out, "onnx/manifest.json")


def test_class_2_data_synth_never_replaces_real_rows_and_marks_its_own(tmp_path):
    data = tmp_path / "data"
    real = data / "rows" / "super_glue" / "rte"
    real.mkdir(parents=True)
    (real / "validation.jsonl").write_text('{"premise": "real"}\n')
    res = cli("data", "synth", "--data-dir", data, "--rows", "2", "rte")
    assert res.exit_code != 0 and str(real) in res.output and "real rows are never replaced" in res.output
    assert (real / "validation.jsonl").read_text() == '{"premise": "real"}\n'

    fresh = tmp_path / "fresh"
    for _ in range(2):  # the second time the folder is ours: written again
        res = cli("data", "synth", "--data-dir", fresh, "--rows", "2", "rte")
        assert res.exit_code == 0, res.output
    folder = fresh / "rows" / "super_glue" / "rte"
    assert is_synthetic(folder) and marker_kind(folder) == SYNTHETIC_ROWS

    from rospr_harness.tasks import rows
    from rospr_harness.tasks.base import DataSettings

    source = rows.locate(None, "super_glue/rte", "validation", DataSettings.from_env(fresh))
    assert source.kind == "synthetic"  # a run reading them never takes them for the real dataset
    assert rows.locate(None, "super_glue/rte", "validation", DataSettings.from_env(data)).kind == "local"


def test_class_2_data_synth_never_writes_through_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "rows").symlink_to(elsewhere)
    res = cli("data", "synth", "--data-dir", tmp_path / "data", "--rows", "2", "rte")
    assert res.exit_code != 0 and "symbolic link" in res.output
    assert os.listdir(elsewhere) == []


def test_class_2_compare_json_never_overwrites_the_run_it_read_nor_a_users_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text('{"the": "run"}')
    res = cli("compare", run, "--baseline", "t0_3b", "--json", run / "results.json")
    assert res.exit_code != 0 and "which this command reads" in res.output, res.output
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    res = cli("compare", run, "--baseline", "t0_3b", "--json", tmp_path / "notes.json")
    assert res.exit_code != 0 and "not a file rospr wrote" in res.output, res.output
    assert (run / "results.json").read_text() == '{"the": "run"}'
    assert (tmp_path / "notes.json").read_text() == '{"mine": 1}'
