"""One content store: a folder is staged, sealed, published by a rename, verified on open, discarded aside.

Every cache of the project (units, ONNX exports, fetched data) and the run directory's replacement
of an earlier run are clients of this module, so crash safety is decided here once.

An entry is the folder ``<root>/<name>`` (``name`` may hold ``/``: ``ab/abcdef…``). Its life:

1. ``store.stage(name)``: a private folder ``.stage-<leaf>-<random>`` *beside* the destination (same
   file system, so the final rename is atomic and never crosses a device), with a lock file
   ``<stage>.lock`` held (``flock``) for as long as its writer lives.
2. The client writes into ``stage.path`` (``stage.write_bytes``/``write_json`` fsync each file and
   record its sha256; ``stage.adopt`` moves a file in, copying when it is on another device).
3. ``store.publish(stage, manifest)``: the manifest (when given) is sealed (``format``, ``version``,
   the client's fields, ``files``: the sha256 of every file written through the stage, and
   ``manifest_hash`` over its canonical JSON: the dialect of ``rospr.artifacts``) and written as
   ``store.manifest_name``; every file and folder of the stage is fsynced; the stage is renamed into
   place and the parent folder fsynced. A destination already there is kept when ``keep(dest)`` says
   it is good (a concurrent writer was first: this stage is discarded), else moved aside, replaced,
   and removed; if the rename fails the earlier entry is put back.
4. ``store.open(name, verify)``: ``None`` when absent; else what ``verify(folder)`` returns
   (default ``verify_sealed``: the sealed manifest, every listed file's sha256 checked); an entry
   that fails is logged, discarded and ``None`` returned (the cache belongs to the program: it is
   rebuilt). ``repair=False`` only looks.
5. ``store.discard(name)``: renamed aside (``.aside-<leaf>-<random>``) first, so no reader sees half
   of it, then removed.

A writer killed mid-way leaves only a stage (or an aside folder); the next ``stage``/``open`` beside
it sweeps those whose lock is free (their writer is dead), never a live writer's. Two writers of one
name each work in their own stage; the first rename wins.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from rospr.artifacts import read_manifest, seal
from rospr.canonical import digest_bytes, sha256_file
from rospr.errors import RosprError

log = logging.getLogger(__name__)

STAGE_PREFIX = ".stage-"
ASIDE_PREFIX = ".aside-"
LOCK_SUFFIX = ".lock"
ASIDE_SUFFIX = ".aside"  # a stage's own aside folder: the entry it replaces, until the rename is done


class StoreError(RosprError, ValueError):
    """An entry that fails its check. The message names the file, the field and the fix."""


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (a rename, a new file) durable; skipped where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: nothing more can be done there
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (links are not followed), the deepest first."""
    for root, dirs, names in os.walk(path, topdown=False):
        for name in names:
            p = os.path.join(root, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(root))


def _rel(name: str) -> str:
    """A file's name inside an entry as a clean relative POSIX path; refuses one that leaves it."""
    p = PurePosixPath(name)
    if p.is_absolute() or not p.parts or ".." in p.parts or "\\" in name:
        raise StoreError(f"{name!r}: not a path inside the entry")
    return p.as_posix()


@dataclass
class Stage:
    """A private folder being filled for the entry ``dest``; ``files``: sha256 of what was written."""

    path: Path
    dest: Path
    lock: Path
    fd: int
    files: dict[str, str] = field(default_factory=dict)

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write (and fsync) a file of the entry; returns and records its sha256."""
        rel = _rel(name)
        out = self.path / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.files[rel] = digest_bytes(data)
        return self.files[rel]

    def write_json(self, name: str, value: Any, indent: int | None = 1) -> str:
        """``write_bytes`` of ``value`` as JSON (UTF-8, a newline at the end)."""
        return self.write_bytes(name, (json.dumps(value, indent=indent, ensure_ascii=False) + "\n").encode("utf-8"))

    def adopt(self, name: str, src: Path) -> str:
        """Move the file ``src`` in as ``name`` (a copy when it lies on another device); returns and
        records its sha256."""
        rel = _rel(name)
        out = self.path / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_file(src)
        try:
            os.rename(src, out)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.copyfile(src, out)
            os.unlink(src)
        self.files[rel] = digest
        return digest


class ContentStore:
    """Entries under ``root``, each a folder published whole; see the module docstring.

    ``manifest_name``: the file ``publish`` seals into an entry; ``format`` and ``version``: what it
    records and what ``verify_sealed`` accepts.
    """

    def __init__(self, root: str | os.PathLike, format: str, version: int, manifest_name: str = "manifest.json",
                 fix: str = "it is rebuilt") -> None:
        self.root = Path(root)
        self.format, self.version, self.manifest_name, self.fix = format, version, manifest_name, fix

    def path(self, name: str) -> Path:
        """The folder of entry ``name``. Refuses (``StoreError``) a name that leaves the root and a path
        that passes through a symbolic link below the root: a link is never followed out of the store
        (one planted at ``<root>/prompts`` would have every entry written where it points)."""
        rel = _rel(name)
        at = self.root
        for part in PurePosixPath(rel).parts:
            at = at / part
            if at.is_symlink():
                raise StoreError(f"{at}: a symbolic link inside the store {self.root}; links are not followed out "
                                 "of a store: remove the link (or point the setting at the folder it names)")
        return self.root / rel

    # -- writing -----------------------------------------------------------------------------------
    def stage(self, name: str) -> Stage:
        """A new stage for entry ``name`` (its parent folder created, dead stages beside it swept)."""
        dest = self.path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep(dest.parent)
        while True:
            fd, lock = tempfile.mkstemp(prefix=f"{STAGE_PREFIX}{dest.name}-", suffix=LOCK_SUFFIX, dir=dest.parent)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:  # a sweeper may have removed the file between mkstemp and flock: start again
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        path = Path(lock[: -len(LOCK_SUFFIX)])
        path.mkdir()
        return Stage(path, dest, Path(lock), fd)

    def publish(self, stage: Stage, manifest: dict | None = None,
                keep: Callable[[Path], bool] | None = None) -> Path:
        """Seal ``manifest`` (``None``: the client wrote its own) into the stage and rename it into place;
        returns the entry. A destination already there is kept when ``keep(dest)`` (the stage is then
        discarded), else replaced (moved aside, renamed over, removed; put back when the rename fails).
        The stage is gone afterwards whatever happens."""
        dest = stage.dest
        try:
            if manifest is not None:
                body = {"format": self.format, "version": self.version, **manifest,
                        "files": dict(sorted(stage.files.items()))}
                stage.write_bytes(self.manifest_name,
                                  (json.dumps(seal(body), indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
            fsync_tree(stage.path)
            aside = None
            if os.path.lexists(dest):
                if keep is not None and keep(dest):
                    return dest
                # aside under this stage's lock, so no sweep removes it while it may still go back
                aside = self._aside(dest, stage.path.with_name(stage.path.name + ASIDE_SUFFIX))
            try:
                os.rename(stage.path, dest)
            except OSError:
                if aside is not None and not os.path.lexists(dest):  # put the earlier entry back
                    os.rename(aside / "entry", dest)
                if keep is not None and os.path.lexists(dest) and keep(dest):  # a concurrent writer was first
                    return dest
                raise
            finally:
                if aside is not None:
                    shutil.rmtree(aside, ignore_errors=True)
            fsync_dir(dest.parent)
            return dest
        finally:
            self.drop(stage)

    def drop(self, stage: Stage) -> None:
        """Remove a stage that will not be published (and its lock). Safe to call twice."""
        for folder in (stage.path, stage.path.with_name(stage.path.name + ASIDE_SUFFIX)):
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
        stage.lock.unlink(missing_ok=True)
        if stage.fd >= 0:
            os.close(stage.fd)
            stage.fd = -1

    # -- reading -----------------------------------------------------------------------------------
    def open(self, name: str, verify: Callable[[Path], Any] | None = None, repair: bool = True) -> Any:
        """What ``verify(folder)`` (default ``verify_sealed``: the manifest) returns for the entry
        ``name``; ``None`` when it is absent, and when the check fails (``StoreError``, ``ValueError``,
        ``OSError``: logged, then discarded). Dead stages beside it are swept. ``repair=False``: look
        only (nothing swept or discarded; a failed entry is left for ``publish`` to replace)."""
        dest = self.path(name)
        if repair and dest.parent.is_dir():
            sweep(dest.parent)
        if not os.path.lexists(dest):
            return None
        try:
            return (verify or self.verify_sealed)(dest)
        except (StoreError, ValueError, OSError) as exc:
            log.warning("%s", exc if isinstance(exc, StoreError) else f"{dest}: {exc}; {self.fix}")
            if repair:
                self.discard(name)
            return None

    def read_manifest(self, folder: Path) -> dict:
        """The sealed manifest of ``folder`` (format, version and seal checked). Refuses (``StoreError``)."""
        return read_sealed(Path(folder) / self.manifest_name, self.format, self.version, self.fix)

    def verify_sealed(self, folder: Path) -> dict:
        """The manifest of ``folder`` once its seal, format and version hold and every file it lists has
        its sha256. Refuses (``StoreError`` naming the file)."""
        manifest = self.read_manifest(folder)
        check_files(folder, manifest.get("files"), Path(folder) / self.manifest_name, self.fix)
        return manifest

    def discard(self, name: str) -> None:
        """Remove entry ``name``: renamed aside first (readers never see half of it), then removed."""
        dest = self.path(name)
        aside = self._aside(dest) if os.path.lexists(dest) else None
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)

    @staticmethod
    def _aside(dest: Path, folder: Path | None = None) -> Path | None:
        """Move ``dest`` into ``folder`` (default: a fresh aside folder beside it), which is returned
        (``None`` if ``dest`` went away meanwhile)."""
        if folder is None:
            aside = Path(tempfile.mkdtemp(prefix=f"{ASIDE_PREFIX}{dest.name}-", dir=dest.parent))
        else:
            aside = folder
            aside.mkdir()
        try:
            os.rename(dest, aside / "entry")
        except FileNotFoundError:  # a concurrent caller moved it first
            shutil.rmtree(aside, ignore_errors=True)
            return None
        return aside


def read_sealed(path: Path, format: str, version: int, fix: str) -> dict:
    """A sealed manifest: strict JSON object, ``format`` and ``version`` as given, ``manifest_hash``
    matching (``rospr.artifacts.read_manifest``, the one reader). Refuses (``StoreError`` naming the
    file, the field and ``fix``)."""
    return read_manifest(path, format, version, fix=fix, error=StoreError)


def check_files(folder: Path, files: Any, where: Path, fix: str) -> None:
    """Every file in ``files`` (name -> sha256) is a regular file of ``folder`` with that digest.
    Refuses (``StoreError`` naming the file)."""
    if not isinstance(files, dict) or not files:
        raise StoreError(f"{where}: field 'files' (the sha256 of each file) is missing; {fix}")
    for name, expected in sorted(files.items()):
        path = Path(folder) / _rel(str(name))
        if path.is_symlink() or not path.is_file():
            raise StoreError(f"{path}: listed in {where} field 'files' but missing; {fix}")
        got = sha256_file(path)
        if got != expected:
            raise StoreError(f"{path}: sha256 {got[:12]}… differs from {where} files.{name} {str(expected)[:12]}… "
                             f"(changed after it was written); {fix}")


def sweep(folder: Path) -> int:
    """Remove the stages and aside folders in ``folder`` left by dead writers; returns how many.

    A stage (and its own aside folder, ``<stage>.aside``) is dead when its lock file is absent or can
    be locked (its writer's ``flock`` ended with its process); an aside folder of ``discard`` is
    always dead (``discard`` removes it at once: a sweep removing it too is harmless)."""
    swept = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        path = Path(folder) / name
        if name.startswith(ASIDE_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
        elif name.startswith(STAGE_PREFIX) and name.endswith(LOCK_SUFFIX):
            swept += _remove_if_dead(path, path.with_name(name[: -len(LOCK_SUFFIX)]))
        elif name.startswith(STAGE_PREFIX) and not os.path.lexists(
                f"{folder}/{name.removesuffix(ASIDE_SUFFIX)}{LOCK_SUFFIX}"):
            # the lock is created before the stage and removed after it: a stage without one is dead,
            # unless its writer published or dropped it just now (then it is gone already)
            shutil.rmtree(path, ignore_errors=True)
            swept += 1
    if swept:
        log.info("%s: removed %d unfinished write(s) left by a writer that stopped", folder, swept)
    return swept


def _remove_if_dead(lock: Path, stage: Path) -> int:
    """Remove ``stage`` and ``lock`` when the lock can be taken (its writer is dead): 1, else 0."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return 0
    try:  # removed while held: a writer that made this file just now finds it gone and starts again
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(f"{stage}{ASIDE_SUFFIX}", ignore_errors=True)
        lock.unlink(missing_ok=True)
        return 1
    finally:
        os.close(fd)


class FolderSwap:
    """Replace the entries ``names`` of ``folder`` (a folder that cannot itself be renamed: it holds a
    lock, the user chose it) all at once by those built in the staging folder ``folder/<new>``.

    ``begin`` makes the staging folder; ``commit`` moves the current entries into ``folder/<old>``,
    the staged ones into place, then renames the staging folder into ``<old>`` too: that rename is
    the commit point (atomic); ``<old>`` is removed last. Each step is made durable (the folder
    fsynced) before the next. ``recover``, at the next start, finishes or undoes what a killed
    process left: with the staging folder still there the swap had not committed and the earlier
    entries go back; without it only ``<old>`` is removed. ``abort`` drops an uncommitted stage.
    """

    def __init__(self, folder: str | os.PathLike, names: tuple[str, ...], new: str, old: str) -> None:
        self.folder, self.names = Path(folder), tuple(names)
        self.new, self.old = self.folder / new, self.folder / old

    def begin(self) -> Path:
        """The new staging folder (refuses, ``FileExistsError``, one already there: ``recover`` first)."""
        self.new.mkdir()
        fsync_dir(self.folder)
        return self.new

    def commit(self) -> None:
        """Put the staged entries in place of the current ones (see the class docstring)."""
        self.old.mkdir()
        for name in self.names:
            if os.path.lexists(self.folder / name):
                os.rename(self.folder / name, self.old / name)
        for name in self.names:
            if os.path.lexists(self.new / name):
                os.rename(self.new / name, self.folder / name)
        fsync_dir(self.old)
        fsync_dir(self.folder)
        os.rename(self.new, self.old / "staging")  # the commit point
        fsync_dir(self.folder)
        shutil.rmtree(self.old)

    def abort(self) -> None:
        """Drop an uncommitted staging folder; the current entries stay as they are."""
        shutil.rmtree(self.new, ignore_errors=True)

    def recover(self) -> bool:
        """Finish or undo a swap that a killed process left; drop a staging folder. True when an
        interrupted swap was undone (the earlier entries put back)."""
        undone = False
        if self.old.is_dir():
            if self.new.is_dir():  # not committed: the earlier entries go back in place
                for name in self.names:
                    if os.path.lexists(self.old / name):
                        if os.path.lexists(self.folder / name):
                            _remove(self.folder / name)  # a part of the new entries that was being moved in
                        os.rename(self.old / name, self.folder / name)
                fsync_dir(self.folder)
                undone = True
            shutil.rmtree(self.old)
        if self.new.is_dir():
            shutil.rmtree(self.new)
        return undone


def _remove(path: Path) -> None:
    """Remove an entry: a link itself (never what it points to), a folder, or a file."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
