"""Whose is a destination: the one rule every command that writes where the user points follows.

A folder is ours to write (and to replace what is in it) only when it is absent, empty, or carries
our marker: the file ``.rospr-owned`` (a JSON object ``{"format": "rospr-destination", "kind": …}``)
that ``claim_folder`` writes into every folder it hands out, or another proof the caller passes
(``ours``: a run directory's validated ``results.json``, say). Anything else is the user's: refused
(``ForeignDestination``, naming the path, what is there, and the fix) before anything is written.

Links are never followed out: a destination that is a symbolic link, or a marker that is one, is
refused (a planted link would have every file written where it points). A file where a folder is
expected is refused. Two writers of one destination do not interleave: ``claim_folder`` holds an
exclusive lock (``.rospr-owned.lock``, ``flock``) for as long as the writer works, so the second
waits, then finds the folder ours (the first marked it) and replaces what the first wrote.

A file destination (``claim_file``) is ours when it is absent, or a regular file that ``ours``
accepts, and never one of the files the command read (``inputs``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

from rospr.errors import RosprError

MARKER = ".rospr-owned"
LOCK = MARKER + ".lock"
FORMAT = "rospr-destination"
# the kind of a rows folder ``rospr data synth`` wrote: its readers name the rows synthetic (``is_synthetic``)
SYNTHETIC_ROWS = "synthetic-rows"


class ForeignDestination(RosprError, ValueError):
    """A destination that is not ours to write. The message names the path and the fix."""


def marker_kind(folder: Path) -> str | None:
    """The ``kind`` of our marker in ``folder`` (a regular file, not a link), or None."""
    path = Path(folder) / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body.get("kind") if isinstance(body, dict) and body.get("format") == FORMAT else None


def is_synthetic(folder: Path) -> bool:
    """Whether the rows folder ``folder`` holds synthetic rows (``rospr data synth`` marked it)."""
    return marker_kind(folder) == SYNTHETIC_ROWS


def check_folder(folder: Path, kind: str, fix: str, ours: Callable[[Path], bool] | None = None) -> None:
    """Refuse (``ForeignDestination``) ``folder`` unless it is ours to write as ``kind`` (see the
    module docstring); ``fix`` ends the message (``choose another --out, or empty that folder``)."""
    folder = Path(folder)
    if folder.is_symlink():
        raise ForeignDestination(f"{folder}: is a symbolic link (to {os.readlink(folder)}); rospr writes only into "
                                 f"a real folder, never through a link: {fix}")
    if not os.path.lexists(folder):
        return
    if not folder.is_dir():
        raise ForeignDestination(f"{folder}: is a file, not a folder; {fix}")
    entries = sorted(e for e in os.listdir(folder) if e != LOCK)
    if not entries or marker_kind(folder) == kind or (ours is not None and ours(folder)):
        return
    found = marker_kind(folder)
    shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
    why = f"it is rospr's {found}, not a {kind}" if found else f"it holds {shown}, and no {MARKER} of rospr"
    raise ForeignDestination(f"{folder}: not a folder rospr wrote ({why}), so nothing there is replaced; {fix}")


@contextlib.contextmanager
def claim_folder(folder: str | os.PathLike, kind: str, fix: str,
                 ours: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """The folder ``folder``, checked (``check_folder``), created, locked against a second writer
    (who waits) and checked again once the lock is held, then marked ours (``kind``) before the
    block writes into it, so a later claim of the same ``kind`` may replace its content."""
    folder = Path(folder)
    check_folder(folder, kind, fix, ours)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0),
                 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a second writer of this folder waits here
        check_folder(folder, kind, fix, ours)  # what the first writer left, or what appeared meanwhile
        mark(folder, kind)  # ours from now: a writer killed mid-way leaves a folder the next claim may replace
        yield folder
    finally:
        os.close(fd)


def mark(folder: Path, kind: str) -> None:
    """Write our marker of ``kind`` into ``folder`` (replacing ours; never through a link). An
    ``OSError`` (a full disk, say) names the marker and leaves no temporary file behind."""
    path = Path(folder) / MARKER
    if path.is_symlink():
        path.unlink()
    tmp = path.with_name(f"{MARKER}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"format": FORMAT, "kind": kind}) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), exc.filename or str(path)) from exc


def claim_file(path: str | os.PathLike, fix: str, ours: Callable[[Path], bool],
               inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """``path`` when it is ours to write: absent, or a regular file (not a link) that ``ours`` accepts,
    and not one of ``inputs`` (the files the command read, compared by identity). Refuses
    (``ForeignDestination``, naming the path and ``fix``) otherwise."""
    path = Path(path)
    if path.is_symlink():
        raise ForeignDestination(f"{path}: is a symbolic link (to {os.readlink(path)}); rospr never writes "
                                 f"through a link: {fix}")
    for source in inputs:
        if os.path.lexists(path) and Path(source).exists() and os.path.samefile(path, source):
            raise ForeignDestination(f"{path}: is {source}, which this command reads; it is not overwritten: {fix}")
    if not os.path.lexists(path):
        return path
    if not path.is_file():
        raise ForeignDestination(f"{path}: is not a regular file; {fix}")
    if not ours(path):
        raise ForeignDestination(f"{path}: not a file rospr wrote for this command, so it is not replaced; {fix}")
    return path
