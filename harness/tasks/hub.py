"""The Hugging Face hub as the harness sees it: whether it may be reached now.

``HF_HUB_OFFLINE`` and ``HF_DATASETS_OFFLINE`` are read the way ``huggingface_hub`` and ``datasets``
read them (``1``, ``ON``, ``YES``, ``TRUE``, any case). With either set, ``datasets.load_dataset`` on a
hub id makes no network call and reads only the local datasets cache (``$HF_DATASETS_CACHE``), and
``from_pretrained`` reads only the local hub cache (``$HF_HUB_CACHE``). ``rospr data status`` then
names that cache as the source (never "hub"), and a load that finds nothing there fails with one line
saying the hub is offline and where rows can be put instead.
"""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = {"1", "ON", "YES", "TRUE"}


def offline_reason() -> str | None:
    """``"HF_HUB_OFFLINE=1"`` (the first of :data:`OFFLINE_VARIABLES` set to a true value, as it is
    set) when the hub is switched off, else ``None``."""
    for name in OFFLINE_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().upper() in _TRUE:
            return f"{name}={value}"
    return None


def offline_note(folder: str, split: str, hub_id: str, reason: str) -> str:
    """What ``rospr data status`` says of a split that would come from the hub while it is offline."""
    return (f"the hub is offline ({reason}): only the local datasets cache is read; without {hub_id} there, put "
            f"hub-schema rows in <rows_dir>/{folder}/{split}.jsonl or a snapshot in <hub_dir>/{hub_id}/")


def offline_failure(folder: str, split: str, hub_id: str, reason: str) -> str:
    """The one-line error of a hub load that found nothing in the local cache while the hub is offline."""
    return (f"dataset {folder!r} split {split!r}: the hub is offline ({reason}) and {hub_id} is not in the "
            f"local datasets cache; put hub-schema rows in <rows_dir>/{folder}/{split}.jsonl (data.rows_dir) "
            f"or a snapshot in <hub_dir>/{hub_id}/ (data.hub_dir), or unset {reason.partition('=')[0]} where the "
            "hub is reachable (`rospr data status` shows where each dataset's rows come from)")
