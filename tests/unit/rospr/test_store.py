"""rospr.store: staged writes, sealed manifests, atomic publish, verified open, discard, sweeping."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from rospr.artifacts import seal
from rospr.store import ContentStore, StoreError, sweep


def _store(tmp_path):
    return ContentStore(tmp_path / "c", "test-store", 1)


def _entries(folder):
    return sorted(os.listdir(folder))


def test_publish_seals_every_file_and_open_verifies(tmp_path):
    store = _store(tmp_path)
    stage = store.stage("ab/abcd")
    assert stage.path.parent == tmp_path / "c" / "ab"  # beside the destination: one file system
    stage.write_bytes("records.jsonl", b"one\n")
    stage.write_bytes("sub/x.bin", b"\x00\x01")
    entry = store.publish(stage, {"key": "abcd"})
    assert entry == tmp_path / "c" / "ab" / "abcd"
    assert _entries(entry.parent) == ["abcd"]  # no stage, no lock left
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["files"] == {"records.jsonl": hashlib.sha256(b"one\n").hexdigest(),
                                 "sub/x.bin": hashlib.sha256(b"\x00\x01").hexdigest()}
    assert (manifest["format"], manifest["version"], manifest["key"]) == ("test-store", 1, "abcd")
    assert seal(manifest) == manifest  # the seal is rospr.artifacts' one
    assert store.open("ab/abcd") == manifest == store.verify_sealed(entry)


@pytest.mark.parametrize("damage", ["flip", "edit_manifest", "drop_file", "other_version"])
def test_open_discards_a_damaged_entry(tmp_path, damage):
    store = _store(tmp_path)
    stage = store.stage("e")
    stage.write_bytes("a.txt", b"hello")
    entry = store.publish(stage, {})
    mpath = entry / "manifest.json"
    if damage == "flip":
        (entry / "a.txt").write_bytes(b"hellp")
    elif damage == "edit_manifest":
        m = json.loads(mpath.read_text())
        m["files"]["a.txt"] = hashlib.sha256(b"hellp").hexdigest()
        mpath.write_text(json.dumps(m))
    elif damage == "drop_file":
        (entry / "a.txt").unlink()
    else:
        mpath.write_text(json.dumps(seal({**json.loads(mpath.read_text()), "version": 2})))
    with pytest.raises(StoreError, match="a.txt|manifest_hash|version"):
        store.verify_sealed(entry)
    assert store.open("e") is None
    assert _entries(tmp_path / "c") == []  # discarded, nothing aside


def test_a_custom_verify_decides(tmp_path):
    store = _store(tmp_path)
    stage = store.stage("e")
    stage.write_bytes("manifest.json", b"{}")  # the client's own manifest
    entry = store.publish(stage)
    assert store.open("e", verify=lambda folder: folder) == entry

    def refuse(folder):
        raise StoreError(f"{folder}: not mine")

    assert store.open("e", verify=refuse, repair=False) is None and entry.is_dir()  # look only
    assert store.open("e", verify=refuse) is None and not entry.exists()


def test_replace_keeps_a_good_destination_or_replaces_a_bad_one(tmp_path):
    store = _store(tmp_path)
    first = store.stage("e")
    first.write_bytes("a", b"1")
    second = store.stage("e")  # a concurrent writer of the same name
    second.write_bytes("a", b"2")
    store.publish(first, {})
    assert store.publish(second, {}, keep=lambda d: True) == store.path("e")
    assert (store.path("e") / "a").read_bytes() == b"1"  # the first wins
    third = store.stage("e")
    third.write_bytes("a", b"3")
    store.publish(third, {}, keep=lambda d: False)  # judged bad: replaced
    assert (store.path("e") / "a").read_bytes() == b"3"
    assert _entries(tmp_path / "c") == ["e"]


def test_a_failed_rename_puts_the_earlier_entry_back(tmp_path, monkeypatch):
    store = _store(tmp_path)
    stage = store.stage("e")
    stage.write_bytes("a", b"old")
    store.publish(stage, {})
    stage = store.stage("e")
    stage.write_bytes("a", b"new")
    real = os.rename

    def rename(src, dst):
        if str(src) == str(stage.path):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError):
        store.publish(stage, {})
    assert (store.path("e") / "a").read_bytes() == b"old"
    assert _entries(tmp_path / "c") == ["e"]


def test_drop_leaves_nothing(tmp_path):
    store = _store(tmp_path)
    stage = store.stage("e")
    stage.write_bytes("a", b"1")
    store.drop(stage)
    store.drop(stage)
    assert _entries(tmp_path / "c") == []


def test_names_must_stay_inside(tmp_path):
    store = _store(tmp_path)
    with pytest.raises(StoreError):
        store.path("../x")
    stage = store.stage("e")
    with pytest.raises(StoreError):
        stage.write_bytes("../escape", b"")
    store.drop(stage)


def test_adopt_moves_a_file_in_with_its_digest(tmp_path):
    store = _store(tmp_path)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 1000)
    stage = store.stage("e")
    stage.adopt("data/big.bin", src)
    entry = store.publish(stage, {})
    assert not src.exists() and (entry / "data" / "big.bin").read_bytes() == b"x" * 1000
    assert store.open("e")["files"]["data/big.bin"] == hashlib.sha256(b"x" * 1000).hexdigest()


_KILLED_WRITER = """
import os, sys
from rospr.store import ContentStore
store = ContentStore(sys.argv[1], "test-store", 1)
stage = store.stage("ab/key")
stage.write_bytes("half", b"h")
print(stage.path, flush=True)
os._exit(9)  # killed mid-write: no cleanup runs
"""


def test_a_killed_writer_leaves_a_stage_that_the_next_open_sweeps(tmp_path):
    root = tmp_path / "c"
    out = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(root)], capture_output=True, text=True)
    stage_path = out.stdout.strip()
    assert os.path.isdir(stage_path) and os.path.exists(stage_path + ".lock")
    store = ContentStore(root, "test-store", 1)
    live = store.stage("ab/other")  # a live writer beside it is never swept
    assert store.open("ab/key") is None
    assert not os.path.exists(stage_path) and not os.path.exists(stage_path + ".lock")
    assert live.path.is_dir() and sweep(root / "ab") == 0
    live.write_bytes("a", b"1")
    assert store.publish(live, {}) == root / "ab" / "other"


def test_a_live_stage_and_its_aside_folder_are_never_swept(tmp_path):
    store = _store(tmp_path)
    stage = store.stage("e")
    aside = stage.path.with_name(stage.path.name + ".aside")
    (aside / "entry").mkdir(parents=True)  # the entry it replaces, while the rename is under way
    assert sweep(tmp_path / "c") == 0 and aside.is_dir() and stage.path.is_dir()
    store.drop(stage)
    assert _entries(tmp_path / "c") == []


def test_a_stage_without_its_lock_and_an_aside_folder_are_swept(tmp_path):
    folder = tmp_path / "c"
    (folder / ".stage-e-abc").mkdir(parents=True)
    (folder / ".stage-e-abc.aside" / "entry").mkdir(parents=True)
    (folder / ".aside-e-abc" / "entry").mkdir(parents=True)
    (folder / "e").mkdir()
    assert sweep(folder) == 3
    assert _entries(folder) == ["e"]


def _swap_folder(tmp_path):
    from rospr.store import FolderSwap

    folder = tmp_path / "run"
    (folder / "records").mkdir(parents=True)
    (folder / "results.json").write_text("old")
    (folder / "records" / "a").write_text("old a")
    (folder / "lock").write_text("")  # not an entry: never moved
    return folder, FolderSwap(folder, ("results.json", "records", "report.md"), new=".new", old=".old")


def test_folder_swap_commits_all_entries_at_once(tmp_path):
    folder, swap = _swap_folder(tmp_path)
    new = swap.begin()
    (new / "results.json").write_text("new")
    (new / "report.md").write_text("new report")
    swap.commit()
    assert sorted(os.listdir(folder)) == ["lock", "report.md", "results.json"]  # the old records went too
    assert (folder / "results.json").read_text() == "new"


def test_folder_swap_killed_before_the_commit_point_is_undone(tmp_path):
    folder, swap = _swap_folder(tmp_path)
    new = swap.begin()
    (new / "records").mkdir()
    (new / "records" / "b").write_text("new b")
    swap.old.mkdir()  # killed in step 2: one earlier entry aside, one new entry in place
    os.rename(folder / "records", swap.old / "records")
    os.rename(new / "records", folder / "records")
    assert swap.recover() is True
    assert sorted(os.listdir(folder)) == ["lock", "records", "results.json"]
    assert (folder / "records" / "a").read_text() == "old a" and (folder / "results.json").read_text() == "old"


def test_folder_swap_killed_after_the_commit_point_is_finished(tmp_path):
    folder, swap = _swap_folder(tmp_path)
    new = swap.begin()
    (new / "results.json").write_text("new")
    swap.old.mkdir()
    os.rename(folder / "results.json", swap.old / "results.json")
    os.rename(folder / "records", swap.old / "records")
    os.rename(new / "results.json", folder / "results.json")
    os.rename(new, swap.old / "staging")  # committed, killed before the earlier entries were removed
    assert swap.recover() is False
    assert sorted(os.listdir(folder)) == ["lock", "results.json"] and (folder / "results.json").read_text() == "new"


def test_folder_swap_abort_keeps_the_current_entries(tmp_path):
    folder, swap = _swap_folder(tmp_path)
    (swap.begin() / "results.json").write_text("new")
    swap.abort()
    assert sorted(os.listdir(folder)) == ["lock", "records", "results.json"]
    assert (folder / "results.json").read_text() == "old"


_RACING_WRITER = """
import sys
from rospr.store import ContentStore
store = ContentStore(sys.argv[1], "test-store", 1)
for i in range(20):
    stage = store.stage(f"k{i}")
    stage.write_bytes("a", sys.argv[2].encode())
    store.publish(stage, {}, keep=lambda d: store.open(d.name, repair=False) is not None)
"""


def test_writers_in_several_processes_leave_one_whole_entry_each(tmp_path):
    root = tmp_path / "c"
    procs = [subprocess.Popen([sys.executable, "-c", _RACING_WRITER, str(root), f"writer {n}"]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert _entries(root) == sorted(f"k{i}" for i in range(20))  # no stage, lock or aside left
    store = ContentStore(root, "test-store", 1)
    assert all(store.open(f"k{i}") is not None for i in range(20))
