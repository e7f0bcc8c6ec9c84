"""Child processes whose life is tied to ours, and the sweeping of what dead predecessors left.

A ``ManagedProcess`` is a command started

- in its own process group (``start_new_session``), so that ``stop`` ends it and all it started;
- on Linux with a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGTERM)`` in ``preexec_fn``), so a
  parent killed with SIGKILL leaves no child behind. Strictly, the signal comes when the *thread*
  that started the child ends: start children from a thread that outlives them;
- recorded in a pid file ``<state_dir>/<name>.json`` (``pid``, ``start``, ``parent``, ``parent_start``,
  ``tag`` and what the owner adds), the second line where that signal does not come (not Linux, a child
  that ignores SIGTERM): ``reap_stale`` ends a recorded process whose parent is gone, and only when it
  is provably the one recorded: the same start time (``/proc/<pid>/stat``) as at launch, and its
  command line still carrying the recorded ``tag`` argument, so a reused pid is never touched. The
  state folder decides which processes are signalled, so it is used only when it is this user's own
  with mode 0700 (``private_dir``); a folder another user could have planted is refused.

``stop(timeout_s)`` sends SIGTERM to the process and SIGKILLs its group if any of it is still alive
``timeout_s`` later (reaping the process as soon as it exits: see ``end_group``); it removes the pid
file, the process's work folder and the files with its ``shm_prefix`` that appeared in ``/dev/shm``
while it ran and that no live process maps. It is safe to call twice and also runs at interpreter exit.

Work folders: ``make_workdir(prefix)`` makes a temporary folder holding ``owner.json`` (this
process's pid and start time); ``sweep_workdirs(prefix)`` removes those whose owner is gone.
Everything here that reads processes reads Linux ``/proc``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import Callable

from rospr.errors import StateError

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"  # in each work folder: the pid (and start time) of the process that made it
SHM_DIR = Path("/dev/shm")
STOP_TIMEOUT_S = 30.0  # the grace of SIGTERM before SIGKILL, when no one says (interpreter exit)
_POLL_S = 0.05
ORPHAN_GRACE_S = 2.0  # what a stopped leader left in its group has, once the leader exited, before SIGKILL


# -- reading processes ------------------------------------------------------------------------------


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux /proc), None when it is gone:
    with the pid it names one process, whatever reuses the pid later."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def same_process(pid: int, started: str | None) -> bool:
    """Whether the process recorded as (``pid``, start time ``started``) is still alive; with no
    start time recorded, or no /proc to read it from, the pid alone decides."""
    if started is None or not Path("/proc/self/stat").exists():
        return process_alive(pid)
    return start_time(pid) == str(started)


def running(pid: int, started: str | None) -> bool:
    """Whether the process recorded as (``pid``, start time ``started``) still runs: ``same_process``,
    and not a zombie (dead, its exit not yet collected by its parent; Linux /proc)."""
    if not same_process(pid, started):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return process_alive(pid)


def cmdline(pid: int) -> list[str]:
    """The arguments of process ``pid`` ([] when it is gone or unreadable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (Linux /proc); zombies count as gone."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # the fields after the name: state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def end_group(pgid: int, timeout_s: float, leader_only: bool = False,
              reap: Callable[[], object] | None = None) -> None:
    """SIGTERM to process group ``pgid`` (``leader_only``: to its leader, which ends the rest itself;
    only while the leader is known not to be reaped, or the pid may be another's), then SIGKILL to the
    group if any of it is alive ``timeout_s`` later. Returns once it is gone.

    ``reap`` (the leader's ``Popen.poll``, for a leader that is our child) is called while waiting:
    a leader that exited is reaped at once, and what it left in its group gets ``ORPHAN_GRACE_S``
    more (not the rest of ``timeout_s``: the grace is for the leader, which ends its group) before
    SIGKILL. Both for Triton's python backend stubs, which ignore SIGTERM and watch their parent with
    ``kill(pid, 0)``: a ``tritonserver`` that SIGTERM ends while it loads its models (its handler is
    not installed yet) leaves them waiting for it as long as it is an unreaped zombie, and a stub
    whose model was still initializing may hang in its own exit once it sees the parent gone."""
    try:
        os.kill(pgid, signal.SIGTERM) if leader_only else os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # the leader is gone; members of its group may not be
    if _wait_gone(pgid, timeout_s, reap):
        return
    log.warning("process group %d did not stop after SIGTERM (grace %.3g s; %.3g s once its leader was gone): "
                "killing it", pgid, timeout_s, ORPHAN_GRACE_S)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_gone(pgid, 5.0)


def _wait_gone(pgid: int, timeout_s: float, reap: Callable[[], object] | None = None) -> bool:
    """Whether group ``pgid`` is gone within ``timeout_s`` (``reap``: see ``end_group``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if reap is not None and reap() is not None:  # the leader exited: reaped (its pgid stays taken
            reap = None                              # while members of its group live on)
            deadline = min(deadline, time.monotonic() + ORPHAN_GRACE_S)
        if not group_members(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when ``parent`` (strictly, the thread that started it)
    dies (Linux ``PR_SET_PDEATHSIG``); a child whose parent died before that took effect exits."""

    def preexec() -> None:
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


# -- what dead predecessors left --------------------------------------------------------------------


def private_dir(path: Path) -> Path:
    """``path`` as a folder only this user can use: made (mode 0700) where missing. Refuses
    (``StateError``) one that is a symbolic link, not a folder, another user's, or open to others (a
    group or other permission bit): what it holds decides which processes are signalled."""
    path = Path(path)
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    problem = ("is a symbolic link" if stat.S_ISLNK(st.st_mode) else "is not a folder" if not stat.S_ISDIR(st.st_mode)
               else f"belongs to uid {st.st_uid}, not this user ({os.getuid()})" if st.st_uid != os.getuid()
               else f"has mode {stat.S_IMODE(st.st_mode):04o}, open to others" if st.st_mode & 0o077 else None)
    if problem:
        raise StateError(f"{path} {problem}; the record of started processes must be this user's own folder "
                         "with mode 0700 (chmod 700 it if it is yours, else remove it or choose another)")
    return path


def reap_stale(directory: Path, tag_of: Callable[[dict], str] = lambda info: str(info["tag"]),
               timeout_s: float = 10.0) -> list[int]:
    """End the processes recorded in ``directory``'s pid files whose parent is gone; returns their pids.

    A recorded process is ended (its group: SIGTERM, SIGKILL ``timeout_s`` later) only while it is
    provably the one recorded: its start time is the one recorded at launch and its command line still
    carries ``tag_of(record)`` as an argument, so a reused pid is never touched (a record without a
    start time is never acted on); the pid file of a gone parent is removed either way. Pid files of
    live parents are left alone; unreadable ones are removed. Refuses (``StateError``, ``private_dir``)
    a ``directory`` that is not this user's own with mode 0700.
    """
    if not directory.exists() and not directory.is_symlink():
        return []
    private_dir(directory)
    reaped = []
    for f in sorted(directory.glob("*.json")):
        try:
            info = json.loads(f.read_text())
            pid, parent, tag = int(info["pid"]), int(info["parent"]), tag_of(info)
        except (OSError, ValueError, KeyError, TypeError):
            f.unlink(missing_ok=True)
            continue
        if same_process(parent, info.get("parent_start")):
            continue
        if info.get("start") is not None and same_process(pid, info["start"]) and tag in cmdline(pid):
            log.warning("ending process %d (%s), left by a process that is gone", pid, tag)
            end_group(pid, timeout_s)
            reaped.append(pid)
        f.unlink(missing_ok=True)
    return reaped


def make_workdir(prefix: str, root: Path | None = None) -> Path:
    """A new temporary folder ``<root>/<prefix>*`` (root: the system's temporary folder) holding
    ``owner.json`` with this process's pid and start time, for ``sweep_workdirs``."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        (folder / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": start_time(os.getpid())}))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def sweep_workdirs(prefix: str, root: Path | None = None) -> list[Path]:
    """Remove the work folders ``<root>/<prefix>*`` whose owner process is gone (SIGKILLed, crashed:
    nothing of theirs ran at exit); returns them. Only folders of this user, not links, whose
    ``owner.json`` names a dead process are swept; a folder without one is left alone."""
    root = Path(root or tempfile.gettempdir())
    swept = []
    for folder in sorted(root.glob(prefix + "*")):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            info = json.loads((folder / OWNER_FILE).read_text())
            if same_process(int(info["pid"]), info.get("start")):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        log.info("removing %s, left by process %s that is gone", folder, info.get("pid"))
        shutil.rmtree(folder, ignore_errors=True)
        swept.append(folder)
    return swept


def shm_files(prefix: str) -> set[str]:
    """The names of the ``/dev/shm`` files starting with ``prefix``."""
    return {p.name for p in SHM_DIR.glob(prefix + "*")} if SHM_DIR.is_dir() else set()


def mapped_shm(prefix: str) -> set[str]:
    """The ``/dev/shm`` files starting with ``prefix`` that some live process has mapped (/proc/*/maps)."""
    mapped = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                for line in (entry / "maps").read_text().splitlines():
                    if f"{SHM_DIR}/{prefix}" in line:
                        mapped.add(line.rsplit("/", 1)[-1].split(" ")[0])
            except OSError:
                continue
    return mapped


# -- one managed child ------------------------------------------------------------------------------


class ManagedProcess:
    """``command`` as a child tied to this process (see the module docstring).

    ``tag``: an argument of ``command`` naming this very child (``reap_stale`` matches it);
    ``state_dir``: where its pid file goes (None: none is written); ``name``: the pid file's stem;
    ``record``: more fields for the pid file; ``workdir``: a folder removed by ``stop``;
    ``shm_prefix``: the ``/dev/shm`` files of this kind it may leave. Refuses (``ValueError``) a
    ``tag`` that is not one of ``command``'s arguments.
    """

    def __init__(self, command: list[str], *, tag: str, state_dir: Path | None = None, name: str | None = None,
                 record: dict | None = None, workdir: Path | None = None, shm_prefix: str | None = None,
                 die_with_parent: bool = True) -> None:
        if tag not in command:
            raise ValueError(f"tag {tag!r} is not an argument of the command {command[:1]}…: a stale process "
                             "could never be told from a reused pid")
        self.command, self.tag = [str(c) for c in command], tag
        self.state_dir, self.name = state_dir, name or f"proc-{uuid.uuid4().hex[:12]}"
        self.record, self.workdir, self.shm_prefix = dict(record or {}), workdir, shm_prefix
        self.die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self.popen: subprocess.Popen | None = None
        self.pid_file: Path | None = None
        self._stop = _Stop(workdir)
        self._finalizer = weakref.finalize(self, self._stop)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self, env: dict | None = None, cwd: Path | None = None,
              log_path: Path | None = None) -> "ManagedProcess":
        """Start the child (stdout and stderr to ``log_path``, else inherited; no stdin) and record it.
        Refuses (``RuntimeError``) a second start."""
        if self.popen is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._stop.shm = (self.shm_prefix, frozenset(shm_files(self.shm_prefix))) if self.shm_prefix else None
        if self.state_dir is not None:
            private_dir(self.state_dir)  # refused before anything starts
        out = open(log_path, "wb") if log_path else None
        try:
            self.popen = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT if out else None, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
                preexec_fn=die_with_parent(os.getpid()) if self.die_with_parent else None)
        finally:
            if out:
                out.close()
        self._stop.popen = self.popen
        self.pid_file = self._stop.pid_file = self._write_pid_file()
        return self

    def _write_pid_file(self) -> Path | None:
        """The pid file ``reap_stale`` reads; a failure only loses that safety net (a warning)."""
        if self.state_dir is None:
            return None
        info = {**self.record, "pid": self.popen.pid, "start": start_time(self.popen.pid), "parent": os.getpid(),
                "parent_start": start_time(os.getpid()), "tag": self.tag}
        try:
            path = self.state_dir / f"{self.name}.json"
            path.write_text(json.dumps(info))
            return path
        except OSError as exc:
            log.warning("cannot record %s in %s (%s): if this process dies it will not be reaped", self.name,
                        self.state_dir, exc)
            return None

    def poll(self) -> int | None:
        """The exit code, None while it runs (or before it started)."""
        return self.popen.poll() if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def pids(self) -> list[int]:
        """The live processes of its group (it and what it started)."""
        return group_members(self.popen.pid) if self.popen else []

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL to its group whatever of it is alive ``timeout_s`` later; removes its
        pid file, work folder and leftover shared memory. Safe to call twice, or before ``start``."""
        self._finalizer.detach()
        self._stop(timeout_s)

    def __enter__(self) -> "ManagedProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Stop:
    """What ``ManagedProcess.stop`` undoes, kept apart from it so that it can also run at interpreter
    exit (``weakref.finalize``); runs once."""

    def __init__(self, workdir: Path | None) -> None:
        self.workdir, self.popen, self.pid_file, self.shm = workdir, None, None, None
        self.done = False

    def __call__(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self.done:
            return
        self.done = True
        if self.popen is not None:
            running = self.popen.poll() is None  # not reaped yet: its pid is still its own
            if running or group_members(self.popen.pid):
                end_group(self.popen.pid, timeout_s, leader_only=running, reap=self.popen.poll)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                log.warning("process %d did not exit after SIGKILL", self.popen.pid)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)
        if self.shm is not None:
            # a child that was killed leaves its regions: those that appeared while it ran and that no
            # live process (another server) maps are removed
            prefix, before = self.shm
            for name in shm_files(prefix) - before - mapped_shm(prefix):
                (SHM_DIR / name).unlink(missing_ok=True)
