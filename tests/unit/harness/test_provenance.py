"""harness/provenance.py: what a result records of the code and the machine that made it."""

from __future__ import annotations


def test_git_state_ignores_the_folders_it_is_told_to(tmp_path):
    """A benchmark's own results beside the code do not make the code it measured dirty; code does."""
    import subprocess

    from rospr_harness.provenance import git_state

    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,  # noqa: E731
                                    check=True, capture_output=True)
    (tmp_path / "results").mkdir()
    for name in ("code.py", "results/r.json"):
        (tmp_path / name).write_text("1")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "x")
    (tmp_path / "results" / "r.json").write_text("2")
    assert git_state(tmp_path)[1] is True
    assert git_state(tmp_path, ignore=("results",))[1] is False
    (tmp_path / "code.py").write_text("2")
    assert git_state(tmp_path, ignore=("results",))[1] is True


def test_class_4_a_revision_is_recorded_only_where_it_was_used(tmp_path, caplog):
    """class 4: no figure hides what happened. A hub name's revision is recorded as given; a local folder has no
    revisions (loading ignores one), so a revision given for it is recorded as none, with a warning naming the
    field, the folder and the fix: for a path-like name (./x, /abs, build/...) and any existing folder."""
    import logging

    from rospr_harness.provenance import used_revision

    sha = "a" * 40
    assert used_revision("bigscience/T0_3B", sha, "model.revision") == sha
    assert used_revision("bigscience/T0_3B", None, "model.revision") is None
    (tmp_path / "ckpt").mkdir()
    for local in (str(tmp_path / "ckpt"), "./ckpt", "build/tiny-t0", str(tmp_path / "absent")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="rospr_harness.provenance"):
            assert used_revision(local, sha, "rospr.retriever_revision") is None
        (line,) = [r.getMessage() for r in caplog.records]
        assert f"rospr.retriever_revision {sha}: {local} is a local folder" in line and "records no revision" in line
    assert used_revision(str(tmp_path / "ckpt"), None, "model.revision") is None and not caplog.records[1:]


def test_class_4_a_run_of_a_local_folder_records_no_revision(run_config, fake_scorer, tmp_path, caplog):
    """The run's provenance: model.revision on the local tiny model is not written as used."""
    import json
    import logging

    from rospr_harness.runner import run

    with caplog.at_level(logging.WARNING):
        run(run_config(model={"revision": "b" * 40}, tasks=[{"name": "builtin/animals", "limit": 2}]), tmp_path / "run")
    prov = json.loads((tmp_path / "run" / "results.json").read_text())["provenance"]
    assert prov["model_revision"] is None and prov["retriever_revision"] is None
    assert any("model.revision " + "b" * 40 in r.getMessage() and "local folder" in r.getMessage() for r in caplog.records)


def test_class_4_the_retriever_identity_records_a_revision_only_where_it_applies(run_config):
    """The library's record of its retriever (results.json ``provenance.retriever``) holds no revision for a
    local folder, whatever model.revision says; a hub name's revision is recorded (as it is loaded at it)."""
    from rospr_harness.method.library import retriever_of
    from rospr_harness.provenance import hub_revision

    sha = "c" * 40
    assert "revision" not in retriever_of(run_config(model={"revision": sha}))
    assert retriever_of(run_config()) == retriever_of(run_config(model={"revision": sha}))
    assert hub_revision("bigscience/T0_3B", sha) == sha and hub_revision("./local", sha) is None
