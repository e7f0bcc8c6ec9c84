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
