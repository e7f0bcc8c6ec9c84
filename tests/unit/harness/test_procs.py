"""``rospr_harness.procs``: a managed child starts, stops within its timeout, dies with a SIGKILLed parent,
and what dead predecessors left is swept, never what a live process owns. Plain Python children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import REPO

from rospr.errors import StateError
from rospr_harness.procs import (OWNER_FILE, ManagedProcess, cmdline, group_members, make_workdir, private_dir,
                                 process_alive, reap_stale, same_process, start_time, sweep_workdirs)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")
SLEEP = "import time; time.sleep(600)"
# a child that ignores SIGTERM: only SIGKILL ends it
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"


def sleeper(tag: str, code: str = SLEEP) -> list[str]:
    return [sys.executable, "-c", code, tag]


def wait_until(condition, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"still not {what} after {timeout_s} s")
        time.sleep(0.05)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_start_records_the_child_and_stop_removes_every_trace(tmp_path):
    work = make_workdir("rospr-test-", tmp_path)
    child = ManagedProcess(sleeper("--id=t1"), tag="--id=t1", state_dir=tmp_path / "state", name="t1",
                           record={"what": "a sleeper"}, workdir=work)
    child.start(log_path=work / "log")
    pid = child.pid
    assert child.alive() and child.pids() == [pid]
    assert os.getpgid(pid) == pid  # its own group
    info = json.loads((tmp_path / "state" / "t1.json").read_text())
    assert info == {"what": "a sleeper", "pid": pid, "start": start_time(pid), "parent": os.getpid(),
                    "parent_start": start_time(os.getpid()), "tag": "--id=t1"}
    child.stop(5)
    assert not child.alive() and child.poll() == -signal.SIGTERM
    assert group_members(pid) == [] and not work.exists() and not (tmp_path / "state" / "t1.json").exists()
    child.stop(5)  # twice is fine
    with pytest.raises(RuntimeError, match="already started"):
        child.start()


def test_stop_kills_what_ignores_sigterm_after_its_timeout(tmp_path):
    child = ManagedProcess(sleeper("--id=t2", STUBBORN), tag="--id=t2")
    child.start(log_path=tmp_path / "log")
    wait_until(lambda: "ready" in (tmp_path / "log").read_text(), "ready")
    child.stop(timeout_s=0.3)  # the argument is the grace: SIGKILL after it, not after a default
    assert child.poll() == -signal.SIGKILL and group_members(child.pid) == []


def test_stop_before_start_removes_the_work_folder(tmp_path):
    work = make_workdir("rospr-test-", tmp_path)
    ManagedProcess(sleeper("--id=t3"), tag="--id=t3", workdir=work).stop()
    assert not work.exists()


def test_a_tag_outside_the_command_is_refused():
    with pytest.raises(ValueError, match="not an argument"):
        ManagedProcess(sleeper("--id=a"), tag="--id=b")


def test_stop_removes_the_shared_memory_its_child_left(tmp_path, monkeypatch):
    import rospr_harness.procs as procs

    monkeypatch.setattr(procs, "SHM_DIR", tmp_path)
    (tmp_path / "region_before").write_text("")  # another server's, there before: kept
    code = f"import pathlib, time; pathlib.Path({str(tmp_path)!r}, 'region_mine').write_text(''); time.sleep(600)"
    child = ManagedProcess(sleeper("--id=t4", code), tag="--id=t4", shm_prefix="region_").start()
    wait_until(lambda: (tmp_path / "region_mine").exists(), "written")
    child.stop(5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["region_before"]


PARENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from rospr_harness.procs import ManagedProcess, make_workdir

    state, root, die = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
    work = make_workdir("rospr-test-", root)
    child = ManagedProcess([sys.executable, "-c", "import time; time.sleep(600)", "--id=orphan"], tag="--id=orphan",
                           state_dir=state, name="orphan", workdir=work, die_with_parent=die).start()
    print(child.pid, flush=True)
    time.sleep(600)
    """
)


def orphan(tmp_path, die_with_parent: bool) -> int:
    """Start a parent that starts a managed child, SIGKILL the parent once the child runs its own command;
    returns the child's pid.

    The parent prints the pid when ``Popen`` returns, which is when the child's close-on-exec descriptors
    close: a little before the kernel has set up the new program's arguments. Until then the child's
    ``/proc/<pid>/cmdline`` reads empty (most reads made right after ``Popen`` do), and ``reap_stale``
    would take it for another process that reused the pid: it would drop the record and end nothing.
    A child that outlived its parent has long been running its command, so the parent is killed only
    once the child's command line carries its tag."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path / "state"), str(tmp_path),
                               "1" if die_with_parent else "0"], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        pid = int(parent.stdout.readline())
        wait_until(lambda: "--id=orphan" in cmdline(pid), "running its own command (--id=orphan)")
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    return pid


def test_the_child_of_a_sigkilled_parent_dies_and_its_leftovers_are_swept(tmp_path):
    pid = orphan(tmp_path, die_with_parent=True)
    wait_until(lambda: not group_members(pid), "gone")
    # nothing of the parent's ran at exit: its pid file and work folder stay until the next start
    assert (tmp_path / "state" / "orphan.json").exists()
    (work,) = tmp_path.glob("rospr-test-*")
    assert reap_stale(tmp_path / "state") == []  # nothing left to end, the record goes
    assert sweep_workdirs("rospr-test-", tmp_path) == [work]
    assert not list((tmp_path / "state").iterdir()) and not work.exists()


def test_a_child_that_outlived_its_parent_is_reaped_on_the_next_start(tmp_path):
    pid = orphan(tmp_path, die_with_parent=False)  # as where no parent-death signal comes
    try:
        assert process_alive(pid) and "--id=orphan" in cmdline(pid)
        # what reap_stale decides on, checked first: the record names the child, and its parent is gone
        record = json.loads((tmp_path / "state" / "orphan.json").read_text())
        assert record["pid"] == pid and record["tag"] == "--id=orphan"
        assert not same_process(record["parent"], record["parent_start"])
        assert reap_stale(tmp_path / "state") == [pid]
        wait_until(lambda: not group_members(pid), "reaped")
        assert not list((tmp_path / "state").iterdir())
    finally:
        if group_members(pid):
            os.killpg(pid, signal.SIGKILL)


def test_reap_touches_only_the_stale_records_of_its_own_processes(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    foreign = subprocess.Popen(sleeper("--id=foreign"), start_new_session=True)  # a live owner's child
    reused = subprocess.Popen(sleeper("--id=someone-else"), start_new_session=True)
    try:
        records = {
            "dead": {"pid": dead_pid(), "parent": dead_pid(), "tag": "--id=dead"},  # both gone: cleaned
            "foreign": {"pid": foreign.pid, "parent": os.getpid(), "parent_start": start_time(os.getpid()),
                        "tag": "--id=foreign"},  # its parent lives: not touched
            "reused": {"pid": reused.pid, "start": start_time(reused.pid), "parent": dead_pid(),
                       "tag": "--id=old"},  # the pid is another's now
            "parent-reused": {"pid": dead_pid(), "parent": os.getpid(), "parent_start": "0", "tag": "--id=x"},
        }
        for name, info in records.items():
            (state / f"{name}.json").write_text(json.dumps(info))
        (state / "garbage.json").write_text("{")
        before = (state / "foreign.json").read_text()
        assert reap_stale(state) == []
        assert foreign.poll() is None and reused.poll() is None
        assert sorted(p.name for p in state.iterdir()) == ["foreign.json"]
        assert (state / "foreign.json").read_text() == before
    finally:
        for p in (foreign, reused):
            p.kill()
            p.wait()


def test_sweep_removes_only_the_folders_of_gone_owners(tmp_path):
    def folder(name: str, owner: dict | None) -> Path:
        d = tmp_path / f"rospr-test-{name}"
        d.mkdir()
        if owner is not None:
            (d / OWNER_FILE).write_text(json.dumps(owner))
        return d

    mine = make_workdir("rospr-test-", tmp_path)  # this live process's
    dead = folder("dead", {"pid": dead_pid(), "start": "1"})
    reused = folder("reused", {"pid": os.getpid(), "start": "0"})  # our pid now, another process then
    unowned = folder("unowned", None)
    assert json.loads((mine / OWNER_FILE).read_text()) == {"pid": os.getpid(), "start": start_time(os.getpid())}
    assert sorted(sweep_workdirs("rospr-test-", tmp_path)) == sorted([dead, reused])
    assert mine.is_dir() and unowned.is_dir()


# -- class 5 (issue 32): we act on no file that others can plant --------------------------------------------

@pytest.fixture
def bystander():
    """A live process of "someone else" whose command line carries the tag a planted record names."""
    proc = subprocess.Popen(sleeper("--id=victim"), start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def _plant(state: Path, proc) -> None:
    (state / "planted.json").write_text(json.dumps({"pid": proc.pid, "start": start_time(proc.pid),
                                                    "parent": dead_pid(), "tag": "--id=victim"}))


@pytest.mark.parametrize("mode", [0o777, 0o755, 0o710])
def test_class5_a_state_folder_open_to_others_is_refused_and_nothing_signalled(tmp_path, bystander, mode):
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    _plant(state, bystander)
    with pytest.raises(StateError, match=rf"{state} has mode {mode:04o}, open to others; .*mode 0700"):
        reap_stale(state)
    assert bystander.poll() is None and (state / "planted.json").exists()


def test_class5_a_state_folder_that_is_a_link_is_refused(tmp_path, bystander):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    _plant(real, bystander)
    (tmp_path / "state").symlink_to(real)
    with pytest.raises(StateError, match="is a symbolic link"):
        reap_stale(tmp_path / "state")
    with pytest.raises(StateError, match="is a symbolic link"):
        ManagedProcess(sleeper("--id=x"), tag="--id=x", state_dir=tmp_path / "state").start()
    assert bystander.poll() is None


@pytest.mark.skipif(os.getuid() != 0, reason="making a folder another user's needs root")
def test_class5_a_state_folder_of_another_user_is_refused(tmp_path, bystander):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    _plant(state, bystander)
    os.chown(state, 4242, 4242)
    with pytest.raises(StateError, match=r"belongs to uid 4242, not this user"):
        reap_stale(state)
    assert bystander.poll() is None


def test_class5_a_managed_process_is_not_started_with_a_planted_state_folder(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    child = ManagedProcess(sleeper("--id=never"), tag="--id=never", state_dir=state, name="never")
    with pytest.raises(StateError, match="open to others"):
        child.start()
    assert child.pid is None and not list(state.iterdir())


def test_class5_a_pid_is_signalled_only_with_the_start_time_recorded_at_launch(tmp_path, bystander):
    """The tag matches and the parent is gone, but the record's start time is not the running process's
    (a record written for an earlier process of that pid), or there is none: not touched."""
    state = private_dir(tmp_path / "state")
    assert os.stat(state).st_mode & 0o777 == 0o700
    for name, start in (("other-start", "1"), ("no-start", None)):
        info = {"pid": bystander.pid, "parent": dead_pid(), "tag": "--id=victim"}
        (state / f"{name}.json").write_text(json.dumps(info | ({"start": start} if start else {})))
    assert reap_stale(state) == []
    assert bystander.poll() is None and not list(state.iterdir())
