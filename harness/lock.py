"""A run directory is used by one driver at a time: ``fcntl.flock`` on ``<run_dir>/.lock``.

The lock is held for the driver's whole life; the file says who holds it (pid, host, start time) so
that a refused driver can name the holder. The operating system drops the lock when the holder
exits in any way, SIGKILL included, so a crashed run can be resumed at once; the file stays behind
(removing it could let two drivers lock two different files). The lock file is opened with
``O_NOFOLLOW``: a symbolic link (or a hard link, a FIFO, a folder) planted as ``.lock`` is refused, never written
through.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
from datetime import datetime, timezone
from pathlib import Path

from rospr.errors import RosprError

LOCK_NAME = ".lock"


class RunLocked(RosprError, RuntimeError):
    """Another driver holds the run directory."""


class RunLock:
    """Exclusive lock of a run directory; a context manager. Refuses (``RunLocked``) a held one."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock. Refuses (``RunLocked``) a directory another driver holds; an ``OSError``
        (unwritable folder, disk full) names the lock file."""
        fd = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a link planted as .lock is refused, never followed (and its target truncated)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:  # a hard link would truncate another file too
                raise IsADirectoryError(errno.EISDIR, "not a regular file of its own", str(self.path))
            os.set_blocking(fd, True)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                fd = None
                raise RunLocked(
                    f"{self.path.parent}: another rospr run is using this directory ({holder}); wait for it to "
                    "finish or stop it, or choose another --out") from None
            os.ftruncate(fd, 0)
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO) or os.path.islink(self.path):
                raise RunLocked(f"{self.path}: is a link (symbolic or hard) or not a regular file, not rospr's lock "
                                "file (nothing was written through it); remove it and rerun, or choose another --out") from None
            raise OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(self.path)) from exc
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:  # a planted file may hold anything: 4 kB of brackets (RecursionError), a list, bad bytes
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError, RecursionError):
        info = {}
    if not isinstance(info, dict) or not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
