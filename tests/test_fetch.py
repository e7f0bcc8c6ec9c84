"""harness/datatools/fetch.py: checked, safe, atomic unpacking of pinned sdists into the data cache.

Offline tests build small archives here; the expected digests are computed with hashlib from the
bytes the test wrote. One slow test runs the real `rospr data fetch templates` through pip.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from rospr_harness.datatools import fetch as fetching
from rospr_harness.tasks.base import TaskError
from rospr_harness.datatools.fetch import Sdist
from rospr.artifacts import seal

REPO = Path(__file__).resolve().parents[1]

FILES = {
    "toy-1.0/LICENSE": b"Apache License 2.0\n",
    "toy-1.0/setup.py": b"raise SystemExit('never run')\n",
    "toy-1.0/toy/__init__.py": b"",
    "toy-1.0/toy/templates/ag_news/templates.yaml": b"templates: {}\n",
    "toy-1.0/toy/templates/super_glue/rte/templates.yaml": "templates: {a: caf\u00e9}\n".encode(),
    "toy-1.0/toy/templates/super_glue/rte/notes.txt": b"not data\n",
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_tar(path: Path, files: dict[str, bytes], links: dict[str, str] | None = None,
             extra: list[tarfile.TarInfo] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.size else None)
    return path


def spec_for(archive: Path, files: int = 2, **kw) -> Sdist:
    fields = dict(
        what="templates", name="toy", version="1.0", sha256=sha(archive.read_bytes()),
        data_root="toy/templates", folder="templates", data_names=("templates.yaml",),
        extras=("LICENSE",), files=files, keep_sdist=True,
    )
    fields.update(kw)
    return Sdist(**fields)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_unpacks_only_data_with_manifest(tmp_path):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    spec = spec_for(archive)
    cache = tmp_path / "cache"
    folder = fetching.install_archive(spec, archive, cache)
    assert folder == cache / "toy-1.0" / "templates"
    expected = {
        "LICENSE": FILES["toy-1.0/LICENSE"],
        "templates/ag_news/templates.yaml": FILES["toy-1.0/toy/templates/ag_news/templates.yaml"],
        "templates/super_glue/rte/templates.yaml": FILES["toy-1.0/toy/templates/super_glue/rte/templates.yaml"],
        "toy-1.0.tar.gz": archive.read_bytes(),
    }
    got = tree(cache / "toy-1.0")
    manifest = json.loads(got.pop("MANIFEST.json"))
    assert got == expected
    assert manifest["files"] == {rel: sha(data) for rel, data in expected.items()}
    assert manifest["sdist"] == {"name": "toy", "version": "1.0", "sha256": spec.sha256}
    assert (manifest["format"], manifest["version"]) == ("rospr-data-cache", 2) and seal(manifest) == manifest
    assert sorted(os.listdir(cache)) == ["toy-1.0"]  # no staging folder left behind
    assert fetching.cached(spec, cache) == folder
    assert fetching.verify(spec, cache) == []
    assert fetching.sdist_path(spec, cache) == cache / "toy-1.0" / "toy-1.0.tar.gz"


def test_cached_and_verify_notice_damage(tmp_path):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    spec = spec_for(archive)
    cache = tmp_path / "cache"
    fetching.install_archive(spec, archive, cache)
    dist = cache / "toy-1.0"
    (dist / "templates/ag_news/templates.yaml").write_bytes(b"templates: {evil: 1}\n")
    (dist / "templates/stray.yaml").write_bytes(b"")
    problems = fetching.verify(spec, cache)
    assert len(problems) == 2
    assert any("ag_news/templates.yaml: sha256 differs" in p for p in problems)
    assert any("stray.yaml: not in the manifest" in p for p in problems)
    # the cheap check trusts the manifest; another pin (count or digest) makes it miss
    assert fetching.cached(spec, cache) is not None
    assert fetching.cached(spec_for(archive, files=3), cache) is None
    assert fetching.cached(spec_for(archive, sha256="0" * 64), cache) is None
    (dist / "toy-1.0.tar.gz").write_bytes(b"damaged")
    assert fetching.sdist_path(spec, cache) is None
    (dist / "MANIFEST.json").unlink()
    assert fetching.cached(spec, cache) is None
    assert "missing" in fetching.verify(spec, cache)[0]


@pytest.mark.parametrize("member", ["../escape/templates.yaml", "/tmp/abs/templates.yaml",
                                    "toy-1.0/toy/templates/../../../escape.yaml"])
def test_member_escaping_the_target_is_refused(tmp_path, member):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", {**FILES, member: b"templates: {}\n"})
    cache = tmp_path / "cache"
    with pytest.raises(TaskError, match="outside"):
        fetching.install_archive(spec_for(archive), archive, cache)
    assert os.listdir(cache) == []  # nothing half-written is left, nothing is cached
    assert not list(tmp_path.rglob("escape*"))


def test_link_among_data_is_refused(tmp_path):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES,
                       links={"toy-1.0/toy/templates/glue/templates.yaml": "/etc/passwd"})
    cache = tmp_path / "cache"
    with pytest.raises(TaskError, match="is a link"):
        fetching.install_archive(spec_for(archive, files=3), archive, cache)
    assert os.listdir(cache) == []


def test_hard_link_and_device_among_data_are_refused(tmp_path):
    hard = tarfile.TarInfo("toy-1.0/toy/templates/x/templates.yaml")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "toy-1.0/setup.py"
    archive = make_tar(tmp_path / "h.tar.gz", FILES, extra=[hard])
    with pytest.raises(TaskError, match="is a link"):
        fetching.install_archive(spec_for(archive, files=3), archive, tmp_path / "c1")
    fifo = tarfile.TarInfo("toy-1.0/toy/templates/y/templates.yaml")
    fifo.type = tarfile.FIFOTYPE
    archive = make_tar(tmp_path / "f.tar.gz", FILES, extra=[fifo])
    with pytest.raises(TaskError, match="not a regular file"):
        fetching.install_archive(spec_for(archive, files=3), archive, tmp_path / "c2")


def test_truncated_archive_is_refused(tmp_path):
    big = {**FILES, "toy-1.0/toy/templates/big/templates.yaml": os.urandom(200_000)}
    whole = make_tar(tmp_path / "whole.tar.gz", big).read_bytes()
    archive = tmp_path / "toy-1.0.tar.gz"
    archive.write_bytes(whole[: len(whole) // 2])
    cache = tmp_path / "cache"
    # the digest pinned is the truncated file's, so only the unpacking can notice
    with pytest.raises(TaskError, match="damaged or truncated"):
        fetching.install_archive(spec_for(archive, files=3), archive, cache)
    assert os.listdir(cache) == []


def test_wrong_digest_names_both(tmp_path):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    pinned = "ab" * 32
    with pytest.raises(TaskError) as info:
        fetching.install_archive(spec_for(archive, sha256=pinned), archive, tmp_path / "cache")
    assert pinned in str(info.value) and sha(archive.read_bytes()) in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_wrong_file_count_is_refused(tmp_path):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    with pytest.raises(TaskError, match="2 files named .* holds 5"):
        fetching.install_archive(spec_for(archive, files=5), archive, tmp_path / "cache")


def test_failed_reinstall_keeps_the_previous_copy(tmp_path):
    good = make_tar(tmp_path / "good.tar.gz", FILES)
    cache = tmp_path / "cache"
    fetching.install_archive(spec_for(good), good, cache)
    before = tree(cache / "toy-1.0")
    bad = make_tar(tmp_path / "bad.tar.gz", {**FILES, "../x/templates.yaml": b""})
    with pytest.raises(TaskError):
        fetching.install_archive(spec_for(bad), bad, cache)
    assert tree(cache / "toy-1.0") == before
    # a successful reinstall replaces it, leaving one folder
    changed = {**FILES, "toy-1.0/LICENSE": b"MIT\n"}
    other = make_tar(tmp_path / "other.tar.gz", changed)
    fetching.install_archive(spec_for(other), other, cache)
    assert (cache / "toy-1.0" / "LICENSE").read_bytes() == b"MIT\n"
    assert os.listdir(cache) == ["toy-1.0"]


def _pip_tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root / "toy-1.0"


def test_fetch_from_the_tree_pip_unpacked(tmp_path, monkeypatch):
    """pip >= 26 refuses bigbench's metadata after unpacking; the data comes from its tree."""
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    spec = spec_for(archive, keep_sdist=False)
    calls = []

    def fake_pip(spec_, work):
        calls.append(work)
        return _pip_tree(work / "pip-tmp", FILES), False

    monkeypatch.setattr(fetching, "_pip_download", fake_pip)
    cache = tmp_path / "cache"
    folder = fetching.fetch(spec, cache)
    got = tree(cache / "toy-1.0")
    manifest = json.loads(got.pop("MANIFEST.json"))
    assert sorted(got) == ["LICENSE", "templates/ag_news/templates.yaml", "templates/super_glue/rte/templates.yaml"]
    assert manifest["files"] == {rel: sha(data) for rel, data in got.items()}
    assert folder == cache / "toy-1.0" / "templates"
    assert os.listdir(cache) == ["toy-1.0"]  # pip's work folder removed
    # idempotent: cached, pip is not run again; force runs it again
    assert fetching.fetch(spec, cache) == folder and len(calls) == 1
    fetching.fetch(spec, cache, force=True)
    assert len(calls) == 2


def test_tree_with_link_among_data_is_refused(tmp_path, monkeypatch):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)

    def fake_pip(spec_, work):
        top = _pip_tree(work / "pip-tmp", FILES)
        (top / "toy/templates/glue").mkdir()
        (top / "toy/templates/glue/templates.yaml").symlink_to("/etc/passwd")
        return top, False

    monkeypatch.setattr(fetching, "_pip_download", fake_pip)
    with pytest.raises(TaskError, match="a link"):
        fetching.fetch(spec_for(archive, files=3), tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


def _fake_run(rc: int, output: str):
    def run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, rc, stdout="", stderr=output)
    return run


def test_pip_hash_mismatch_names_both_digests(tmp_path, monkeypatch):
    expected, got = "1" * 64, "2" * 64
    output = ("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.\n"
              f"    toy==1.0 from https://files.pythonhosted.org/toy-1.0.tar.gz:\n"
              f"        Expected sha256 {expected}\n             Got        {got}\n")
    monkeypatch.setattr(fetching.subprocess, "run", _fake_run(1, output))
    with pytest.raises(TaskError) as info:
        fetching.fetch(fetching.SOURCES["templates"], tmp_path / "cache")
    assert expected in str(info.value) and got in str(info.value)
    assert os.listdir(tmp_path / "cache") == []


def test_pip_failure_says_how_to_do_without(tmp_path, monkeypatch):
    output = "ERROR: Could not find a version that satisfies the requirement promptsource==0.2.3\n"
    monkeypatch.setattr(fetching.subprocess, "run", _fake_run(1, output))
    with pytest.raises(TaskError) as info:
        fetching.fetch("templates", tmp_path / "cache")
    msg = str(info.value)
    assert "Could not find a version" in msg and "data.templates_dir" in msg and "rospr data fetch templates" in msg


def test_pip_command_pins_the_digest(tmp_path, monkeypatch):
    seen = {}

    def run(cmd, **kw):
        seen["cmd"], seen["env"] = cmd, kw["env"]
        seen["req"] = Path(cmd[cmd.index("-r") + 1]).read_text()
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: offline\n")

    monkeypatch.setattr(fetching.subprocess, "run", run)
    with pytest.raises(TaskError):
        fetching.fetch("bigbench", tmp_path / "cache")
    assert seen["req"] == f"bigbench==1.0.0 --hash=sha256:{fetching.SOURCES['bigbench'].sha256}\n"
    for flag in ("--require-hashes", "--no-deps", "--ignore-requires-python", "--no-clean"):
        assert flag in seen["cmd"]
    assert seen["cmd"][seen["cmd"].index("--no-binary") + 1] == ":all:"
    assert Path(seen["env"]["TMPDIR"]).is_relative_to(tmp_path / "cache")


def test_data_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("ROSPR_DATA_CACHE", str(tmp_path / "c"))
    assert fetching.data_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ROSPR_DATA_CACHE")
    monkeypatch.delenv("ROSPR_HOME", raising=False)  # conftest points it at a session folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert fetching.data_cache_dir() == tmp_path / "x" / "rospr" / "data"
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))  # the one user cache root of every cache
    assert fetching.data_cache_dir() == tmp_path / "home" / "data"


_NO_REGISTRY = ("Could not find a version", "No matching distribution", "Network is unreachable",
                "Temporary failure in name resolution", "Failed to establish a new connection",
                "Max retries exceeded", "ProxyError", "timed out")


@pytest.mark.slow
def test_real_fetch_templates(tmp_path):
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "-m", "rospr_harness.cli", "data", "fetch", "templates", "--cache-dir", str(cache)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0 and any(s in proc.stderr for s in _NO_REGISTRY):
        pytest.skip(f"pip cannot reach the package registry: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stderr
    folder = cache / "promptsource-0.2.3" / "templates"
    assert proc.stdout.strip() == f"templates: {folder} (279 files)"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("templates.yaml"))
    assert len(files) == 279 and "super_glue/rte/templates.yaml" in files
    archive = cache / "promptsource-0.2.3" / "promptsource-0.2.3.tar.gz"
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == fetching.SOURCES["templates"].sha256
    with tarfile.open(archive) as tar:  # every templates.yaml equals the archive's own bytes
        for name in files:
            member = tar.extractfile(f"promptsource-0.2.3/promptsource/templates/{name}")
            assert (folder / name).read_bytes() == member.read(), name
    assert fetching.verify("templates", cache) == []


def test_default_templates_dir_uses_the_cache_then_fetches(tmp_path, monkeypatch):
    from rospr_harness.tasks.templates import default_templates_dir

    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    monkeypatch.setitem(fetching.SOURCES, "templates", spec_for(archive))
    monkeypatch.setenv("ROSPR_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetching.subprocess, "run", _fake_run(1, "ERROR: Network is unreachable\n"))
    with pytest.raises(TaskError) as info:  # nothing cached, pip fails: say how to do without
        default_templates_dir()
    msg = str(info.value)
    assert "Network is unreachable" in msg
    assert all(s in msg for s in ("rospr data fetch templates", "data.templates_dir", "data.data_dir"))
    fetching.install_archive("templates", archive)
    assert default_templates_dir() == tmp_path / "cache" / "toy-1.0" / "templates"


def test_bigbench_default_location(tmp_path, monkeypatch):
    from rospr_harness.tasks import bigbench

    files = {"bb-1.0/PKG-INFO": b"Name: bb\n", "bb-1.0/bigbench/benchmark_tasks/toy/task.json": b"{}",
             "bb-1.0/bigbench/benchmark_tasks/toy/results.json": b"{}"}
    archive = make_tar(tmp_path / "bb-1.0.tar.gz", files)
    spec = spec_for(archive, what="bigbench", name="bb", data_root="bigbench/benchmark_tasks",
                    folder="benchmark_tasks", data_names=("task.json",), extras=("PKG-INFO",), files=1,
                    keep_sdist=False)
    monkeypatch.setitem(fetching.SOURCES, "bigbench", spec)
    monkeypatch.setenv("ROSPR_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fetching.subprocess, "run", _fake_run(1, "ERROR: offline\n"))
    assert bigbench.default_location(fetch_missing=False) == bigbench.DEFAULT_URL  # listing never fetches
    with pytest.raises(TaskError, match="data.bigbench"):
        bigbench.default_location()
    fetching.install_archive("bigbench", archive)
    folder = tmp_path / "cache" / "bb-1.0" / "benchmark_tasks"
    assert tree(folder) == {"toy/task.json": b"{}"}
    assert bigbench.default_location(fetch_missing=False) == str(folder)
    assert bigbench.BigBenchTask("toy").available()


def test_a_killed_fetch_leaves_stages_that_the_next_sweeps(tmp_path):
    """The data cache is a rospr.store client: stages of dead writers (no lock, or a free one) beside
    the entry are removed by the next fetch; a copy written before the store stays readable."""
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    spec = spec_for(archive)
    cache = tmp_path / "cache"
    (cache / ".stage-toy-1.0.download-dead" / "pip-tmp").mkdir(parents=True)
    (cache / ".stage-toy-1.0-dead").mkdir()
    (cache / ".stage-toy-1.0-dead2").mkdir()
    (cache / ".stage-toy-1.0-dead2.lock").write_text("")  # its writer's flock ended with it
    folder = fetching.install_archive(spec, archive, cache)
    assert sorted(os.listdir(cache)) == ["toy-1.0"]
    assert fetching.cached(spec, cache) == folder and fetching.verify(spec, cache) == []


def test_manifests_written_before_the_store_are_read_and_edited_ones_refused(tmp_path):
    archive = make_tar(tmp_path / "toy-1.0.tar.gz", FILES)
    spec = spec_for(archive)
    cache = tmp_path / "cache"
    folder = fetching.install_archive(spec, archive, cache)
    path = cache / "toy-1.0" / "MANIFEST.json"
    manifest = json.loads(path.read_text())
    edited = {**manifest, "created": "2020-01-01T00:00:00Z"}  # seal left as it was
    path.write_text(json.dumps(edited))
    assert fetching.cached(spec, cache) is None and "missing, unreadable" in fetching.verify(spec, cache)[0]
    legacy = {"manifest_version": 1, "name": "toy", "version": "1.0", "sdist_sha256": spec.sha256,
              "created": manifest["created"], "files": manifest["files"]}
    path.write_text(json.dumps(legacy, indent=1) + "\n")  # the dialect of the cache before the store
    assert fetching.cached(spec, cache) == folder and fetching.verify(spec, cache) == []
