"""harness/tasks/fetch.py: a data set from several sources tried in order, every file checked
against its committed sha256 whatever the source, published whole into the data cache.

Offline: the sources are loopback HTTP servers standing in for the package registry, the repository
archive and the hub, and folders and archives the tests write. A toy data set (its digests computed here
with hashlib from the bytes the test wrote) stands in for the committed ones; the real 14 BIG-bench
tasks are used where the machine has them (``bigbench_dir``)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from rospr_harness.tasks import fetch as fetching
from rospr_harness.tasks.fetch import DataSet
from rospr_harness.tasks.base import TaskError
from helpers import REPO


# A toy data set in the layout of BIG-bench's tasks: a task, a task with a subtask, unicode.
TOY_FILES = {
    "alpha/task.json": b'{"examples": [{"input": "one", "target_scores": {"a": 1, "b": 0}}]}\n',
    "beta/task.json": b'{"subtasks": ["gamma"]}\n',
    "beta/gamma/task.json": '{"examples": [{"input": "caf\u00e9", "target_scores": {"x": 0, "y": 1}}]}\n'.encode(),
}
TOY_LICENSE = b"Apache License 2.0 (toy)\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def toy_set(**kw) -> DataSet:
    fields = dict(what="bigbench", name="toy-1.0", folder="benchmark_tasks",
                  files={rel: sha(data) for rel, data in TOY_FILES.items()},
                  extras={"LICENSE": sha(TOY_LICENSE)}, extra_paths={"LICENSE": ("../../LICENSE", "../LICENSE")},
                  layouts=("benchmark_tasks", "bigbench/benchmark_tasks"), describe="the toy tasks")
    fields.update(kw)
    return DataSet(**fields)


def sdist_bytes(files: dict[str, bytes] | None = None, top: str = "toy-1.0", links: dict[str, str] | None = None) -> bytes:
    """A .tar.gz laid out like an sdist: ``<top>/LICENSE``, ``<top>/bigbench/benchmark_tasks/...``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = {f"{top}/LICENSE": TOY_LICENSE, f"{top}/setup.py": b"raise SystemExit('never run')\n"}
        members.update({f"{top}/bigbench/benchmark_tasks/{rel}": data for rel, data in (files or TOY_FILES).items()})
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(f"{top}/bigbench/benchmark_tasks/{name}")
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return buf.getvalue()


def changed(data: bytes) -> bytes:
    """One byte changed."""
    return data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


# --------------------------------------------------------------------------------------------
# Loopback servers
# --------------------------------------------------------------------------------------------


class Site:
    """A loopback HTTP server answering ``routes`` (path -> bytes, or an int status); every request is
    logged in ``log`` (shared by all sites of a test, so their order shows)."""

    def __init__(self, name: str, routes: dict, log: list) -> None:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = unquote(urlsplit(self.path).path)
                log.append((name, path))
                body = site.routes.get(path, 404)
                if isinstance(body, int):
                    self.send_response(body)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.routes = routes
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites(monkeypatch):
    """Make loopback sites (``sites(name, routes)``); all are shut at the end. ``sites.log`` orders their requests."""
    made, log = [], []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    def make(name: str, routes: dict) -> Site:
        made.append(Site(name, routes, log))
        return made[-1]

    make.log = log
    yield make
    for site in made:
        site.close()


def registry_routes(archive: bytes, *, json_api: bool = True, version: str = "1.0") -> dict:
    """A simple-API index serving ``toy-<version>.tar.gz`` (and an older release beside it)."""
    files = [{"filename": "toy-0.1.tar.gz", "url": "/files/toy-0.1.tar.gz", "hashes": {}},
             {"filename": f"toy-{version}.tar.gz", "url": f"/files/toy-{version}.tar.gz#sha256={sha(archive)}",
              "hashes": {"sha256": sha(archive)}}]
    if json_api:
        page = json.dumps({"meta": {"api-version": "1.0"}, "name": "toy", "files": files}).encode()
    else:
        page = "".join(f'<a href="{f["url"]}">{f["filename"]}</a><br/>' for f in files).encode()
    return {"/simple/toy/": page, f"/files/toy-{version}.tar.gz": archive}


# --------------------------------------------------------------------------------------------
# The chain
# --------------------------------------------------------------------------------------------


def test_each_source_is_tried_in_order_and_each_file_is_taken_only_with_its_committed_bytes(
        tmp_path, sites, monkeypatch):
    """The registry no longer serves the release (as bigbench 1.0.0 today); the repository archive
    serves every file but one with a changed byte (refused, named); the hub serves that one."""
    ds = toy_set()
    registry = sites("registry", {"/simple/toy/": json.dumps({"files": [
        {"filename": "toy-0.1.tar.gz", "url": "/files/toy-0.1.tar.gz"}]}).encode()})
    bad = dict(TOY_FILES, **{"beta/gamma/task.json": changed(TOY_FILES["beta/gamma/task.json"])})
    archive = sites("github", {"/archive/abc123.tar.gz": sdist_bytes(bad, top="toy-abc123")})
    hub = sites("hub", {f"/datasets/someone/toy/resolve/r1/tasks/{rel}": data for rel, data in TOY_FILES.items()})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    chain = [fetching.RegistrySource("toy", "1.0", sha(sdist_bytes()), index=f"{registry.url}/simple", label="registry"),
             fetching.ArchiveSource(f"{archive.url}/archive/abc123.tar.gz", "github"),
             fetching.parse_source("hub:someone/toy@r1:tasks")]
    folder = fetching.fetch(ds, tmp_path / "cache", sources=chain)

    assert [name for name, _ in sites.log] == ["registry", "github", "hub"]
    assert sites.log[2] == ("hub", "/datasets/someone/toy/resolve/r1/tasks/beta/gamma/task.json")  # only what was missing
    assert {rel: (folder / rel).read_bytes() for rel in TOY_FILES} == TOY_FILES
    assert fetching.provenance(ds, tmp_path / "cache") == {
        "alpha/task.json": "github", "beta/task.json": "github", "beta/gamma/task.json": "hub:someone/toy@r1:tasks"}
    assert (folder.parent / "LICENSE").read_bytes() == TOY_LICENSE  # an extra of the source that gave files
    assert fetching.verify(ds, tmp_path / "cache") == []


def test_when_every_source_fails_one_message_names_each_why_and_the_way_out(tmp_path, sites):
    ds = toy_set()
    registry = sites("registry", {"/simple/toy/": json.dumps({"files": []}).encode()})
    archive = sites("github", {"/a.tar.gz": sdist_bytes({"alpha/task.json": changed(TOY_FILES["alpha/task.json"])})})
    chain = [fetching.RegistrySource("toy", "1.0", "0" * 64, index=f"{registry.url}/simple", label="registry"),
             fetching.ArchiveSource(f"{archive.url}/a.tar.gz", "github"),
             fetching.FilesSource(f"{archive.url}/gone", "hub"),
             fetching.LocalSource(tmp_path / "nowhere")]
    with pytest.raises(TaskError) as err:
        fetching.fetch(ds, tmp_path / "cache", sources=chain)
    msg = str(err.value)
    lines = msg.splitlines()
    assert "no source gave every file of the toy tasks" in lines[0]
    assert lines[1].startswith("  1. registry: ") and "lists no toy-1.0.tar.gz (it lists: nothing)" in lines[1]
    assert lines[2].startswith("  2. github: refused 1 file(s)") and "alpha/task.json (sha256" in lines[2]
    assert lines[3] == "  3. hub: gave 0 of the 3 files still missing"
    assert lines[4].startswith("  4. local:") and "no such folder or archive" in lines[4]
    assert "rospr data fetch bigbench --from PATH" in lines[5]
    assert not (tmp_path / "cache" / "toy-1.0").exists()  # nothing half-made is published


def test_the_registry_source_reads_the_json_and_the_html_simple_api_and_checks_the_archive(tmp_path, sites):
    ds = toy_set()
    archive = sdist_bytes()
    for json_api in (True, False):
        index = sites("registry", registry_routes(archive, json_api=json_api))
        source = fetching.RegistrySource("toy", "1.0", sha(archive), index=f"{index.url}/simple", label="registry")
        found = source.get(ds, list(ds.files))
        assert found.files == TOY_FILES and found.extras == {"LICENSE": TOY_LICENSE}
    other = sites("registry", registry_routes(changed(archive)))
    with pytest.raises(TaskError, match=rf"sha256 [0-9a-f]{{64}}, the pinned release has {sha(archive)}"):
        fetching.RegistrySource("toy", "1.0", sha(archive), index=f"{other.url}/simple").get(ds, list(ds.files))


def test_the_index_is_pips(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert fetching.package_index() == "http://127.0.0.1:9/simple"


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip", "files-url", "file-url-archive"])
def test_one_changed_byte_is_refused_naming_the_file_whatever_the_source(tmp_path, sites, kind):
    ds = toy_set()
    bad = dict(TOY_FILES, **{"alpha/task.json": changed(TOY_FILES["alpha/task.json"])})
    if kind == "folder":
        source = fetching.LocalSource(write_folder(tmp_path / "copy" / "benchmark_tasks", bad).parent)
    elif kind == "tar.gz":
        (tmp_path / "copy.tar.gz").write_bytes(sdist_bytes(bad))
        source = fetching.LocalSource(tmp_path / "copy.tar.gz")
    elif kind == "zip":
        with zipfile.ZipFile(tmp_path / "copy.zip", "w") as zf:
            for rel, data in bad.items():
                zf.writestr(f"BIG-bench-x/bigbench/benchmark_tasks/{rel}", data)
        source = fetching.LocalSource(tmp_path / "copy.zip")
    elif kind == "files-url":
        site = sites("raw", {f"/raw/{rel}": data for rel, data in bad.items()})
        source = fetching.parse_source(f"{site.url}/raw")
    else:
        (tmp_path / "copy.tar.gz").write_bytes(sdist_bytes(bad))
        source = fetching.parse_source((tmp_path / "copy.tar.gz").as_uri())
    with pytest.raises(TaskError, match=r"refused 1 file\(s\) whose bytes differ from the committed manifest: "
                                        r"alpha/task\.json \(sha256 [0-9a-f]{16}…, committed " + sha(TOY_FILES["alpha/task.json"])[:16]):
        fetching.fetch(ds, tmp_path / "cache", sources=[source])


def test_allow_modified_takes_the_file_with_a_warning_and_records_it(tmp_path, caplog):
    ds = toy_set()
    bad = dict(TOY_FILES, **{"alpha/task.json": changed(TOY_FILES["alpha/task.json"])})
    source = fetching.LocalSource(write_folder(tmp_path / "copy", bad))
    caplog.set_level(logging.WARNING, logger="rospr_harness.tasks.fetch")
    folder = fetching.fetch(ds, tmp_path / "cache", sources=[source], allow_modified=True)
    assert (folder / "alpha/task.json").read_bytes() == bad["alpha/task.json"]
    assert "alpha/task.json from local:" in caplog.text and "--allow-modified" in caplog.text
    assert fetching.provenance(ds, tmp_path / "cache")["alpha/task.json"].endswith("(modified)")
    caplog.clear()
    assert fetching.cached(ds, tmp_path / "cache") == folder and "differ from the committed manifest" in caplog.text


def test_a_user_folder_is_found_in_its_usual_layouts(tmp_path):
    ds = toy_set()
    for layout in ("", "benchmark_tasks", "bigbench/benchmark_tasks"):
        root = tmp_path / f"copy-{layout.replace('/', '-') or 'flat'}"
        write_folder(root / layout if layout else root, TOY_FILES)
        found = fetching.LocalSource(root).get(ds, list(ds.files))
        assert found.files == TOY_FILES, layout


def test_links_and_damaged_archives_are_refused(tmp_path):
    ds = toy_set()
    files = {k: v for k, v in TOY_FILES.items() if k != "alpha/task.json"}
    (tmp_path / "link.tar.gz").write_bytes(sdist_bytes(files, links={"alpha/task.json": "/etc/passwd"}))
    with pytest.raises(TaskError, match=r"alpha/task\.json is a link; data files must be regular files"):
        fetching.fetch(ds, tmp_path / "cache", sources=[fetching.LocalSource(tmp_path / "link.tar.gz")])
    (tmp_path / "short.tar.gz").write_bytes(sdist_bytes()[:200])
    with pytest.raises(TaskError, match="damaged or truncated"):
        fetching.fetch(ds, tmp_path / "cache", sources=[fetching.LocalSource(tmp_path / "short.tar.gz")])
    folder = write_folder(tmp_path / "linked", {k: v for k, v in TOY_FILES.items() if k != "beta/task.json"})
    (folder / "beta" / "task.json").symlink_to(write_folder(tmp_path / "elsewhere", TOY_FILES) / "beta" / "task.json")
    with pytest.raises(TaskError, match=r"beta/task\.json is a link"):
        fetching.fetch(ds, tmp_path / "cache", sources=[fetching.LocalSource(folder)])


def test_the_cache_is_checked_and_a_failed_refetch_keeps_the_copy_there(tmp_path):
    ds = toy_set()
    cache = tmp_path / "cache"
    folder = fetching.fetch(ds, cache, sources=[fetching.LocalSource(write_folder(tmp_path / "copy", TOY_FILES))])
    assert fetching.cached(ds, cache) == folder and fetching.verify(ds, cache) == []
    with pytest.raises(TaskError):
        fetching.fetch(ds, cache, sources=[fetching.LocalSource(tmp_path / "nowhere")])
    assert fetching.cached(ds, cache) == folder  # nothing lost
    (folder / "alpha/task.json").write_bytes(b"{}")
    assert any("alpha/task.json: sha256 differs" in p for p in fetching.verify(ds, cache))
    manifest = folder.parent / "MANIFEST.json"
    edited = json.loads(manifest.read_text())
    edited["files"]["benchmark_tasks/alpha/task.json"] = sha(b"{}")  # the seal no longer holds
    manifest.write_text(json.dumps(edited))
    assert fetching.cached(ds, cache) is None
    other = toy_set(files={**toy_set().files, "delta/task.json": sha(b"{}")})  # the committed set grew
    assert fetching.cached(other, cache) is None


def test_a_killed_fetch_leaves_only_a_stage_that_the_next_sweeps(tmp_path):
    ds = toy_set()
    cache = tmp_path / "cache"
    stage = fetching._store(cache).stage(ds.name)  # as a fetch killed while writing leaves it
    os.close(stage.fd)  # its writer is gone: the lock is free
    fetching.fetch(ds, cache, sources=[fetching.LocalSource(write_folder(tmp_path / "copy", TOY_FILES))])
    assert sorted(p.name for p in cache.iterdir()) == ["toy-1.0"]


def test_default_data_is_not_downloaded_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSPR_DATA_OFFLINE", "1")
    with pytest.raises(TaskError, match=r"\$ROSPR_DATA_OFFLINE is set, so nothing is downloaded; fix: `rospr data fetch bigbench`"):
        fetching.fetch("bigbench", tmp_path / "empty")


def test_the_default_chain_is_the_registry_then_the_repository():
    for what in fetching.WHATS:
        chain = fetching.default_sources(what)
        assert [type(s).__name__ for s in chain][0] == "RegistrySource" and chain[1].label.startswith("github:")
    assert fetching.default_sources("templates")[1].url.endswith(fetching.PROMPTSOURCE_COMMIT)


def test_the_committed_sets_name_the_paper_tasks_and_every_template():
    from rospr_harness.tasks.bigbench import KNOWN_SUBTASKS, T0_TASKS

    bb = fetching.data_set("bigbench")
    expected = {f"{t}/task.json" for t in T0_TASKS} | {f"{t}/{s}/task.json" for t, subs in KNOWN_SUBTASKS.items() for s in subs}
    assert set(bb.files) == expected and len(bb.files) == 23
    templates = fetching.data_set("templates")
    assert len(templates.files) == 279 and set(templates.extras) == {"LICENSE", "templates.py"}
    assert all(len(d) == 64 for d in [*bb.files.values(), *templates.files.values()])


def test_a_config_folder_holding_a_paper_task_with_other_bytes_is_refused(tmp_path):
    from rospr_harness.tasks import get_task
    from rospr_harness.tasks.base import DataSettings

    write_folder(tmp_path / "bb", {"winowhy/task.json": b'{"examples": [{"input": "q", "target_scores": {"a": 1}}]}'})
    task = get_task("bigbench/winowhy", DataSettings(bigbench=str(tmp_path / "bb")))
    with pytest.raises(TaskError, match=r"winowhy/task\.json: sha256 [0-9a-f]{64} differs from the committed"):
        task.load("bigbench")
    write_folder(tmp_path / "bb", {"my_task/task.json": b'{"examples": [{"input": "q", "target_scores": {"a": 1}}]}'})
    assert get_task("bigbench/my_task", DataSettings(bigbench=str(tmp_path / "bb"))).load("bigbench").examples  # a user's own


# --------------------------------------------------------------------------------------------
# The real files, where the machine has them
# --------------------------------------------------------------------------------------------


def rospr(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rospr_harness.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_fetch_from_a_folder_of_the_fourteen_tasks_and_status_names_it(bigbench_dir, tmp_path):
    copy = shutil.copytree(bigbench_dir, tmp_path / "my-copy" / "bigbench")
    env = {"ROSPR_DATA_CACHE": str(tmp_path / "cache")}
    done = rospr("data", "fetch", "bigbench", "--from", str(copy.parent), env=env)
    assert done.returncode == 0, done.stderr
    assert f"bigbench: {tmp_path / 'cache' / 'bigbench-1.0.0' / 'benchmark_tasks'} (23 files, from local:{copy.parent.resolve()})" in done.stdout
    status = rospr("data", "status", "bigbench", env=env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()[1:]
    assert len(lines) == 14 and all(f"data cache, from local:{copy.parent.resolve()}" in line for line in lines)


def test_one_changed_byte_in_a_real_task_file_is_refused_naming_it(bigbench_dir, tmp_path):
    copy = shutil.copytree(bigbench_dir, tmp_path / "bigbench")
    path = copy / "logical_deduction" / "five_objects" / "task.json"
    path.write_bytes(changed(path.read_bytes()))
    done = rospr("data", "fetch", "bigbench", "--from", str(copy), env={"ROSPR_DATA_CACHE": str(tmp_path / "cache")})
    assert done.returncode != 0
    assert "refused 1 file(s) whose bytes differ from the committed manifest: logical_deduction/five_objects/task.json" in done.stderr
