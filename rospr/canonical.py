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
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


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
