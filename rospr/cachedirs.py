"""Where the project's caches live: one user cache root, one folder (or file) per kind under it.

The root (:func:`cache_home`) is ``$ROSPR_HOME``, else ``$XDG_CACHE_HOME/rospr``, else
``~/.cache/rospr``: never the current folder, so a run started from another folder finds the same
exports, units and fetched data. Each kind keeps its own environment override::

    kind     environment variable   default under the root
    data     $ROSPR_DATA_CACHE      data/          (the fetched promptsource / BIG-bench sdists)
    onnx     $ROSPR_ONNX_CACHE      onnx/          (on-demand ONNX exports)
    units    $ROSPR_UNIT_CACHE      units/         (finished (task, prompt, method) units)
    retrievers $ROSPR_RETRIEVER_CACHE retrievers/  (retriever checkpoints made from a weights file)
    export-env $ROSPR_EXPORT_ENV    export-env/    (the environment rospr makes for Optimum's export)
    digests  $ROSPR_DIGEST_MEMO     digests.json   (checkpoint weight digests by stat key; a file)

Nothing here creates a folder; the code that writes a cache does. The folder caches (data, onnx,
units, retrievers) are each a ``rospr.store.ContentStore`` rooted at their ``cache_path``: every one of them
asks this module where it lives, and none decides it itself.
"""

from __future__ import annotations

import os
from pathlib import Path

# kind -> (environment variable, name under the root)
CACHES: dict[str, tuple[str, str]] = {
    "data": ("ROSPR_DATA_CACHE", "data"),
    "onnx": ("ROSPR_ONNX_CACHE", "onnx"),
    "units": ("ROSPR_UNIT_CACHE", "units"),
    "retrievers": ("ROSPR_RETRIEVER_CACHE", "retrievers"),
    "export-env": ("ROSPR_EXPORT_ENV", "export-env"),
    "digests": ("ROSPR_DIGEST_MEMO", "digests.json"),
}


def cache_home() -> Path:
    """The user cache root: ``$ROSPR_HOME``, else ``$XDG_CACHE_HOME/rospr``, else ``~/.cache/rospr``."""
    home = os.environ.get("ROSPR_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "rospr"


def cache_path(kind: str, explicit: str | os.PathLike | None = None) -> Path:
    """The folder (``digests``: the file) of the cache ``kind``: ``explicit`` (a config key or a CLI
    flag) when given, else its environment variable, else its name under :func:`cache_home`.
    Refuses (``KeyError`` naming the kinds) another kind."""
    try:
        env, name = CACHES[kind]
    except KeyError:
        raise KeyError(f"unknown cache kind {kind!r}: one of {sorted(CACHES)}") from None
    if explicit:
        return Path(explicit).expanduser()
    value = os.environ.get(env)
    return Path(value).expanduser() if value else cache_home() / name
