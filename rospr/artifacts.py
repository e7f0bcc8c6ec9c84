"""On-disk artifacts of the method (prompt banks, libraries): atomic writes, hashes, manifests, seals.

Every artifact is plain data: safetensors for arrays, JSON for manifests, FAISS's own format for
indexes. Never pickle. A manifest carries the sha256 of every file it names and a ``manifest_hash``
over its own canonical JSON, so an edit to any file (or to the manifest) is found on load.

Large files (checkpoint weights, exported graphs) have their sha256 remembered by what the file
system says about each file. ``FileDigests(memo)`` hashes a file once and remembers the digest in a side file (``memo``, JSON)
under the file's stat key: device, inode, size, mtime_ns and ctime_ns. While the key is unchanged
the remembered digest is returned without reading the file; ``full=True`` always reads it.

What the stat key guarantees, and what it does not:

- Every change made through the file system (a write, a truncate, a rename over the file, a
  ``chmod``, and even ``os.utime`` that puts the old mtime back) sets the inode's ctime to the
  current time, and only the kernel sets ctime: an unprivileged user cannot restore it. So a byte
  flipped in place, with size and mtime restored, still changes the key, and the file is read again.
- Not caught: a change beneath the file system (bit rot on the disk, a write to the raw block
  device, root changing the clock and then the file), and a change between the check and the moment
  the file is used. ``rospr verify`` reads every byte (``full=True``) for those.
- ctime has the resolution of the kernel's coarse clock (milliseconds): a file written twice within
  one tick can keep its ctime. A digest is therefore remembered only for a file whose ctime is more
  than ``RACY_S`` seconds old, and only when the file's stat did not change while it was read (git
  handles its "racily clean" index entries the same way).

The side file is an optimisation, never a source of trust by itself: a digest is remembered only
after the file was read in full, and a side file that cannot be read or written is ignored (the file
is then hashed every time). One helper for every large artifact (exported graphs, model weights).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rospr.cachedirs import cache_path
from rospr.canonical import digest_json, sha256_file  # sha256_file: imported from here by callers
from rospr.errors import RosprError

log = logging.getLogger(__name__)


class ArtifactError(RosprError, ValueError):
    """An artifact on disk that cannot be used. The message names the file, what is wrong and the fix."""


class _Repeated(dict):
    """A parsed JSON object in which ``key`` appeared more than once (only while refusing it)."""

    key: str = ""


def _member(path: str, key) -> str:
    return f"{path}.{key}" if isinstance(key, str) and key.isidentifier() else f"{path}[{json.dumps(key)}]"


def _find(value, target, path: str) -> str | None:
    """The path (``$.examples[3].target_scores``) of object ``target`` inside ``value``."""
    if value is target:
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if isinstance(v, (dict, list)):
            found = _find(v, target, _member(path, k) if isinstance(value, dict) else f"{path}[{k}]")
            if found is not None:
                return found
    return None


def strict_loads(text: str, where: str | Path, error: type[ValueError], fix: str, line: int | None = None):
    """``json.loads(text)`` that refuses (``error``, naming ``where``, the key and the path of its
    object, ``$`` the top) an object with a key given twice: ``json.loads`` would keep the last value
    silently, and which one the writer meant cannot be known (another reader keeps the first).
    Raises ``json.JSONDecodeError`` for invalid JSON as ``json.loads`` does."""
    repeated: list[_Repeated] = []

    def pairs_hook(pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen: set = set()
            obj = _Repeated(obj)
            obj.key = next(k for k, _ in pairs if k in seen or seen.add(k))
            repeated.append(obj)
        return obj

    try:
        data = json.loads(text, object_pairs_hook=pairs_hook)
    except RecursionError:  # the parser's depth budget is the interpreter's recursion limit
        raise error(f"{where}: nested deeper than the JSON reader allows (about {sys.getrecursionlimit()} "
                    f"levels of brackets); {fix}") from None
    if repeated:
        # the first one still in the document (an object given twice itself may have been dropped)
        first, path = next(((r, p) for r in repeated if (p := _find(data, r, "$")) is not None),
                           (repeated[0], "an object"))
        at = f"line {line}, " if line is not None else ""
        raise error(f"{where}: {at}key {first.key!r} appears more than once in {path} (JSON keeps only the last "
                    f"value, so which one was meant cannot be known); {fix}")
    return data


def json_document(text: str, where: str | Path, error: type[ValueError], fix: str, expect: type = dict):
    """The JSON value of ``text``, which must be an ``expect`` (dict or list): the one parser of the JSON
    files a user or a run supplies (checkpoint configs, results files, task.json, row lists). Refuses
    (``error``, naming ``where``, the position and ``fix``) invalid JSON, an object with a key given
    twice (``strict_loads``: naming the key and its object's path) and a value of another type."""
    try:
        data = strict_loads(text, where, error, fix)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {fix}") from None
    if not isinstance(data, expect):
        kind = {dict: "object", list: "list"}.get(expect, expect.__name__)
        raise error(f"{where}: a JSON {kind} is expected, not a {type(data).__name__}; {fix}")
    return data


def json_lines(text: str, where: str | Path, error: type[ValueError], fix: str) -> list[dict]:
    """The objects of JSON-lines ``text`` (blank lines skipped): the one reader of records files and
    row files. Refuses (``error``, naming ``where``, the line and ``fix``) a line that is not JSON, not
    a JSON object, or with an object that gives a key twice (``strict_loads``)."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = strict_loads(line, where, error, fix, line=i)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: line {i} is not valid JSON ({exc.msg}); {fix}") from None
        if not isinstance(obj, dict):
            raise error(f"{where}: line {i} is a {type(obj).__name__}, not a JSON object; {fix}")
        out.append(obj)
    return out


def file_mode(private: bool = False) -> int:
    """The permission bits of a new file: ``0o600`` when ``private`` (secrets), else ``0o666`` less the
    process's umask, as ``open()`` would give (a user's outputs follow their umask)."""
    if private:
        return 0o600
    return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux reports the umask without changing it (os.umask must set one to read it)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, private: bool = False) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a part.

    The file gets ``file_mode(private)``: the umask's mode like any other tool's output, ``0o600``
    only for secrets (``private=True``).
    An ``OSError`` (disk full, read-only or unwritable folder) is raised again with ``path`` as its
    ``filename`` (a failed ``write`` names no file), the half-written temporary file removed and the
    old file, if any, untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), file_mode(private))  # mkstemp makes 0600 whatever the umask
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class FileRef:
    """A regular file as it was when its bytes were read: ``path`` and its (device, inode, size,
    mtime_ns) then (``read_file_ref``)."""

    path: Path
    stat: tuple[int, int, int, int]


def _stat_sig(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def read_file_ref(path: Path) -> tuple[bytes, FileRef]:
    """The bytes of the regular file ``path`` (a symbolic link is refused: ``OSError`` ELOOP) and a
    ``FileRef`` of the file they came from (stat taken on the open file, before and after reading: a
    file changed while read raises ``OSError``)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read()
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if _stat_sig(before) != _stat_sig(after) or len(data) != after.st_size:
        raise OSError(errno.EAGAIN, "changed while it was read", str(path))
    return data, FileRef(Path(path), _stat_sig(after))


def atomic_link_or_write(path: Path, data: bytes, source: FileRef | None) -> bool:
    """``atomic_write_bytes(path, data)``, done by a hard link to ``source`` when ``source`` is still the
    file that ``data`` was read from (same device, inode, size and mtime, checked on the new link):
    nothing is copied and nothing needs an fsync (``source``'s bytes are on disk already). Any failure
    to link (another file system, links not allowed, the source replaced or gone) writes ``data``
    instead. Returns whether it linked. The two names then share one file: replacing either by a
    rename (as every writer here does) leaves the other as it was."""
    path = Path(path)
    if source is not None:
        tmp = path.parent / f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.link"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.link(source.path, tmp, follow_symlinks=False)
            try:
                if _stat_sig(os.lstat(tmp)) == source.stat:
                    os.replace(tmp, path)
                    return True
            finally:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
    atomic_write_bytes(path, data)
    return False


def seal(manifest: dict) -> dict:
    """``manifest`` with ``manifest_hash`` set to the sha256 of its canonical JSON (hash excluded)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_hash"}
    return {**body, "manifest_hash": digest_json(body)}


def write_manifest(path: Path, manifest: dict) -> dict:
    """Seal and atomically write a manifest; returns the sealed manifest."""
    sealed = seal(manifest)
    atomic_write_bytes(path, (json.dumps(sealed, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return sealed


def read_manifest(path: Path, kind: str, version: int, fix: str | None = None,
                  error: type[ValueError] = ArtifactError) -> dict:
    """Read a manifest and check its format, version and ``manifest_hash``: the one reader of sealed
    manifests (banks, libraries, and through ``rospr.store`` every cache entry).

    Refuses (``error``, default ``ArtifactError``, naming the file, the field and ``fix``, default
    "rebuild the <kind>") a missing or unparsable file, an object with a key given twice
    (``strict_loads``), another format or version, and a manifest whose content no longer matches its
    hash (edited on disk) or cannot be hashed (a NaN: not what ``seal`` wrote).
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no manifest; {fix or f'build the {kind} first'}")
    try:
        manifest = strict_loads(path.read_text(encoding="utf-8"), path, error,
                                fix or f"rebuild the {kind} or restore the file")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a readable JSON manifest ({exc}); {fix or f'rebuild the {kind}'}") from None
    return check_sealed(manifest, path, kind, version, fix, error)


def holds_manifest(path: Path, kind: str, version: int) -> bool:
    """Whether ``path`` is a readable sealed manifest of ``kind`` and ``version`` (``read_manifest``'s
    checks, answered as a yes or no: an ownership proof for an output written before rospr marked its
    folders)."""
    try:
        read_manifest(path, kind, version)
    except (ArtifactError, OSError):
        return False
    return True


def check_sealed(manifest: Any, path: Path, kind: str, version: int, fix: str | None = None,
                 error: type[ValueError] = ArtifactError) -> dict:
    """``manifest`` (read from ``path``) once it is an object of format ``kind`` and ``version`` whose
    ``manifest_hash`` matches its content: the one seal check (``read_manifest`` reads and checks;
    a caller that parsed the manifest itself checks it here). Refuses (``error``, naming ``path``,
    the field and ``fix``). A manifest without a seal and without another format (``format`` and
    ``version`` came with the seal) is named as one written before sealing, whatever its version."""
    unsealed = isinstance(manifest, dict) and "manifest_hash" not in manifest and manifest.get("format") in (None, kind)
    if unsealed:
        raise error(f"{path}: field 'manifest_hash' (the seal over every field) is missing: written before rospr "
                    f"sealed its manifests; {fix or f'rebuild the {kind}'}")
    if not isinstance(manifest, dict) or manifest.get("format") != kind:
        raise error(f"{path}: field 'format' is not {kind!r}; this is not a {kind} manifest")
    if manifest.get("version") != version:
        raise error(f"{path}: field 'version' is {manifest.get('version')!r}, this rospr reads "
                    f"{version}; {fix or f'rebuild the {kind}'}")
    try:
        sealed = seal(manifest)["manifest_hash"] == manifest["manifest_hash"]
    except (TypeError, ValueError):  # not canonical JSON (a NaN): not what seal wrote
        sealed = False
    if not sealed:
        raise error(f"{path}: the manifest does not match its manifest_hash (edited on disk?); "
                    f"{fix or f'rebuild the {kind} or restore the file'}")
    return manifest


def check_file(path: Path, expected_sha256: str, kind: str) -> None:
    """Refuse a file that is missing or whose sha256 differs from the manifest's."""
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: missing from the {kind}; rebuild it")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: sha256 {actual[:12]}… differs from the manifest's {expected_sha256[:12]}… "
                            f"(edited on disk?); rebuild the {kind} or restore the file")


# -- remembered digests of large files -------------------------------------------------------------
MEMO_FORMAT = "rospr-file-digests"
MEMO_VERSION = 1
RACY_S = 2.0  # a file changed this recently may change again within the same ctime tick


def default_memo() -> Path:
    """The side file where checkpoint weight digests are remembered: ``$ROSPR_DIGEST_MEMO``, else
    ``digests.json`` under the user cache root, beside the project's other caches
    (``rospr.cachedirs``: ``$ROSPR_HOME``, else ``$XDG_CACHE_HOME/rospr``, else ``~/.cache/rospr``)."""
    return cache_path("digests")


def stat_key(st: os.stat_result) -> list[int]:
    """What identifies one state of a file: device, inode, size, mtime_ns, ctime_ns."""
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class FileDigests:
    """sha256 of files, remembered in ``memo`` (None: nothing remembered, every file read in full)."""

    def __init__(self, memo: str | Path | None) -> None:
        self.memo = Path(memo) if memo is not None else None
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.memo is not None and self.memo.is_file():
            try:
                data = json.loads(self.memo.read_text(encoding="utf-8"))
                if data.get("format") == MEMO_FORMAT and data.get("version") == MEMO_VERSION:
                    self.entries = dict(data.get("files") or {})
            except (OSError, ValueError, AttributeError) as exc:
                log.debug("%s: unreadable digest memo (%s); hashing files in full", self.memo, exc)

    def sha256(self, path: str | Path, full: bool = False) -> str:
        """The sha256 of ``path``: remembered when its stat key is unchanged (and not ``full``), else
        read in full (and remembered when the file is settled). Raises ``OSError`` for a missing file."""
        path = Path(path)
        name = str(path.resolve())
        key = stat_key(os.stat(path))
        known = self.entries.get(name)
        if not full and known and known.get("stat") == key and isinstance(known.get("sha256"), str):
            return known["sha256"]
        with open(path, "rb") as fh:
            before = stat_key(os.fstat(fh.fileno()))
            digest = sha256_file(fh.fileno())
            after = stat_key(os.fstat(fh.fileno()))
        settled = before == after and time.time_ns() - after[4] > RACY_S * 1e9
        if settled:
            self.entries[name] = {"stat": after, "sha256": digest}
            self.changed = True
        elif name in self.entries:
            del self.entries[name]
            self.changed = True
        return digest

    def save(self) -> None:
        """Write the side file (atomically); a side file that cannot be written is skipped."""
        if self.memo is None or not self.changed:
            return
        body = {"format": MEMO_FORMAT, "version": MEMO_VERSION, "files": self.entries}
        try:
            self.memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.memo, (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
            self.changed = False
        except OSError as exc:
            log.debug("%s: cannot remember digests (%s); files will be hashed again", self.memo, exc)
