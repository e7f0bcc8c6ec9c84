"""The sha256 of large files, remembered by what the file system says about each file.

``FileDigests(memo)`` hashes a file once and remembers the digest in a side file (``memo``, JSON)
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

import hashlib
import json
import logging
import os
import time
from pathlib import Path

from rospr.artifacts import atomic_write_bytes
from rospr.cachedirs import cache_path

log = logging.getLogger(__name__)

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
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            before = stat_key(os.fstat(fh.fileno()))
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
            after = stat_key(os.fstat(fh.fileno()))
        digest = h.hexdigest()
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
