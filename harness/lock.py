"""A run directory is used by one driver at a time: ``fcntl.flock`` on ``<run_dir>/.lock``.

The lock is held for the driver's whole life; the file says who holds it (pid, host, start time) so
that a refused driver can name the holder. The operating system drops the lock when the holder
exits in any way, SIGKILL included, so a crashed run can be resumed at once; the file stays behind
(removing it could let two drivers lock two different files).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "holder unknown"
    return f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
