"""Default task content from the package registry: promptsource's templates and BIG-bench's tasks.

Two pinned source distributions hold the data the harness needs on a fresh machine:

- ``promptsource==0.2.3``: all 279 ``promptsource/templates/<dataset>[/<subset>]/templates.yaml``
  (the package itself cannot be installed on Python >= 3.10, its sdist can be downloaded);
- ``bigbench==1.0.0``: ``bigbench/benchmark_tasks/<task>[/<subtask>]/task.json`` (1041 files; the
  sdist is 358 MB, the task files 1.7 GB unpacked; it has no per-task README files).

:func:`fetch` downloads one with ``pip download --no-deps --no-binary :all: --ignore-requires-python
--require-hashes`` (pip's own index settings apply), checks the archive's sha256 against the pinned
value, and unpacks only the data files into the cache::

    <cache>/promptsource-0.2.3/{templates/, LICENSE, PKG-INFO, promptsource-0.2.3.tar.gz, MANIFEST.json}
    <cache>/bigbench-1.0.0/{benchmark_tasks/, PKG-INFO, MANIFEST.json}

``<cache>`` is :func:`data_cache_dir` unless given. Nothing from the sdists is committed.

How pip is used, and why:

- ``pip download`` of an sdist builds its metadata (it runs the package's build backend in an
  isolated environment). ``--require-hashes`` with the pinned digest makes pip check the archive
  *before* that, so only the pinned code ever runs.
- pip >= 26 then refuses ``bigbench`` ("Distributions from PyPI cannot declare direct URL
  dependencies": its setup.py turns the bleurt zip it bundles into ``bleurt @ file://...``), after it
  has checked the digest and unpacked the archive. With ``--no-clean`` pip leaves that unpacked tree
  in our private temporary folder, and the data is taken from there. Older pips save the archive,
  which is then checked again here and unpacked by :func:`install_archive`.

Safety: no member path may leave the target (absolute paths and ``..`` are refused), data files must
be regular files (links are refused), and an archive that ends early is refused. Atomicity: the
cache is a ``rospr.store.ContentStore``: all is written into a stage next to the destination,
fsynced and renamed into place last, so a half-unpacked folder is never used, and a stage a killed
fetch leaves is swept by the next; ``MANIFEST.json`` (the pinned sdist and the sha256 of every
file, sealed by ``manifest_hash`` as every manifest of the store; caches of version 1, unsealed,
are still read) is written before the rename. :func:`cached` checks the manifest and its file
count (cheap); :func:`verify` re-hashes every file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Literal, Union

from rospr_harness.tasks.base import TaskError
from rospr.cachedirs import cache_path
from rospr.store import ContentStore, Stage, StoreError, read_sealed

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
DATA_FORMAT = "rospr-data-cache"
# 2: the store's sealed manifest (format, version, sdist, created, files, manifest_hash); 1 (read
# still): manifest_version, name, version, sdist_sha256, created, files, unsealed
MANIFEST_VERSION = 2
_CHUNK = 1 << 20

# Every network read has a total deadline (not only a per-packet one, which a server trickling a
# byte at a time never reaches): $ROSPR_NET_TIMEOUT seconds for one file read, $ROSPR_FETCH_TIMEOUT
# for one sdist download through pip (bigbench's is 358 MB).
NET_TIMEOUT_S = 120.0
FETCH_TIMEOUT_S = 3600.0


def deadline_s(variable: str, default: float) -> float:
    """Seconds from the environment variable ``variable`` (``default`` when unset). Refuses
    (``TaskError``) a value that is not a positive number."""
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 7 * 86400:
        raise TaskError(f"${variable}={raw!r}: give a number of seconds, more than 0 and at most a week")
    return value


class NetTimeout(TaskError):
    """A network read that did not finish within its deadline."""


def read_url(url: str, timeout_s: float | None = None, max_bytes: int = 1 << 30) -> bytes:
    """The body of ``url`` (http, https; other schemes through ``urllib``), read within a total
    deadline of ``timeout_s`` seconds (default ``$ROSPR_NET_TIMEOUT`` or 120): connecting, waiting,
    headers and body together, however slowly the server sends. Logs the wait before it starts.
    Refuses: ``NetTimeout`` saying what timed out after how long; ``OSError`` (or
    ``urllib.error.URLError``) for a failed connection or an HTTP status other than 200."""
    import http.client
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request

    limit = deadline_s("ROSPR_NET_TIMEOUT", NET_TIMEOUT_S) if timeout_s is None else timeout_s
    log.info("reading %s (waiting up to %g s; $ROSPR_NET_TIMEOUT sets it)", url, limit)
    start = time.monotonic()
    for _redirect in range(5):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            with urllib.request.urlopen(url, timeout=limit) as resp:  # noqa: S310 - file:// and the like
                return resp.read(max_bytes)
        left = limit - (time.monotonic() - start)
        if left <= 0:
            break
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        conn = cls(parts.hostname, parts.port, timeout=left)
        expired = threading.Event()

        def cut(conn=conn, expired=expired) -> None:  # the deadline: any read blocked on the socket ends
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(2)
                except OSError:
                    pass

        timer = threading.Timer(left, cut)
        timer.daemon = True
        timer.start()
        try:
            conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else "") or "/",
                         headers={"User-Agent": "rospr", "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                continue
            if resp.status != 200:
                raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, None)
            body = resp.read(max_bytes)
            if not expired.is_set():
                return body
        except (OSError, http.client.HTTPException):
            if not expired.is_set():
                raise
        finally:
            timer.cancel()
            conn.close()
        break
    raise NetTimeout(f"{url}: timed out after {limit:g} s (no complete answer in that time; $ROSPR_NET_TIMEOUT "
                     "sets the wait)")


@dataclass(frozen=True)
class Sdist:
    """A pinned source distribution and the data files kept from it.

    ``data_root``: the folder inside the archive's top folder whose files are kept (e.g.
    ``promptsource/templates``); ``folder``: its name in the cache; ``data_names``: the file names
    kept under it; ``extras``: files of the archive's top folder kept beside it (license,
    PKG-INFO); ``files``: how many data files the pinned archive holds (the cheap check);
    ``keep_sdist``: keep the downloaded archive in the cache.
    """

    what: str
    name: str
    version: str
    sha256: str
    data_root: str
    folder: str
    data_names: tuple[str, ...]
    extras: tuple[str, ...]
    files: int
    keep_sdist: bool

    @property
    def dist(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def archive_name(self) -> str:
        return f"{self.dist}.tar.gz"

    def wanted(self, rel: PurePosixPath) -> bool:
        return rel.name in self.data_names


# The digests were measured once, on 2025-11-23, from the files pip downloaded from pypi.org:
# promptsource with `pip download --no-deps --no-binary :all: --ignore-requires-python
# promptsource==0.2.3` then `sha256sum`; bigbench from pip's own hash check (a requirement pinned to
# a wrong `--hash` makes pip print the digest it got). The file counts were counted in the archives.
SOURCES: dict[str, Sdist] = {
    "templates": Sdist(
        what="templates",
        name="promptsource",
        version="0.2.3",
        sha256="f106c889778a0fe5590e7183904bf964e1a01691c8a29451e44f3df5ddef05f5",
        data_root="promptsource/templates",
        folder="templates",
        data_names=("templates.yaml",),
        extras=("LICENSE", "PKG-INFO"),
        files=279,
        keep_sdist=True,  # small (228 kB); the parity test reads promptsource's own templates.py in it
    ),
    "bigbench": Sdist(
        what="bigbench",
        name="bigbench",
        version="1.0.0",
        sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
        data_root="bigbench/benchmark_tasks",
        folder="benchmark_tasks",
        data_names=("task.json", "README.md"),  # the 1.0.0 sdist holds no README.md
        extras=("PKG-INFO",),  # the sdist has no LICENSE file (BIG-bench is Apache 2.0)
        files=1041,
        keep_sdist=False,  # 358 MB, and nothing reads it once unpacked
    ),
}

What = Literal["templates", "bigbench"]
SpecLike = Union[str, Sdist]

_FIX_OFFLINE = {
    "templates": "or set data.templates_dir (a promptsource templates/ folder) or data.data_dir",
    "bigbench": "or set data.bigbench (a folder of <task>/task.json, or a base URL) or data.data_dir",
}


def _spec(what: SpecLike) -> Sdist:
    if isinstance(what, Sdist):
        return what
    try:
        return SOURCES[what]
    except KeyError:
        raise TaskError(f"unknown data source {what!r}: use one of {sorted(SOURCES)}") from None


def data_cache_dir() -> Path:
    """The data cache: ``$ROSPR_DATA_CACHE``, else ``data/`` under the user cache root
    (``rospr.cachedirs``: ``$ROSPR_HOME``, else ``$XDG_CACHE_HOME/rospr``, else ``~/.cache/rospr``).
    Nothing is created."""
    return cache_path("data")


def _store(cache_dir: Path | None) -> ContentStore:
    """The data cache as a ``rospr.store.ContentStore`` (entries ``<dist>/``, manifest ``MANIFEST.json``)."""
    return ContentStore(cache_path("data", cache_dir), DATA_FORMAT, MANIFEST_VERSION, manifest_name=MANIFEST,
                        fix="fetching again (rospr data fetch --force)")


def _dist_dir(spec: Sdist, cache_dir: Path | None) -> Path:
    return _store(cache_dir).path(spec.dist)


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Checking what is in the cache
# --------------------------------------------------------------------------------------------


def _read_manifest(spec: Sdist, dist_dir: Path) -> dict | None:
    """The manifest of ``dist_dir`` when it is for ``spec`` and lists the pinned number of data
    files; ``None`` otherwise (missing, unreadable, unsealed or edited, other sdist, wrong count).
    Two dialects are read: the store's sealed one (``MANIFEST_VERSION``, written now) and version 1
    (``manifest_version: 1``, unsealed, written before the store), so existing caches stay usable."""
    path = dist_dir / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("format") == DATA_FORMAT:
        try:
            data = read_sealed(path, DATA_FORMAT, MANIFEST_VERSION, "fetch again")
        except StoreError:
            return None
        sdist = data.get("sdist") or {}
        pinned = (sdist.get("name"), sdist.get("version"), sdist.get("sha256"))
    elif data.get("manifest_version") == 1:
        pinned = (data.get("name"), data.get("version"), data.get("sdist_sha256"))
    else:
        return None
    if pinned != (spec.name, spec.version, spec.sha256) or not isinstance(data.get("files"), dict):
        return None
    prefix = spec.folder + "/"
    if sum(1 for rel in data["files"] if rel.startswith(prefix)) != spec.files:
        return None
    return data


def cached(what: SpecLike, cache_dir: Path | None = None) -> Path | None:
    """The unpacked data folder (``templates/`` or ``benchmark_tasks/``) when present and intact.

    Cheap: the manifest must be for the pinned sdist (name, version, digest) and list the pinned
    number of data files, and the folder must exist. Returns ``None`` otherwise. :func:`verify`
    re-hashes every file.
    """
    spec = _spec(what)

    def check(dist_dir: Path) -> Path:
        if _read_manifest(spec, dist_dir) is None or not (dist_dir / spec.folder).is_dir():
            raise StoreError(f"{dist_dir / MANIFEST}: missing, unreadable, or not for {spec.dist} with {spec.files} "
                             f"files, or no {spec.folder}/ beside it")
        return dist_dir / spec.folder

    return _store(cache_dir).open(spec.dist, verify=check, repair=False)  # a copy that fails is replaced by _install


def verify(what: SpecLike, cache_dir: Path | None = None) -> list[str]:
    """Re-hash every file of the cached copy of ``what``; the problems found (empty: intact).

    A problem is a missing manifest, a file listed but missing or with another digest, or a file
    present but not listed.
    """
    spec = _spec(what)
    dist_dir = _dist_dir(spec, cache_dir)
    manifest = _read_manifest(spec, dist_dir)
    if manifest is None:
        return [f"{dist_dir / MANIFEST}: missing, unreadable, or not for {spec.dist} with {spec.files} files"]
    problems = []
    for rel, digest in sorted(manifest["files"].items()):
        path = dist_dir / rel
        if not path.is_file() or path.is_symlink():
            problems.append(f"{path}: missing")
        elif file_sha256(path) != digest:
            problems.append(f"{path}: sha256 differs from the manifest")
    listed = set(manifest["files"])
    for root, _dirs, names in os.walk(dist_dir / spec.folder):
        for name in names:
            rel = (Path(root) / name).relative_to(dist_dir).as_posix()
            if rel not in listed:
                problems.append(f"{dist_dir / rel}: not in the manifest")
    return problems


def sdist_path(what: SpecLike, cache_dir: Path | None = None) -> Path | None:
    """The kept ``.tar.gz`` of ``what`` when present with the pinned sha256, else ``None``
    (bigbench's archive is not kept)."""
    spec = _spec(what)
    path = _dist_dir(spec, cache_dir) / spec.archive_name
    if not path.is_file() or file_sha256(path) != spec.sha256:
        return None
    return path


# --------------------------------------------------------------------------------------------
# Unpacking
# --------------------------------------------------------------------------------------------


def _safe_rel(name: str, where: str) -> PurePosixPath:
    """A member name as a relative path; refuses absolute paths and ``..`` components."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or "\\" in name or name.startswith("/"):
        raise TaskError(
            f"{where}: member {name!r} would be written outside the target folder; the archive is "
            "not a clean sdist, delete it and fetch again"
        )
    return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])


class _Writer:
    """Writes the kept files of one sdist into a store ``stage`` and records their digests."""

    def __init__(self, spec: Sdist, stage: Stage, where: str) -> None:
        self.spec = spec
        self.stage = stage
        self.where = where
        self.files = stage.files  # what the manifest lists: the data files, the extras, the kept sdist
        self.data_root = PurePosixPath(spec.data_root)

    def target(self, rel: PurePosixPath) -> str | None:
        """Where a path relative to the archive's top folder goes in the cache (``None``: skip)."""
        if len(rel.parts) == 1 and rel.name in self.spec.extras:
            return rel.name
        if rel.parts[: len(self.data_root.parts)] == self.data_root.parts and self.spec.wanted(rel):
            inner = PurePosixPath(*rel.parts[len(self.data_root.parts):])
            return (PurePosixPath(self.spec.folder) / inner).as_posix()
        return None

    def write(self, dest_rel: str, src: IO[bytes]) -> None:
        dest = self.stage.path / dest_rel
        h = hashlib.sha256()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "xb") as out:
                for chunk in iter(lambda: src.read(_CHUNK), b""):
                    h.update(chunk)
                    out.write(chunk)
        except FileExistsError as e:
            raise TaskError(f"{self.where}: {dest_rel} appears twice; the archive is not a clean sdist") from e
        except OSError as e:
            raise TaskError(
                f"{dest}: cannot write: {e}; free disk space or point $ROSPR_DATA_CACHE (or --cache-dir) "
                "at a writable folder"
            ) from e
        self.files[dest_rel] = h.hexdigest()

    def move(self, dest_rel: str, path: Path) -> None:
        """Record ``path``'s digest and move it to ``dest_rel`` (a copy across devices)."""
        dest = self.stage.path / dest_rel
        if dest_rel in self.files:
            raise TaskError(f"{self.where}: {dest_rel} appears twice; the archive is not a clean sdist")
        try:
            digest = self.stage.adopt(dest_rel, path)
        except OSError as e:
            raise TaskError(
                f"{dest}: cannot write: {e}; free disk space or point $ROSPR_DATA_CACHE (or --cache-dir) "
                "at a writable folder"
            ) from e
        self.files[dest_rel] = digest

    def check_count(self) -> None:
        prefix = self.spec.folder + "/"
        found = sum(1 for rel in self.files if rel.startswith(prefix))
        if found != self.spec.files:
            raise TaskError(
                f"{self.where}: {found} files named {list(self.spec.data_names)} under "
                f"{self.spec.data_root}/, the pinned {self.spec.dist} holds {self.spec.files}; the "
                "archive is not the pinned sdist, delete it and fetch again"
            )


def _top_rel(name: str, where: str, top: str | None) -> tuple[str, PurePosixPath]:
    """Split a member name into the archive's top folder and the path below it."""
    rel = _safe_rel(name, where)
    if not rel.parts:
        return top or "", rel
    return rel.parts[0], PurePosixPath(*rel.parts[1:])


def _unpack_tar(spec: Sdist, archive: Path, writer: _Writer) -> None:
    where = str(archive)
    top: str | None = None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                head, rel = _top_rel(member.name, where, top)
                if top is None:
                    top = head
                elif head != top:
                    raise TaskError(
                        f"{where}: member {member.name!r} is outside the top folder {top!r}; the archive "
                        "is not a clean sdist"
                    )
                if not rel.parts:
                    continue
                dest_rel = writer.target(rel)
                inside_data = rel.parts[: len(writer.data_root.parts)] == writer.data_root.parts
                if member.issym() or member.islnk():
                    if dest_rel is not None or inside_data:
                        raise TaskError(
                            f"{where}: member {member.name!r} is a link; data files must be regular "
                            "files, the archive is not a clean sdist"
                        )
                    continue
                if dest_rel is None or member.isdir():
                    continue
                if not member.isreg():
                    raise TaskError(f"{where}: member {member.name!r} is not a regular file")
                src = tar.extractfile(member)
                if src is None:
                    raise TaskError(f"{where}: member {member.name!r} has no content")
                with src:
                    writer.write(dest_rel, src)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise TaskError(
            f"{where}: the archive is damaged or truncated ({type(e).__name__}: {e}); delete it and "
            "fetch again (rospr data fetch --force)"
        ) from e
    except OSError as e:
        raise TaskError(f"{where}: cannot read the archive: {e}; delete it and fetch again") from e


def _unpack_tree(spec: Sdist, tree: Path, writer: _Writer) -> None:
    """Move the kept files out of a folder that pip unpacked (the archive's top folder); moving,
    not copying, because bigbench's task files are 1.7 GB."""
    for root, dirs, names in os.walk(tree, followlinks=False):
        dirs.sort()
        for name in [*dirs, *sorted(names)]:
            path = Path(root) / name
            rel = PurePosixPath(path.relative_to(tree).as_posix())
            dest_rel = writer.target(rel)
            inside_data = rel.parts[: len(writer.data_root.parts)] == writer.data_root.parts
            if path.is_symlink():
                if dest_rel is not None or inside_data:
                    raise TaskError(f"{path}: a link; data files must be regular files, fetch again")
                continue
            if dest_rel is not None and path.is_file():
                writer.move(dest_rel, path)


def _install(spec: Sdist, store: ContentStore, fill) -> Path:
    """Build the cache folder of ``spec`` in a store stage with ``fill(writer)``, write its manifest and
    publish it (``rospr.store``: fsynced, renamed into place); returns the data folder. An existing
    copy is replaced only after the new one is complete, and put back if the rename fails."""
    try:
        stage = store.stage(spec.dist)
    except OSError as e:
        raise TaskError(f"{store.root}: cannot create the data cache: {e}; set $ROSPR_DATA_CACHE or --cache-dir") from e
    dist_dir = stage.dest
    try:
        writer = _Writer(spec, stage, str(stage.path))
        fill(writer)
        writer.check_count()
        store.publish(stage, {"sdist": {"name": spec.name, "version": spec.version, "sha256": spec.sha256},
                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    except OSError as e:
        raise TaskError(
            f"{dist_dir}: cannot write the data cache: {e}; free disk space or set $ROSPR_DATA_CACHE "
            "(or --cache-dir) to a writable folder"
        ) from e
    finally:
        store.drop(stage)
    log.info("unpacked %d %s files of %s into %s", spec.files, spec.folder, spec.dist, dist_dir)
    return dist_dir / spec.folder


def install_archive(what: SpecLike, archive: Path, cache_dir: Path | None = None) -> Path:
    """Check ``archive`` against the pinned sha256 and unpack its data files into the cache.

    Returns the data folder. Refuses (``TaskError``): a digest other than the pinned one (both named),
    members escaping the target or links among the data, a damaged or truncated archive, a data file
    count other than the pinned one, and disk errors.
    """
    spec = _spec(what)
    archive = Path(archive)
    digest = file_sha256(archive)
    if digest != spec.sha256:
        raise TaskError(
            f"{archive}: sha256 {digest}, the pinned {spec.dist} has {spec.sha256}; the download is "
            "damaged or not the pinned release: delete it and fetch again"
        )

    def fill(writer: _Writer) -> None:
        _unpack_tar(spec, archive, writer)
        if spec.keep_sdist:
            with open(archive, "rb") as src:
                writer.write(spec.archive_name, src)

    return _install(spec, _store(cache_dir), fill)


# --------------------------------------------------------------------------------------------
# Downloading through pip
# --------------------------------------------------------------------------------------------

_DIRECT_URL_REFUSAL = "cannot declare direct URL dependencies"


def _pip_download(spec: Sdist, work: Path) -> tuple[Path, bool]:
    """Run pip; returns (archive, True) or (pip's unpacked tree, False). ``TaskError`` otherwise."""
    req = work / "requirements.txt"
    req.write_text(f"{spec.name}=={spec.version} --hash=sha256:{spec.sha256}\n", encoding="utf-8")
    dl, piptmp = work / "dl", work / "pip-tmp"
    dl.mkdir()
    piptmp.mkdir()
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
        "--ignore-requires-python", "--require-hashes", "--no-clean", "--progress-bar", "off",
        "--disable-pip-version-check", "--no-input", "-r", str(req), "-d", str(dl),
    ]
    # pip's temporary folders (the unpacked tree among them) go inside `work`, on the cache's disk.
    env = {**os.environ, "TMPDIR": str(piptmp), "PIP_NO_INPUT": "1"}
    log.info("downloading %s with pip (%s)", spec.dist, "358 MB" if spec.name == "bigbench" else "small")
    limit = deadline_s("ROSPR_FETCH_TIMEOUT", FETCH_TIMEOUT_S)
    log.info("waiting up to %g s for pip ($ROSPR_FETCH_TIMEOUT sets it)", limit)
    # pip's own --timeout is per socket operation; the total deadline is the subprocess's
    cmd[4:4] = ["--timeout", f"{min(60.0, limit):g}", "--retries", "2"]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=limit)
    except subprocess.TimeoutExpired:
        raise NetTimeout(f"pip download {spec.name}=={spec.version}: timed out after {limit:g} s ($ROSPR_FETCH_TIMEOUT "
                         f"sets the wait); check the network to the package registry (pip config list), "
                         f"{_FIX_OFFLINE[spec.what]}") from None
    except OSError as e:
        raise TaskError(f"cannot run pip ({sys.executable} -m pip): {e}; install pip, {_FIX_OFFLINE[spec.what]}") from e
    output = proc.stdout + proc.stderr
    log.debug("pip download %s: exit %d\n%s", spec.dist, proc.returncode, output)
    archive = dl / spec.archive_name
    if proc.returncode == 0 and archive.is_file():
        return archive, True
    got = re.search(r"Expected sha256 ([0-9a-f]{64})\s+Got\s+([0-9a-f]{64})", output)
    if got:
        raise TaskError(
            f"pip download {spec.dist}: sha256 {got.group(2)}, the pinned release has {got.group(1)}; "
            "the registry served another file: check the index pip uses (pip config list)"
        )
    if _DIRECT_URL_REFUSAL in output:
        for pkg_info in sorted(piptmp.glob(f"pip-download-*/{spec.name}_*/PKG-INFO")):
            if _pkg_info_matches(pkg_info, spec):
                log.info(
                    "pip checked the sha256 of %s, then refused its metadata (%s); taking the data "
                    "from the tree pip unpacked", spec.dist, _DIRECT_URL_REFUSAL,
                )
                return pkg_info.parent, False
    tail = "\n".join(output.strip().splitlines()[-6:])
    raise TaskError(
        f"pip download {spec.name}=={spec.version} failed (exit {proc.returncode}):\n{tail}\n"
        f"fix: check the network to the package registry (pip config list), run `rospr data fetch "
        f"{spec.what}` again, {_FIX_OFFLINE[spec.what]}"
    )


def _pkg_info_matches(pkg_info: Path, spec: Sdist) -> bool:
    try:
        head = pkg_info.read_text(encoding="utf-8", errors="replace")[:2000]
    except OSError:
        return False
    fields = dict(re.findall(r"^(Name|Version): (.+)$", head, flags=re.M))
    return fields.get("Name", "").strip() == spec.name and fields.get("Version", "").strip() == spec.version


def fetch(what: SpecLike, cache_dir: Path | None = None, *, force: bool = False) -> Path:
    """Download, check and unpack ``what`` (``"templates"`` or ``"bigbench"``) into the cache.

    Returns the data folder (``<cache>/promptsource-0.2.3/templates`` or
    ``<cache>/bigbench-1.0.0/benchmark_tasks``). Idempotent: an intact cached copy is returned as it
    is unless ``force``. Refuses (``TaskError`` with the fix): pip failures (no network, no such
    release), a sha256 other than the pinned one (both named), unsafe or damaged archives, and disk
    errors.
    """
    spec = _spec(what)
    if not force:
        found = cached(spec, cache_dir)
        if found is not None:
            return found
    store = _store(cache_dir)
    try:  # pip's work folder: a stage never published, so one a killed fetch leaves is swept
        work = store.stage(f"{spec.dist}.download")
    except OSError as e:
        raise TaskError(f"{store.root}: cannot create the data cache: {e}; set $ROSPR_DATA_CACHE or --cache-dir") from e
    try:
        path, is_archive = _pip_download(spec, work.path)
        if is_archive:
            return install_archive(spec, path, cache_dir)
        return _install(spec, store, lambda writer: _unpack_tree(spec, path, writer))
    finally:
        store.drop(work)
