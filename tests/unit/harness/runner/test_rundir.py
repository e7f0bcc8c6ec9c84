"""The run directory (harness/runner/rundir.py): a run never loses what it finished, and nothing outside
its directory is touched.

Each case: the CLI's exit code, its message (one line naming the file or field, no traceback) where
it fails, and every file of the earlier run intact byte for byte (hashed before and after; the lock
file, which only names its holder, is left out). A folder that is not a run of ours is never deleted
or overwritten.

Every run here scores with the fake scorer (``fakes.FakeScorer``): the cases are about files, not the
model's numbers, so each runs in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fakes import fake_scoring
from helpers import finished_run, one_line_error
from helpers import snapshot as _snapshot
from typer.testing import CliRunner

from rospr_harness.backends import Backend, create_backend
from rospr_harness.cli import app
from rospr_harness.config import load_config
from rospr_harness.schema import read_results
from rospr_harness.runner import run
from helpers import two_task_config
from rospr_harness.runner.plan import plan_run
from rospr_harness.runner.rundir import ResumeError, RunDirError, check_out, check_resumable, open_run
from rospr.destination import MARKER, ForeignDestination, mark, marker_kind

TASKS = [{"name": "builtin/animals", "limit": 10, "prompts": ["mentions_animal", "is_there_animal"]},
         {"name": "builtin/fruit_choice", "limit": 8}]


def snapshot(run_dir: Path) -> dict[str, str]:
    """sha256 of every file under ``run_dir`` but the lock file, and each link's target."""
    return _snapshot(run_dir, links=True)


@pytest.fixture(scope="module", autouse=True)
def fake_backends():
    """Every run of this module, the CLI's in process included, scores with ``FakeScorer``."""
    with fake_scoring():
        yield


@pytest.fixture(scope="module")
def finished(fake_backends, run_config, tmp_path_factory):
    """A finished run (config file, run directory, config tree)."""
    root = tmp_path_factory.mktemp("rundir")
    config, res = finished_run(run_config, root, TASKS)
    assert len(res.units) == 3 + 2  # 2 animals prompts + the fruit_choice prompts
    return config, root / "golden", json.loads(config.read_text())


@pytest.fixture
def used(finished, tmp_path):
    """A copy of the finished run to rerun into; (config, run dir, its hashes before)."""
    config, golden, _ = finished
    out = tmp_path / "run"
    shutil.copytree(golden, out, symlinks=True)
    return config, out, snapshot(out)


def test_rerun_with_an_empty_model_dir_keeps_the_earlier_run(used, tmp_path):
    config, out, before = used
    empty = tmp_path / "EMPTY_DIR"
    empty.mkdir()
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--set", f"model.name_or_path={empty}"])
    one_line_error(r, "EMPTY_DIR")
    assert snapshot(out) == before
    assert not (out / ".rospr-new").exists() and not (out / ".rospr-old").exists()


class _Interrupted:
    """A scorer that is interrupted (Ctrl-C) at its first batch, or fails after ``n`` batches."""

    def __init__(self, scorer, n: int = 0, exc: BaseException = KeyboardInterrupt()) -> None:
        self.scorer, self.n, self.exc, self.prompt_dim = scorer, n, exc, scorer.prompt_dim

    def score(self, batch):
        self.n -= 1
        if self.n < 0:
            raise self.exc
        return self.scorer.score(batch)


def test_ctrl_c_before_the_first_unit_keeps_the_earlier_run(used):
    config, out, before = used
    cfg = load_config(config)
    real = create_backend(cfg)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out, backend=Backend(real.name, _Interrupted(real.scorer), real.tokenizer, real.identity))
    assert snapshot(out) == before


def test_a_failure_after_the_first_unit_replaces_the_earlier_run_with_what_is_finished(used):
    config, out, before = used
    cfg = load_config(config, ["tasks.0.limit=6"])  # another run: 6 animals rows, not 10
    real = create_backend(cfg)
    failing = Backend(real.name, _Interrupted(real.scorer, 3, RuntimeError("server gone")), real.tokenizer,
                      real.identity)
    with pytest.raises(RuntimeError, match="server gone"):
        run(cfg, out, backend=failing)
    res = read_results(out / "results.json")
    assert 1 <= len(res.units) < 5 and res.config["tasks"][0]["limit"] == 6
    listed = {u.records for u in res.units}
    assert {str(p.relative_to(out)) for p in (out / "records").iterdir()} == listed  # none of the old run's
    assert not (out / "report.md").exists()  # the earlier run's report is gone with it
    assert not (out / ".rospr-new").exists() and not (out / ".rospr-old").exists()


def test_a_rerun_that_finishes_replaces_the_earlier_run(used):
    config, out, before = used
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--set", "tasks.1.limit=5"])
    assert r.exit_code == 0, r.output
    res = read_results(out / "results.json")
    assert res.config["tasks"][1]["limit"] == 5 and all(u.task != "builtin/fruit_choice" or u.n <= 5 for u in res.units)
    assert sorted(str(p.relative_to(out)) for p in (out / "records").iterdir()) == sorted(u.records for u in res.units)
    assert not (out / ".rospr-new").exists() and not (out / ".rospr-old").exists()


def test_an_interrupted_swap_is_undone_at_the_next_start(used, tmp_path):
    """A driver killed in the middle of the swap: the earlier run is put back by the next start."""
    config, out, before = used
    old, new = out / ".rospr-old", out / ".rospr-new"
    old.mkdir()
    new.mkdir()
    for name in ("results.json", "records"):  # step 1 half done, step 2 started
        os.rename(out / name, old / name)
    (new / "records").mkdir()
    (new / "records" / "x.jsonl").write_text("{}\n")
    os.rename(new / "records", out / "records")
    empty = tmp_path / "EMPTY_DIR"
    empty.mkdir()
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--set", f"model.name_or_path={empty}"])
    assert r.exit_code == 2, r.output
    assert snapshot(out) == before and not old.exists() and not new.exists()


@pytest.mark.parametrize("path_kind", ["absolute", "dotdot"])
def test_a_records_path_outside_the_run_is_never_touched(used, tmp_path, path_kind):
    config, out, _ = used
    victim = tmp_path / "victim.txt"
    victim.write_text("not rospr's\n")
    data = json.loads((out / "results.json").read_text())
    data["units"][0]["records"] = str(victim) if path_kind == "absolute" else "../victim.txt"
    (out / "results.json").write_text(json.dumps(data, indent=2))

    # --resume: the unit is recomputed (its own records file), the named file is neither read nor removed
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(out)])
    assert r.exit_code == 0, r.output
    res = read_results(out / "results.json")
    assert res.execution.computed == 1 and res.execution.resumed == 4
    assert res.units[0].records.startswith("records/")
    assert victim.read_text() == "not rospr's\n"

    # compare refuses such a run, naming the file and the field
    data = json.loads((out / "results.json").read_text())
    data["units"][0]["records"] = str(victim) if path_kind == "absolute" else "../victim.txt"
    (out / "results.json").write_text(json.dumps(data, indent=2))
    r = CliRunner().invoke(app, ["compare", str(out), "--against", str(out)])
    one_line_error(r, "results.json", "units[0].records")

    # a fresh rerun replaces the run; the named file survives
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "not rospr's\n"


def test_a_records_file_linked_outside_is_not_followed(used, tmp_path):
    config, out, _ = used
    res = read_results(out / "results.json")
    rec = out / res.units[1].records
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(rec.read_bytes())  # the same bytes: the sha256 would match through the link
    rec.unlink()
    rec.symlink_to(outside)
    before = outside.read_bytes()
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(out)])
    assert r.exit_code == 0, r.output
    after = read_results(out / "results.json")
    assert after.execution.computed == 1 and not rec.is_symlink()  # recomputed into its own file
    assert outside.read_bytes() == before
    rec.unlink()
    rec.symlink_to(outside)
    r = CliRunner().invoke(app, ["compare", str(out), "--against", str(out)])
    one_line_error(r, "units[1].records", "outside the run directory")


def test_resume_of_a_directory_without_a_run_is_refused(finished, tmp_path):
    config, _, _ = finished
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(tmp_path / "nothing")])
    one_line_error(r, str(tmp_path / "nothing"), "no run to resume")
    assert not (tmp_path / "nothing").exists()
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(tmp_path / "empty")])
    one_line_error(r, "no results.json")
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_records_folder_linked_outside_is_refused(used, tmp_path):
    """--resume into a run whose records/ is a link to another folder: refused; that folder untouched."""
    config, out, _ = used
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(out / "records"), elsewhere)
    (out / "records").symlink_to(elsewhere)
    (elsewhere / next(elsewhere.iterdir()).name).write_text("edited\n")  # one unit must be recomputed
    before = snapshot(elsewhere)
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(out)])
    one_line_error(r, "records", "outside the run directory")
    assert snapshot(elsewhere) == before


# -- a folder that is not a run of ours is never deleted or overwritten -----------------------------------


def _plant(root: Path, kind: str) -> None:
    """A user's folder that is not a rospr run, in one of several shapes."""
    root.mkdir()
    if kind == "records":
        (root / "records").mkdir()
        (root / "records" / "mine.jsonl").write_text('{"user": 1}\n')
    elif kind == "report":
        (root / "report.md").write_text("# my own notes\n")
    elif kind == "foreign_results":  # a results.json, but not of our schema
        (root / "results.json").write_text('{"accuracy": 0.5}\n')
        (root / "records").mkdir()
    elif kind == "staging_only":  # names rospr uses while swapping, with no run of ours around them
        (root / ".rospr-old").mkdir()
        (root / ".rospr-old" / "keep.txt").write_text("user data\n")
    elif kind == "linked_results":  # a results.json of ours, but through a link: not a marker
        (root / "results.json").symlink_to(root.parent / "golden-results.json")
    else:
        (root / "thesis.tex").write_text("\\documentclass{article}\n")


@pytest.mark.parametrize("kind", ["records", "report", "foreign_results", "staging_only", "linked_results", "other"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_that_is_not_a_run_of_ours_is_refused_and_untouched(finished, tmp_path, kind, resume):
    config, golden, _ = finished
    shutil.copy(golden / "results.json", tmp_path / "golden-results.json")
    target = tmp_path / "USERS_FOLDER"
    _plant(target, kind)
    before = snapshot(target)
    flag = "--resume" if resume else "--out"
    r = CliRunner().invoke(app, ["run", str(config), flag, str(target)])
    one_line_error(r, "USERS_FOLDER", "start one with" if resume else "choose another --out")
    assert snapshot(target) == before
    assert not os.path.lexists(target / ".lock")  # refused before anything was created there


@pytest.mark.parametrize("kind", ["file", "link_to_run", "link_to_empty"])
def test_out_at_a_file_or_a_link_is_refused(used, tmp_path, kind):
    config, out, before = used
    if kind == "file":
        target = tmp_path / "A_FILE"
        target.write_text("mine\n")
    else:
        pointed = out if kind == "link_to_run" else tmp_path / "empty"
        pointed.mkdir(exist_ok=True)
        target = tmp_path / "A_LINK"
        target.symlink_to(pointed)
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(target)])
    one_line_error(r, target.name, "another --out")
    assert snapshot(out) == before
    assert kind != "file" or target.read_text() == "mine\n"
    assert kind != "link_to_empty" or list((tmp_path / "empty").iterdir()) == []


def test_a_folder_with_only_a_lock_file_is_ours(finished, tmp_path):
    """A run that stopped before its first write leaves only .lock: the next run may use the folder."""
    config, _, _ = finished
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text('{"pid": 1}\n')
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--set", "tasks.1.limit=2"])
    assert r.exit_code == 0, r.output
    assert len(read_results(out / "results.json").units) == 5


# -- run --out follows rospr.destination's rule -----------------------------------------------------


def test_a_run_marks_its_folder_and_an_earlier_run_without_the_marker_is_still_replaced(used):
    """A run writes our marker (kind ``run``); a run directory written before the marker is ours by its
    validated results.json (the older proof), replaced as before, and marked."""
    config, out, _ = used
    assert marker_kind(out) == "run"
    (out / MARKER).unlink()
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--set", "tasks.1.limit=5"])
    assert r.exit_code == 0, r.output
    assert marker_kind(out) == "run"
    assert read_results(out / "results.json").config["tasks"][1]["limit"] == 5


def test_a_folder_marked_as_a_run_of_ours_is_written_and_only_the_run_entries_are_replaced(finished, tmp_path):
    """Marked ``run`` (a run killed before its results.json, say): ours, though it holds no run; what
    else is there is not a run entry and stays."""
    config, _, _ = finished
    out = tmp_path / "run"
    out.mkdir()
    mark(out, "run")
    (out / "notes.txt").write_text("mine\n")
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert len(read_results(out / "results.json").units) == 5 and (out / "notes.txt").read_text() == "mine\n"


def test_a_folder_of_another_kind_of_ours_is_refused_and_untouched(finished, tmp_path):
    config, _, _ = finished
    out = tmp_path / "A_LIBRARY"
    out.mkdir()
    mark(out, "library")
    (out / "manifest.json").write_text("{}\n")
    before = snapshot(out)
    r = CliRunner().invoke(app, ["run", str(config), "--out", str(out)])
    one_line_error(r, "A_LIBRARY", "rospr's library, not a run", "choose another --out")
    assert snapshot(out) == before and not os.path.lexists(out / ".lock")


def test_a_refused_out_is_the_rules_error_and_says_why_its_results_json_is_no_proof(tmp_path):
    out = tmp_path / "USERS_FOLDER"
    out.mkdir()
    (out / "results.json").write_text('{"accuracy": 0.5}\n')
    with pytest.raises(RunDirError) as refused:
        check_out(out, resume=False)
    assert isinstance(refused.value, ForeignDestination) and not isinstance(refused.value, ResumeError)
    text = str(refused.value)
    assert text.startswith(f"{out}: not a folder rospr wrote") and f"{out / 'results.json'}: schema_version" in text
    assert text.endswith("or empty that folder")
    with pytest.raises(ResumeError, match="start one with rospr run CONFIG --out ANOTHER_FOLDER"):
        check_out(out, resume=True)
    assert sorted(os.listdir(out)) == ["results.json"]


@pytest.mark.parametrize("edit", ["no_prompts", "no_methods"])
def test_an_empty_plan_is_refused_before_the_earlier_run_is_touched(used, edit):
    """Zero units planned, by every prompts list empty or by no method: an error, the run untouched."""
    config, out, before = used
    tree = json.loads(config.read_text())
    if edit == "no_prompts":
        tree["tasks"] = [dict(t, prompts=[]) for t in tree["tasks"]]
    else:
        tree["method"] = []
    empty = out.parent / "empty.yaml"
    empty.write_text(json.dumps(tree))
    r = CliRunner().invoke(app, ["run", str(empty), "--out", str(out)])
    one_line_error(r, "prompts" if edit == "no_prompts" else "'method' is empty")
    assert snapshot(out) == before
    assert not (out / ".rospr-new").exists()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_lock_file_planted_as_a_link_is_never_written_through(used, tmp_path, link):
    config, out, before = used
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / ".lock").unlink(missing_ok=True)
    (out / ".lock").symlink_to(victim) if link == "symlink" else os.link(victim, out / ".lock")
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(out)])
    one_line_error(r, ".lock", "remove it")
    assert victim.read_text() == "precious\n"
    assert snapshot(out) == before


@pytest.mark.parametrize("name", ["report.md", "report.html"])
def test_a_report_planted_as_a_link_is_replaced_not_followed(used, tmp_path, name):
    """The reports are written by a rename in the run directory: a link there is replaced, its target kept."""
    config, out, _ = used
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / name).unlink()
    (out / name).symlink_to(victim)
    r = CliRunner().invoke(app, ["run", str(config), "--resume", str(out)])
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious\n"
    assert not (out / name).is_symlink() and "rospr" in (out / name).read_text()


def test_a_task_without_rows_is_an_empty_plan_refused_before_the_earlier_run_is_touched(used, tmp_path):
    """A third way to plan zero scorable units: a task whose rows file is empty."""
    config, out, before = used
    (tmp_path / "tpl" / "toy").mkdir(parents=True)
    (tmp_path / "tpl" / "toy" / "templates.yaml").write_text(
        "dataset: toy\ntemplates:\n  t0: !Template\n    answer_choices: no ||| yes\n    id: t0\n"
        "    jinja: '{{text}} ||| {{ answer_choices[label] }}'\n    name: p\n")
    (tmp_path / "rows" / "toy").mkdir(parents=True)
    (tmp_path / "rows" / "toy" / "validation.jsonl").write_text("")
    tree = json.loads(config.read_text())
    tree.update(tasks=["toy"], data={"templates_dir": str(tmp_path / "tpl"), "rows_dir": str(tmp_path / "rows")})
    empty = tmp_path / "empty.yaml"
    empty.write_text(json.dumps(tree))
    r = CliRunner().invoke(app, ["run", str(empty), "--out", str(out)])
    one_line_error(r, "toy has no rows", "validation.jsonl")
    assert snapshot(out) == before


# -- opening a run directory ------------------------------------------------------------------------
def test_run_directory_opens_fresh_and_refuses_to_resume_nothing(tmp_path):
    c = two_task_config()
    with pytest.raises(ResumeError, match="holds no run to resume"):
        check_resumable(tmp_path / "none")
    rundir, kept = open_run(tmp_path / "fresh", c, plan_run(c).order, resume=False)
    assert kept == 0 and rundir.root == tmp_path / "fresh" and not rundir.staged and rundir.units == {}
