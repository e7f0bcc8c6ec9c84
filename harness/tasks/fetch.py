"""Task content that survives its upstream: promptsource's templates and BIG-bench's tasks, from
several sources tried in order, every file checked against a committed sha256 whatever its source.

What the project names is committed as a data set (``harness/data/manifests/<set>.json``): the
sha256 of every data file, measured once from the release the project was built on, and of a few
extras kept beside them.

- ``templates``: ``promptsource-0.2.3``: all 279 ``<dataset>[/<subset>]/templates.yaml``; extras
  ``LICENSE`` and promptsource's own ``templates.py`` (the reference renderer of the parity tests).
- ``bigbench``: ``bigbench-1.0.0``: the ``<task>[/<subtask>]/task.json`` of the 14 tasks of the T0 /
  RoSPr evaluation (23 files with the subtasks of ``conceptual_combinations`` and
  ``logical_deduction``).

Sources, tried in order until every file is had (:data:`DEFAULT_SOURCES`; ``--from`` names others):

1. ``registry``: the release's sdist from the package index (PEP 691 JSON or PEP 503 HTML simple
   API; ``$PIP_INDEX_URL``, else pip's configured ``global.index-url``, else pypi.org), its archive
   checked against the pinned sha256 before anything in it is read. Nothing of it is run (pip's
   ``download`` would build the sdist's metadata; bigbench 1.0.0's setup.py is refused by pip >= 26).
   bigbench 1.0.0 left the registry in December 2026; promptsource 0.2.3 is still served.
2. ``github``: the upstream repository's own files: promptsource's archive at the v0.2.3 commit
   (checked blob for blob against the sdist: all 279 templates, LICENSE and templates.py equal);
   BIG-bench's raw task files (``raw.githubusercontent.com``) at :data:`BIGBENCH_REF`.
3. ``hub``: a Hugging Face dataset repository holding the raw files (``hub:<owner>/<name>@<revision>``
   with ``--from``; ``$HF_ENDPOINT`` is honoured). No public hub copy keeps BIG-bench's files, so the
   default chain has none: ``tasksource/bigbench`` and ``google/bigbench`` are rows made by BIG-bench's
   own converter (``inputs`` already rendered, with the choices appended in a seeded random order, the
   task's prefixes and ``append_choices_to_input`` gone, ``multiple_choice_scores`` cast to integers),
   from which neither ``task.json`` nor our rendering (choices in file order) can be recovered.
4. a folder or archive the user names (``rospr data fetch bigbench --from PATH``): the data root is
   found inside it (``PATH`` itself, or a folder below such as ``bigbench/benchmark_tasks`` or
   ``promptsource/templates``), ``.tar.gz``/``.tgz``/``.tar``/``.zip`` read without unpacking.

One rule for every source: a file whose sha256 differs from the committed one is refused, naming the
file and both digests, and the next source is asked for it; with ``allow_modified`` it is taken with
a warning and the entry records it as modified. A source that fails is named in the one error raised
when no source gave every file, with why, and the ``--from`` way out.

The cache is a ``rospr.store.ContentStore`` under :func:`data_cache_dir`: ``<cache>/<set>/`` holds the
data folder (``templates/`` or ``benchmark_tasks/``), the extras, and ``MANIFEST.json``: the sha256 of
every file (sealed), and ``sources``: the source each file came from, which ``rospr data status`` shows.
An entry is staged, fsynced and renamed into place whole.

The network is touched only by :func:`fetch` (``rospr data fetch``, or a run that needs the default
data and finds none cached); ``$ROSPR_DATA_OFFLINE=1`` refuses that with the fix instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
import posixpath
import re
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Callable, Literal, Protocol
from urllib.parse import quote, urljoin, urlsplit

from rospr.canonical import digest_bytes, sha256_file
from rospr.cachedirs import cache_path
from rospr.store import ContentStore, StoreError, read_sealed
from rospr_harness.tasks.base import TaskError

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
DATA_FORMAT = "rospr-data-cache"
# 3: a data set's files from any source (set, sources, modified); 2 and 1: one sdist unpacked whole,
# no longer read (fetch again: the bytes are the same, the manifest is not)
MANIFEST_VERSION = 3
MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "manifests"
DEFAULT_INDEX = "https://pypi.org/simple"

# Every network read has a total deadline (not only a per-packet one, which a server trickling a
# byte at a time never reaches): $ROSPR_NET_TIMEOUT seconds for one file read, $ROSPR_FETCH_TIMEOUT
# for one archive (bigbench's sdist is 358 MB).
NET_TIMEOUT_S = 120.0
FETCH_TIMEOUT_S = 3600.0
MAX_ARCHIVE_BYTES = 1 << 30

# BIG-bench's repository at the ref of its task files. The bytes are pinned by the committed sha256 of
# each file, whatever the ref serves; the ref is a branch because no commit of it could be resolved from
# a machine that reaches GitHub when the sdist went (see docs/data.md).
BIGBENCH_REF = "main"
PROMPTSOURCE_COMMIT = "ba8c9eccbe82f2409208c655896f1dd131171ece"  # the v0.2.3 tag

What = Literal["templates", "bigbench"]
WHATS: tuple[str, ...] = ("templates", "bigbench")


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


class NotServed(TaskError):
    """A source answered that it does not have a file (HTTP 404/410)."""


def read_url(url: str, timeout_s: float | None = None, max_bytes: int = 1 << 30,
             headers: dict[str, str] | None = None, say_wait: bool = True) -> bytes:
    """The body of ``url`` (http, https; other schemes through ``urllib``), read within a total
    deadline of ``timeout_s`` seconds (default ``$ROSPR_NET_TIMEOUT`` or 120): connecting, waiting,
    headers and body together, however slowly the server sends. Logs the wait before it starts (at
    debug level with ``say_wait=False``, for a poll).
    Refuses: ``NetTimeout`` saying what timed out after how long; ``NotServed`` for 404/410;
    ``OSError`` (or ``urllib.error.URLError``) for a failed connection or another HTTP status; a body
    over ``max_bytes`` (``TaskError``)."""
    import http.client
    import threading
    import urllib.error
    import urllib.parse
    import urllib.request

    limit = deadline_s("ROSPR_NET_TIMEOUT", NET_TIMEOUT_S) if timeout_s is None else timeout_s
    (log.info if say_wait else log.debug)("reading %s (waiting up to %g s; $ROSPR_NET_TIMEOUT sets it)", url, limit)
    start = time.monotonic()
    for _redirect in range(5):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            try:
                with urllib.request.urlopen(url, timeout=limit) as resp:  # noqa: S310 - file:// and the like
                    return _bounded(resp.read(max_bytes + 1), max_bytes, url)
            except FileNotFoundError as e:
                raise NotServed(f"{url}: not found") from e
            except urllib.error.URLError as e:
                if isinstance(e.reason, FileNotFoundError):
                    raise NotServed(f"{url}: not found") from e
                raise
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
                         headers={"User-Agent": "rospr", "Accept-Encoding": "identity", **(headers or {})})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                continue
            if resp.status in (404, 410):
                raise NotServed(f"{url}: HTTP {resp.status} {resp.reason}")
            if resp.status != 200:
                raise urllib.error.HTTPError(url, resp.status, resp.reason, resp.headers, None)
            body = resp.read(max_bytes + 1)
            if not expired.is_set():
                return _bounded(body, max_bytes, url)
        except (OSError, http.client.HTTPException) as e:
            # the socket's own timeout (the time left) may fire a moment before the deadline's cut
            if not expired.is_set() and not isinstance(e, TimeoutError):
                raise
        finally:
            timer.cancel()
            conn.close()
        break
    raise NetTimeout(f"{url}: timed out after {limit:g} s (no complete answer in that time; $ROSPR_NET_TIMEOUT "
                     "sets the wait)")


def _bounded(body: bytes, max_bytes: int, url: str) -> bytes:
    if len(body) > max_bytes:
        raise TaskError(f"{url}: more than {max_bytes} bytes; not the file expected")
    return body


# --------------------------------------------------------------------------------------------
# The committed data sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    """What the project names of one upstream release: the sha256 of every data file (paths relative
    to the data root) and of the extras kept beside them, with where each extra lies relative to the
    data root in the upstream layouts (``../../LICENSE`` in an sdist, ``../LICENSE`` in a plain copy)."""

    what: str
    name: str  # the store entry: promptsource-0.2.3, bigbench-1.0.0
    folder: str  # the data folder in the entry: templates, benchmark_tasks
    files: dict[str, str]
    extras: dict[str, str] = field(default_factory=dict)
    extra_paths: dict[str, tuple[str, ...]] = field(default_factory=dict)
    layouts: tuple[str, ...] = ()  # where the data root lies below a folder a user names
    describe: str = ""

    @property
    def data_name(self) -> str:
        return PurePosixPath(next(iter(self.files))).name  # templates.yaml, task.json


_EXTRA_PATHS = {"LICENSE": ("../../LICENSE", "../LICENSE"), "templates.py": ("../templates.py",)}
_LAYOUTS = {
    "templates": ("templates", "promptsource/templates", "promptsource/promptsource/templates"),
    "bigbench": ("benchmark_tasks", "bigbench", "bigbench/benchmark_tasks", "BIG-bench/bigbench/benchmark_tasks"),
}
_DESCRIBE = {
    "templates": "promptsource 0.2.3's 279 templates.yaml",
    "bigbench": "the task.json files of the 14 BIG-bench tasks of the T0 evaluation (bigbench 1.0.0)",
}
_SET_NAMES = {"templates": "promptsource-0.2.3", "bigbench": "bigbench-1.0.0"}


def data_set(what: "str | DataSet") -> DataSet:
    """The committed data set of ``what`` (``templates`` or ``bigbench``; a ``DataSet`` is returned as it
    is). Refuses (``TaskError``) an unknown name and a manifest file that is missing or malformed."""
    return what if isinstance(what, DataSet) else _committed(what)


@lru_cache(maxsize=None)
def _committed(what: str) -> DataSet:
    if what not in _SET_NAMES:
        raise TaskError(f"unknown data {what!r}: use one of {', '.join(WHATS)}")
    path = MANIFESTS / f"{_SET_NAMES[what]}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        files, extras = dict(raw["files"]), dict(raw.get("extras") or {})
        assert raw["format"] == "rospr-data-set" and raw["set"] == _SET_NAMES[what] and files
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise TaskError(f"{path}: the committed manifest of {what} is missing or malformed ({e}); reinstall rospr") from e
    return DataSet(what, raw["set"], raw["folder"], files, extras,
                   {k: _EXTRA_PATHS.get(k, ()) for k in extras}, _LAYOUTS[what], _DESCRIBE[what])


def data_cache_dir() -> Path:
    """The data cache: ``$ROSPR_DATA_CACHE``, else ``data/`` under the user cache root
    (``rospr.cachedirs``: ``$ROSPR_HOME``, else ``$XDG_CACHE_HOME/rospr``, else ``~/.cache/rospr``).
    Nothing is created."""
    return cache_path("data")


def _store(cache_dir: Path | None) -> ContentStore:
    return ContentStore(cache_path("data", cache_dir), DATA_FORMAT, MANIFEST_VERSION, manifest_name=MANIFEST,
                        fix="fetch it again (rospr data fetch --force)")


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


@dataclass
class Found:
    """What a source gave: data files (relative to the data root) and extras, as bytes."""

    files: dict[str, bytes] = field(default_factory=dict)
    extras: dict[str, bytes] = field(default_factory=dict)


class Source(Protocol):
    """A place that may hold a data set's files. ``label`` names it in errors, logs and the cache's
    ``sources``; ``get`` returns what it has of ``wanted`` (possibly less) or raises ``TaskError``/
    ``OSError`` saying why it gave nothing."""

    label: str

    def get(self, ds: DataSet, wanted: list[str]) -> Found: ...


def _member_root(name: str, wanted: set[str]) -> tuple[str, str] | None:
    """(root, rel) when the path ``name`` ends with a wanted data file ``rel`` (2 or 3 components)."""
    parts = name.split("/")
    for k in (3, 2):
        if len(parts) >= k:
            rel = "/".join(parts[-k:])
            if rel in wanted:
                return "/".join(parts[:-k]), rel
    return None


class _Tree:
    """A set of named byte blobs (an archive's members, a folder's files) searched for a data root."""

    def __init__(self, where: str, names: list[str], read: Callable[[str], bytes], links: set[str]) -> None:
        self.where, self.names, self.read, self.links = where, names, read, links

    def found(self, ds: DataSet, wanted: list[str]) -> Found:
        want = set(wanted)
        roots: dict[str, list[tuple[str, str]]] = {}
        for name in self.names:
            hit = _member_root(name, want)
            if hit is not None:
                roots.setdefault(hit[0], []).append((name, hit[1]))
        if not roots:
            return Found()
        root = max(roots, key=lambda r: (len(roots[r]), -len(r)))  # the fullest copy, the shallowest
        out = Found()
        for name, rel in roots[root]:
            if name in self.links:
                raise TaskError(f"{self.where}: {name} is a link; data files must be regular files")
            out.files[rel] = self.read(name)
        present = set(self.names)
        for extra, candidates in ds.extra_paths.items():
            for cand in candidates:
                name = posixpath.normpath(posixpath.join(root or ".", cand))
                if not name.startswith("..") and name in present and name not in self.links:
                    out.extras[extra] = self.read(name)
                    break
        return out


def _archive_tree(data: bytes, where: str) -> _Tree:
    """An in-memory archive (tar, gzip'd tar, zip) as a ``_Tree``. Refuses a damaged or truncated one."""
    try:
        if data[:4] == b"PK\x03\x04":
            zf = zipfile.ZipFile(io.BytesIO(data))
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            links = {i.filename for i in zf.infolist() if (i.external_attr >> 16) & 0o170000 == 0o120000}
            return _Tree(where, names, zf.read, links)
        tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
        members = {m.name.lstrip("./"): m for m in tar.getmembers()}
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise TaskError(f"{where}: the archive is damaged or truncated ({type(e).__name__}: {e})") from e
    names = [n for n, m in members.items() if m.isreg() or m.issym() or m.islnk()]
    links = {n for n, m in members.items() if m.issym() or m.islnk()}

    def read(name: str) -> bytes:
        fh = tar.extractfile(members[name])
        if fh is None:
            raise TaskError(f"{where}: member {name!r} has no content")
        try:
            return fh.read()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            raise TaskError(f"{where}: the archive is damaged or truncated at {name} ({e})") from e

    return _Tree(where, names, read, links)


def _folder_tree(root: Path, ds: DataSet) -> _Tree:
    """A folder's files as a ``_Tree`` (links kept apart: never followed). Only the layouts a user's folder
    may have are walked: the data root itself, or one of ``ds.layouts`` below it, and its parents for the
    extras."""
    names, links = [], set()
    candidates = [root, *(root / layout for layout in ds.layouts)]
    data_root = next((c for c in candidates if any((c / rel).is_file() for rel in list(ds.files)[:50])
                      or any(c.glob(f"*/{ds.data_name}"))), None)
    if data_root is None:
        return _Tree(str(root), [], lambda n: b"", set())
    base = root.parent  # names keep the folder's own name, so the extras beside the data root are found
    for dirpath, dirnames, filenames in os.walk(data_root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for fn in filenames:
            path = Path(dirpath) / fn
            if fn == ds.data_name:
                rel = path.relative_to(base).as_posix()
                names.append(rel)
                if path.is_symlink():
                    links.add(rel)
    for extra, cands in ds.extra_paths.items():
        for cand in cands:
            path = Path(posixpath.normpath(str(data_root / cand)))
            if path.is_file():
                rel = os.path.relpath(path, base).replace(os.sep, "/")
                if not rel.startswith(".."):
                    names.append(rel)
                    if path.is_symlink():
                        links.add(rel)

    def read(name: str) -> bytes:
        try:
            return (base / name).read_bytes()
        except OSError as e:
            raise TaskError(f"{base / name}: cannot read: {e}") from e

    return _Tree(str(root), names, read, links)


@dataclass
class LocalSource:
    """A folder or an archive (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``) on this machine."""

    path: Path
    label: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path).expanduser()
        self.label = self.label or f"local:{self.path.resolve()}"

    def get(self, ds: DataSet, wanted: list[str]) -> Found:
        if self.path.is_dir():
            return _folder_tree(self.path, ds).found(ds, wanted)
        if not self.path.is_file():
            raise TaskError(f"{self.path}: no such folder or archive")
        try:
            data = self.path.read_bytes()
        except OSError as e:
            raise TaskError(f"{self.path}: cannot read: {e}") from e
        return _archive_tree(data, str(self.path)).found(ds, wanted)


@dataclass
class ArchiveSource:
    """An archive at a URL (a repository's archive at a commit); ``sha256`` pins it when known."""

    url: str
    label: str
    sha256: str | None = None

    def get(self, ds: DataSet, wanted: list[str]) -> Found:
        data = read_url(self.url, deadline_s("ROSPR_FETCH_TIMEOUT", FETCH_TIMEOUT_S), MAX_ARCHIVE_BYTES)
        _check_digest(data, self.sha256, self.url)
        return _archive_tree(data, self.url).found(ds, wanted)


@dataclass
class FilesSource:
    """Raw files under a base URL laid out like the data root (one read per file; a 404 is a file this
    source does not have, any other failure ends the source)."""

    base: str
    label: str

    def get(self, ds: DataSet, wanted: list[str]) -> Found:
        out = Found()
        for rel in wanted:
            try:
                out.files[rel] = read_url(f"{self.base.rstrip('/')}/{quote(rel)}")
            except NotServed:
                continue
        return out


def hub_source(spec: str) -> FilesSource:
    """``<owner>/<name>[@<revision>][:<folder>]``: raw files of a Hugging Face dataset repository
    (``$HF_ENDPOINT`` or huggingface.co). Refuses a malformed spec (``TaskError``)."""
    m = re.fullmatch(r"([\w.-]+/[\w.-]+)(?:@([\w./-]+?))?(?::([\w./-]*))?", spec)
    if not m:
        raise TaskError(f"hub:{spec}: give hub:<owner>/<name>[@<revision>][:<folder of the data root>]")
    repo, revision, folder = m.group(1), m.group(2) or "main", (m.group(3) or "").strip("/")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    base = f"{endpoint}/datasets/{repo}/resolve/{quote(revision, safe='')}" + (f"/{folder}" if folder else "")
    return FilesSource(base, f"hub:{repo}@{revision}" + (f":{folder}" if folder else ""))


def _check_digest(data: bytes, expected: str | None, where: str) -> None:
    if expected is not None:
        got = digest_bytes(data)
        if got != expected:
            raise TaskError(f"{where}: sha256 {got}, the pinned release has {expected}; the server sent other bytes")


@dataclass
class RegistrySource:
    """A pinned sdist from a package index's simple API (the archive's sha256 checked before it is read)."""

    name: str
    version: str
    sha256: str
    index: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or f"registry:{self.name}=={self.version}"

    def get(self, ds: DataSet, wanted: list[str]) -> Found:
        index = (self.index or package_index()).rstrip("/")
        filename = f"{self.name}-{self.version}.tar.gz"
        page_url = f"{index}/{self.name}/"
        page = read_url(page_url, headers={"Accept": "application/vnd.pypi.simple.v1+json, text/html;q=0.1"})
        links = _simple_links(page, page_url)
        if filename not in links:
            listed = ", ".join(sorted(links)) or "nothing"
            raise TaskError(f"{page_url} lists no {filename} (it lists: {listed})")
        url = links[filename]
        data = read_url(url, deadline_s("ROSPR_FETCH_TIMEOUT", FETCH_TIMEOUT_S), MAX_ARCHIVE_BYTES)
        _check_digest(data, self.sha256, url)
        return _archive_tree(data, url).found(ds, wanted)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[tuple[str, str]] = []
        self._href: str | None = None

    def handle_starttag(self, tag, attrs) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")

    def handle_data(self, data) -> None:
        if self._href is not None:
            self.hrefs.append((data.strip(), self._href))
            self._href = None


def _simple_links(page: bytes, page_url: str) -> dict[str, str]:
    """File name -> URL (without its fragment) of a simple-API project page, JSON (PEP 691) or HTML (PEP 503)."""
    text = page.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            files = json.loads(text).get("files", [])
            return {f["filename"]: urljoin(page_url, f["url"]).split("#")[0] for f in files}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise TaskError(f"{page_url}: not a simple-API page ({e})") from e
    parser = _Links()
    parser.feed(text)
    return {name: urljoin(page_url, href).split("#")[0] for name, href in parser.hrefs}


def package_index() -> str:
    """The package index: ``$PIP_INDEX_URL``, else pip's configured ``global.index-url``, else pypi.org."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                              capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode == 0 and proc.stdout.strip().startswith(("http://", "https://", "file://")):
            return proc.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return DEFAULT_INDEX


# The registry's sdists: measured once, on 2025-11-23, from the files pip downloaded from pypi.org.
_REGISTRY = {
    "templates": ("promptsource", "0.2.3", "f106c889778a0fe5590e7183904bf964e1a01691c8a29451e44f3df5ddef05f5"),
    "bigbench": ("bigbench", "1.0.0", "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2"),
}


def default_sources(what: str) -> list[Source]:
    """The chain tried without ``--from``: the registry's sdist, then the upstream repository."""
    name, version, digest = _REGISTRY[what]
    registry = RegistrySource(name, version, digest)
    if what == "templates":
        url = f"https://codeload.github.com/bigscience-workshop/promptsource/tar.gz/{PROMPTSOURCE_COMMIT}"
        return [registry, ArchiveSource(url, f"github:bigscience-workshop/promptsource@{PROMPTSOURCE_COMMIT[:12]}")]
    base = f"https://raw.githubusercontent.com/google/BIG-bench/{BIGBENCH_REF}/bigbench/benchmark_tasks"
    return [registry, FilesSource(base, f"github:google/BIG-bench@{BIGBENCH_REF}")]


def parse_source(text: str) -> Source:
    """A source a user names: ``hub:<owner>/<name>[@<rev>][:<folder>]``, an ``http(s)://`` or ``file://``
    URL (an archive when it ends in .tar.gz/.tgz/.tar/.zip, else a base of raw files), or a local folder
    or archive."""
    if text.startswith("hub:"):
        return hub_source(text[4:])
    if re.match(r"^(https?|file)://", text):
        if re.search(r"\.(tar\.gz|tgz|tar|zip)$", urlsplit(text).path):
            return ArchiveSource(text, text)
        return FilesSource(text, text)
    return LocalSource(Path(text))


# --------------------------------------------------------------------------------------------
# Fetching and reading the cache
# --------------------------------------------------------------------------------------------


def _offline_refusal(what: str) -> TaskError:
    return TaskError(f"{what}: not in the data cache ({data_cache_dir()}) and $ROSPR_DATA_OFFLINE is set, so "
                     f"nothing is downloaded; fix: `rospr data fetch {what}` (or `--from PATH` with a copy you "
                     "have), or unset $ROSPR_DATA_OFFLINE")


def fetch(what: "str | DataSet", cache_dir: Path | None = None, *, force: bool = False,
          sources: list[Source] | None = None, allow_modified: bool = False) -> Path:
    """Get every file of ``what``'s committed data set from ``sources`` (default :func:`default_sources`)
    tried in order, check each against its committed sha256, and publish them into the data cache.

    Returns the data folder (``<cache>/promptsource-0.2.3/templates``, ``<cache>/bigbench-1.0.0/
    benchmark_tasks``). Idempotent: an intact cached copy is returned as it is unless ``force`` or
    ``sources`` is given (a user naming a source means it). A file whose bytes differ is refused and
    asked of the next source; ``allow_modified`` takes it with a warning. Refuses (``TaskError``) when
    no source gave every file: one message naming each source tried, why it failed, and the fix.
    """
    ds = data_set(what)
    if not force and sources is None:
        found = cached(what, cache_dir)
        if found is not None:
            return found
        if os.environ.get("ROSPR_DATA_OFFLINE"):
            raise _offline_refusal(ds.what)
    chain = list(sources) if sources is not None else default_sources(what)
    got: dict[str, tuple[bytes, str]] = {}
    modified: list[str] = []
    tried: list[str] = []
    for source in chain:
        missing = [rel for rel in ds.files if rel not in got]
        if not missing:  # the extras are kept when a source that gave files has them, never asked for alone
            break
        log.info("%s: asking %s for %d files", ds.name, source.label, len(missing))
        try:
            found = source.get(ds, missing)
            found.extras = {k: v for k, v in found.extras.items() if k not in got}
        except (TaskError, OSError, ValueError) as e:
            tried.append(f"{source.label}: {e}")
            continue
        differ = []
        for rel, data in [*found.files.items(), *found.extras.items()]:
            expected = ds.files.get(rel) or ds.extras.get(rel)
            digest = digest_bytes(data)
            if digest == expected:
                got[rel] = (data, source.label)
            elif allow_modified and rel in ds.files:
                log.warning("%s from %s: sha256 %s differs from the committed %s; taken as you asked "
                            "(--allow-modified), recorded as modified", rel, source.label, digest, expected)
                got[rel] = (data, source.label)
                modified.append(rel)
            else:
                differ.append(f"{rel} (sha256 {digest[:16]}…, committed {expected[:16]}…)")
        gave = sum(1 for rel in missing if rel in found.files)
        if differ:
            tried.append(f"{source.label}: refused {len(differ)} file(s) whose bytes differ from the committed "
                         f"manifest: {', '.join(differ[:5])}{' …' if len(differ) > 5 else ''}")
        elif gave < len(missing):
            tried.append(f"{source.label}: gave {gave} of the {len(missing)} files still missing")
    missing = [rel for rel in ds.files if rel not in got]
    if missing:
        raise TaskError(_no_source_message(ds, tried, missing))
    return _publish(ds, got, modified, cache_dir)


def _no_source_message(ds: DataSet, tried: list[str], missing: list[str]) -> str:
    lines = [f"{ds.name}: no source gave every file of {ds.describe} ({len(missing)} of {len(ds.files)} missing, "
             f"e.g. {missing[0]}). Sources tried, in order:"]
    lines += [f"  {i}. {t}" for i, t in enumerate(tried, 1)] or ["  (none)"]
    lines.append(f"fix: name a copy you have: `rospr data fetch {ds.what} --from PATH` (a folder or .tar.gz/.zip "
                 f"holding <...>/{ds.data_name}, e.g. an unpacked upstream release or checkout), or "
                 f"`--from hub:<owner>/<name>@<revision>` for a hub repository of the raw files; every file is "
                 f"checked against harness/data/manifests/{ds.name}.json whatever its source")
    return "\n".join(lines)


def _publish(ds: DataSet, got: dict[str, tuple[bytes, str]], modified: list[str], cache_dir: Path | None) -> Path:
    store = _store(cache_dir)
    try:
        stage = store.stage(ds.name)
    except OSError as e:
        raise TaskError(f"{store.root}: cannot create the data cache: {e}; set $ROSPR_DATA_CACHE or --cache-dir") from e
    try:
        sources = {}
        for rel, (data, label) in sorted(got.items()):
            name = f"{ds.folder}/{rel}" if rel in ds.files else rel
            stage.write_bytes(name, data)
            sources[name] = label
        entry = store.publish(stage, {"set": ds.name, "sources": sources, "modified": sorted(modified),
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    except OSError as e:
        raise TaskError(f"{store.path(ds.name)}: cannot write the data cache: {e}; free disk space or set "
                        "$ROSPR_DATA_CACHE (or --cache-dir) to a writable folder") from e
    finally:
        store.drop(stage)
    labels = sorted(set(sources.values()))
    log.info("%s: %d files into %s from %s", ds.name, len(got), entry, ", ".join(labels))
    return entry / ds.folder


def _entry_manifest(ds: DataSet, folder: Path) -> dict:
    """The sealed manifest of an entry when it holds every committed file with its committed digest (or
    one recorded as modified); ``StoreError`` otherwise."""
    manifest = read_sealed(folder / MANIFEST, DATA_FORMAT, MANIFEST_VERSION, "fetch it again (rospr data fetch --force)")
    files, modified = manifest.get("files") or {}, set(manifest.get("modified") or [])
    if manifest.get("set") != ds.name:
        raise StoreError(f"{folder / MANIFEST}: field 'set' is {manifest.get('set')!r}, not {ds.name!r}")
    for rel, digest in ds.files.items():
        name = f"{ds.folder}/{rel}"
        if files.get(name) != digest and not (rel in modified and name in files):
            raise StoreError(f"{folder / MANIFEST}: {name} missing or not the committed bytes; fetch it again")
    if not (folder / ds.folder).is_dir():
        raise StoreError(f"{folder / ds.folder}: missing; fetch it again")
    return manifest


def cached(what: "str | DataSet", cache_dir: Path | None = None) -> Path | None:
    """The data folder of ``what`` in the cache when its entry holds every committed file (cheap: the
    sealed manifest is read, the files are not hashed; :func:`verify` does that); ``None`` otherwise."""
    ds = data_set(what)
    manifest = _store(cache_dir).open(ds.name, verify=lambda folder: _entry_manifest(ds, folder), repair=False)
    if manifest is None:
        return None
    if manifest.get("modified"):
        log.warning("%s: %d file(s) differ from the committed manifest, taken with --allow-modified: %s",
                    ds.name, len(manifest["modified"]), ", ".join(manifest["modified"][:5]))
    return _store(cache_dir).path(ds.name) / ds.folder


def provenance(what: "str | DataSet", cache_dir: Path | None = None) -> dict[str, str]:
    """Data file (relative to the data root) -> the source it was fetched from, for the cached entry of
    ``what`` (``{}`` when none), ``(modified)`` appended where the bytes differ from the committed ones."""
    ds = data_set(what)
    folder = _store(cache_dir).path(ds.name)
    try:
        manifest = _entry_manifest(ds, folder)
    except (StoreError, OSError, ValueError):
        return {}
    modified = set(manifest.get("modified") or [])
    prefix = ds.folder + "/"
    return {name[len(prefix):]: label + (" (modified)" if name[len(prefix):] in modified else "")
            for name, label in (manifest.get("sources") or {}).items() if name.startswith(prefix)}


def extra_path(what: "str | DataSet", name: str, cache_dir: Path | None = None) -> Path | None:
    """An extra of the cached entry (``LICENSE``, promptsource's ``templates.py``) when it was had from
    its source with the committed sha256; ``None`` otherwise."""
    ds = data_set(what)
    folder = _store(cache_dir).path(ds.name)
    try:
        manifest = _entry_manifest(ds, folder)
    except (StoreError, OSError, ValueError):
        return None
    if name not in ds.extras or (manifest.get("files") or {}).get(name) != ds.extras[name]:
        return None
    path = folder / name
    return path if path.is_file() and sha256_file(path) == ds.extras[name] else None


def verify(what: "str | DataSet", cache_dir: Path | None = None) -> list[str]:
    """Re-hash every file of the cached copy of ``what``; the problems found (empty: intact): a missing
    or unsealed manifest, a file missing or with other bytes than the manifest or the committed set, a
    file present but not listed."""
    ds = data_set(what)
    folder = _store(cache_dir).path(ds.name)
    try:
        manifest = _entry_manifest(ds, folder)
    except (StoreError, OSError, ValueError) as e:
        return [str(e)]
    problems = []
    for name, digest in sorted(manifest["files"].items()):
        path = folder / name
        if path.is_symlink() or not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 differs from the manifest")
    for root, _dirs, names in os.walk(folder / ds.folder):
        for fn in names:
            rel = (Path(root) / fn).relative_to(folder).as_posix()
            if rel not in manifest["files"]:
                problems.append(f"{folder / rel}: not in the manifest")
    return problems


def check_file(what: str, rel: str, data: bytes, where: str, allow_modified: bool = False) -> None:
    """Check the bytes of one data file read from anywhere (a folder or URL a config names) against the
    committed set: a file the set names must have its committed sha256. Refuses (``TaskError`` naming
    ``where``, both digests and the fix) unless ``allow_modified`` (then a warning); files the set does
    not name pass (they are the user's own)."""
    expected = data_set(what).files.get(rel)
    if expected is None:
        return
    digest = digest_bytes(data)
    if digest == expected:
        return
    if allow_modified:
        log.warning("%s: sha256 %s differs from the committed %s (%s); used as you asked (data.allow_modified)",
                    where, digest, expected, _SET_NAMES[what])
        return
    raise TaskError(f"{where}: sha256 {digest} differs from the committed {expected} of {rel} in "
                    f"{_SET_NAMES[what]} (harness/data/manifests/{_SET_NAMES[what]}.json): not the bytes the "
                    "benchmark names; fix: fetch the real file (rospr data fetch "
                    f"{what}), or set data.allow_modified: true to use it with a warning")
