"""rospr.artifacts: its JSON readers refuse an object that gives a key twice (results.json, row files,
manifests of banks and libraries: ``read_manifest``), each naming the file, the key and where; its
remembered file digests (``FileDigests``) equal hashlib's over the bytes, and a file changed with its
mtime put back is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest

import rospr.artifacts as digests
from rospr.artifacts import ArtifactError, json_document, json_lines, read_manifest, strict_loads, write_manifest


class Refused(ValueError):
    pass


def test_json_document_names_the_key_and_its_path():
    text = '{"units": [{"task": "rte", "accuracy": 0.9}, {"task": "copa", "accuracy": 0.1, "accuracy": 0.9}]}'
    with pytest.raises(Refused) as exc:
        json_document(text, "run/results.json", Refused, "restore it")
    msg = str(exc.value)
    assert msg.startswith("run/results.json: key 'accuracy' appears more than once in $.units[1] ")
    assert msg.endswith("; restore it") and "\n" not in msg
    with pytest.raises(Refused, match=r'in \$\["a b"\]\.c '):
        json_document('{"a b": {"c": {"x": 1, "x": 1}}}', "f", Refused, "fix")
    # a key repeated with the same value is refused as well: the writer is not one we know
    with pytest.raises(Refused, match="key 'x' appears more than once in \\$ "):
        json_document('{"x": 1, "x": 1}', "f", Refused, "fix")
    # the same key in two different objects is fine
    assert json_document('{"a": {"x": 1}, "b": {"x": 2}}', "f", Refused, "fix") == {"a": {"x": 1}, "b": {"x": 2}}
    assert json_document('[{"x": 1}, {"x": 2}]', "f", Refused, "fix", expect=list) == [{"x": 1}, {"x": 2}]
    assert strict_loads('{"a": [1, {"b": null}]}', "f", Refused, "fix") == {"a": [1, {"b": None}]}


def test_json_lines_names_the_line():
    text = '{"id": 1, "label": 0}\n\n{"id": 2, "label": 1, "label": 0}\n'
    with pytest.raises(Refused) as exc:
        json_lines(text, "rows.jsonl", Refused, "write each key once")
    assert str(exc.value).startswith("rows.jsonl: line 3, key 'label' appears more than once in $ ")
    assert json_lines('{"id": 1}\n{"id": 2}', "rows.jsonl", Refused, "fix") == [{"id": 1}, {"id": 2}]


def test_results_json_with_a_key_twice_is_refused(tmp_path):
    from rospr_harness.schema import read_results

    path = tmp_path / "results.json"
    path.write_text('{"schema_version": "1.2", "schema_version": "1.0", "units": []}')
    with pytest.raises(ValueError) as exc:
        read_results(path)
    assert str(path) in str(exc.value) and "'schema_version' appears more than once" in str(exc.value)


def test_a_manifest_with_a_key_twice_is_refused(tmp_path):
    path = tmp_path / "manifest.json"
    sealed = write_manifest(path, {"format": "rospr-test", "version": 1, "weights": "a" * 16})
    assert read_manifest(path, "rospr-test", 1) == sealed
    # the sealed value last (json.loads would read it and the seal would pass), another one first
    text = path.read_text().replace('"format"', f'"weights": "{"b" * 16}",\n  "format"', 1)
    assert json.loads(text) == sealed
    path.write_text(text)
    with pytest.raises(ArtifactError) as exc:
        read_manifest(path, "rospr-test", 1)
    assert str(path) in str(exc.value) and "'weights' appears more than once in $" in str(exc.value)


def test_an_export_manifest_with_a_key_twice_is_not_used(tmp_path, caplog):
    from rospr_export.manifest import ExportIntegrityError, find_manifest, verify_export

    (tmp_path / "manifest.json").write_text('{"format": "rospr-onnx-export", "model_weights": "a", '
                                            '"model_weights": "b", "graphs": {}}')
    with caplog.at_level("WARNING"):
        assert find_manifest(tmp_path) is None
    assert "'model_weights' appears more than once" in caplog.text
    with pytest.raises(ExportIntegrityError, match="missing or unreadable"):
        verify_export(tmp_path)


def test_a_repeated_object_dropped_by_its_parents_repeat_is_still_named():
    with pytest.raises(Refused, match=r"key 'a' appears more than once in \$ "):
        json_document('{"a": {"x": 1, "x": 2}, "a": 3}', "f", Refused, "fix")
    with pytest.raises(Refused, match=r"key 'x' appears more than once in \$\.b\[0\] "):
        json_document('{"b": [{"x": 1, "x": 2}]}', "f", Refused, "fix")


def test_file_digests_against_hashlib(tmp_path, monkeypatch):
    def sha(path):
        return hashlib.sha256(path.read_bytes()).hexdigest()

    f = tmp_path / "w.bin"
    f.write_bytes(bytes(range(256)) * 64)
    memo = tmp_path / "memo.json"
    fresh = digests.FileDigests(memo)
    assert fresh.sha256(f) == sha(f)
    assert fresh.entries == {}  # written just now: too recent to remember (ctime granularity)
    monkeypatch.setattr(digests, "RACY_S", -1.0)
    d = digests.FileDigests(memo)
    assert d.sha256(f) == sha(f)
    d.save()
    assert json.loads(memo.read_text())["files"][str(f.resolve())]["sha256"] == sha(f)
    time.sleep(0.05)
    st = os.stat(f)
    with open(f, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xff")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert digests.FileDigests(memo).sha256(f) == sha(f) != json.loads(memo.read_text())["files"][str(f.resolve())]["sha256"]


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_class_8_what_users_meet_a_written_file_follows_the_umask(tmp_path, umask):
    """class 8: what users meet. ``atomic_write_bytes`` (mkstemp makes 0600) and ``write_manifest`` give a
    new file, and a file they replace, the mode ``open()`` would give under the umask; ``private=True``
    (secrets) gives 0600 whatever the umask."""
    import stat as st

    from rospr.artifacts import atomic_write_bytes, file_mode

    old = os.umask(umask)
    try:
        target = tmp_path / "out.bin"
        atomic_write_bytes(target, b"one")
        reference = tmp_path / "by_open"
        reference.write_bytes(b"x")  # what any other tool's output gets
        assert st.S_IMODE(target.stat().st_mode) == st.S_IMODE(reference.stat().st_mode) == 0o666 & ~umask
        target.chmod(0o600)
        atomic_write_bytes(target, b"two")  # a replaced file: the umask's mode again, not the old one
        assert st.S_IMODE(target.stat().st_mode) == 0o666 & ~umask and target.read_bytes() == b"two"
        write_manifest(tmp_path / "manifest.json", {"format": "x", "version": 1})
        assert st.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o666 & ~umask
        atomic_write_bytes(tmp_path / "token", b"secret", private=True)
        assert st.S_IMODE((tmp_path / "token").stat().st_mode) == 0o600 == file_mode(private=True)
        assert os.umask(umask) == umask  # reading it did not change it
    finally:
        os.umask(old)
