"""Canonical JSON and its digest: the text every content address of the project covers.

``canonical`` is sorted keys, compact separators, UTF-8, no NaN; ``digest_json`` its sha256. Prompt
train keys, bank and library hashes, manifest seals, unit-cache keys and the run config's hash are all
``digest_json`` of a plain dict. It imports nothing of the project, so every layer may use it
(``rospr.artifacts`` seals manifests with it, ``rospr.identity`` builds model identities on it).

``row_text`` is the one other spelling, kept byte for byte: the text of a task row that a unit's
``content_hash`` (in results.json and the unit-cache key) and a template's row seed (its ``choice``
and shuffles) cover. It is ``canonical`` but for json's default separators, and it takes what dataset
rows hold (values through ``str``, NaN); moving rows to ``canonical`` would change every recorded
content hash and every seeded prompt.

Every digest and every derived seed of the project is made here, so each is spelt once:
``sha256_text``/``digest_bytes`` (one text or byte string), ``digest_chunks`` (several pieces
streamed: a row list, a list of files), ``sha256_file`` (a file streamed in blocks) and
``derive_seed`` (a random seed from named parts: library key texts, query sampling, tuning, the
built-in suite, template row seeds, bootstrap draws).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace variation): the text that content hashes cover.
    Refuses (``ValueError``) NaN and infinities, (``TypeError``) values that are not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def row_text(value: Any) -> str:
    """The JSON text of a task row (sorted keys, ``", "`` and ``": "`` separators, UTF-8; a value that
    is not JSON through ``str``; NaN as ``NaN``): what row content hashes and template row seeds
    cover. Never refuses a row."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def sha256_text(text: str) -> str:
    """The sha256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_json(value: Any) -> str:
    """The sha256 hex digest of ``value``'s canonical JSON (``canonical``)."""
    return sha256_text(canonical(value))


def digest_bytes(data: bytes) -> str:
    """The sha256 hex digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def digest_chunks(chunks: Iterable[str | bytes]) -> str:
    """The sha256 hex digest of ``chunks`` one after another (text as UTF-8), hashed as they come:
    nothing is joined in memory."""
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
    return h.hexdigest()


def sha256_file(path: Path | str | int) -> str:
    """The sha256 of a file's bytes: a path, or an open descriptor read from offset 0 with ``pread``
    (its offset untouched), in 4 MiB blocks (no copy of the whole file; the GIL is released while reading
    and hashing, so hashes run in threads side by side)."""
    fd = path if isinstance(path, int) else os.open(path, os.O_RDONLY)
    try:
        h, offset = hashlib.sha256(), 0
        while block := os.pread(fd, 4 << 20, offset):
            h.update(block)
            offset += len(block)
        return h.hexdigest()
    finally:
        if fd is not path:
            os.close(fd)


def derive_seed(*parts: Any, sep: str = "/", bits: int = 64) -> int:
    """A seed of ``bits`` bits (at most 256) from ``parts``: the first ``bits`` of the sha256 of their
    text (``str`` of each) joined by ``sep``. The same parts give the same seed on any machine, in any
    order of work: ``derive_seed("rospr-tune", seed, prompt_id, bits=32)``."""
    digest = hashlib.sha256(sep.join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest, "big") >> (256 - bits)
