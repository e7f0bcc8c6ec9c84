"""The unit cache: a finished (task, prompt, method) unit stored under the content key of what made it.

A unit's key (``unit_key``) is the sha256 of everything its records depend on: the scoring model's
identity (config, weights or export key, backend, precision), for RoSPr methods the retriever's
identity and the prompt bank and library hashes and the method's settings (Q, N, N', VAR candidates,
leave-one-out, seed), the task data and template hash (``UnitData.content_hash``: rows and template),
the scoring convention, and ``CACHE_VERSION``. For the onnxruntime backend the model's identity
carries the sha256 of the graph files that computed the unit (``onnx_graph_sha256``), so units
scored by another graph (a damaged one, a re-export that differs) never share a key. The batch size
and the executor are not in the key: they do not change a prediction (scores agree to 1e-5).

Layout: ``<dir>/<key[:2]>/<key>/records.jsonl`` (the records file as a run writes it) and
``meta.json`` (format, version, key, the key's parts, the unit's fields, the records' sha256 as
``sha256`` and in ``files``, sealed by ``manifest_hash``: the manifest of ``rospr.store``, whose
client this cache is). An entry is checked on every read (meta readable and sealed, key, sha256 of
the records); one that fails is logged and recomputed, never trusted, and the new result replaces
it. Entries written before the store (no ``files``) are read from their ``sha256``. A reused unit's
``n`` and ``accuracy`` are recomputed from its records by the run directory (``rospr_harness.figures.unit_figures``): the
metadata's copies are for people, never the source of a number. The one exception is the unit's
bootstrap interval and stderr (``unit.figures``, ``figures.spread_fields``): taken again only when the
records give the same n and accuracy and the statistics are the same, so a fully cached run does not
draw 2000 replicates per unit again. Entries are staged and renamed into place by the store, so a
reader never sees half an entry; of concurrent writers of one key the first wins (the contents are
equal). An entry's records file is read-only: a run reusing it hard-links it as its own records file
(``rospr.artifacts.atomic_link_or_write``; a copy across file systems), so nothing is copied and
nothing fsynced for a cached unit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from rospr_harness.config import RosprConfig
from rospr_harness.schema import RetrievalLog, UnitResult
from rospr.artifacts import FileRef, file_mode, read_file_ref
from rospr.cachedirs import cache_path
from rospr.canonical import digest_bytes, digest_json
from rospr.identity import weights_digest
from rospr.library import Library
from rospr.scoring import Convention
from rospr.selection import Method
from rospr.store import ContentStore, StoreError, check_files

log = logging.getLogger(__name__)

CACHE_FORMAT = "rospr-unit-cache"
# 2: sealed meta, graph sha256 in the model's identity; 3: tie scoring changed, and the identities of
# the model, the retriever and the bank carry their weights digests (entries of 2 are never read)
CACHE_VERSION = 3
# Where a model is served from is not what it is.
_LOCATION_KEYS = ("triton_url",)
RECORDS = "records.jsonl"


def cache_root(kind: str, dir_: str | Path | None = None) -> Path:
    """The folder of the cache ``kind`` (``units``: this module's; ``onnx``: on-demand exports): the
    argument, else its environment variable (``$ROSPR_UNIT_CACHE``, ``$ROSPR_ONNX_CACHE``), else its
    folder under the user cache root (``rospr.cachedirs``: ``$ROSPR_HOME``, else
    ``$XDG_CACHE_HOME/rospr``, else ``~/.cache/rospr``), never the current folder. Refuses
    (``KeyError``) another kind."""
    if kind not in ("units", "onnx"):
        raise KeyError(f"unknown cache kind {kind!r}: units or onnx")
    return cache_path(kind, dir_)


def local_weights(name_or_path: str) -> str | None:
    """A digest of a local checkpoint's weights (None for a hub name or a folder without weights)."""
    if not Path(name_or_path).is_dir():
        return None
    try:
        return weights_digest(name_or_path)
    except ValueError:
        return None


def scorer_part(backend_name: str, identity: dict, model_path: str) -> dict:
    """The scorer's part of a key: backend, its identity without locations, and a digest of the local
    weights at ``model_path`` unless the identity already names the exported graph (onnxruntime)."""
    weights = None if "onnx_cache_key" in identity else local_weights(model_path)
    return {"backend": backend_name, "identity": {k: v for k, v in identity.items() if k not in _LOCATION_KEYS},
            "weights": weights}


def rospr_part(library: Library, retriever: str, rc: RosprConfig, seed: int) -> dict:
    """A RoSPr method's part of a key: the retriever and its weights, the bank and library the
    retrieval used, and the settings that decide a unit's prompt (Q, N, the votes, N', VAR
    candidates, leave-one-out, the query seed)."""
    return {"retriever": library.manifest.get("retriever"), "retriever_weights": local_weights(retriever),
            "bank": library.manifest.get("bank_hash"), "library": library.content_hash,
            "queries": rc.queries, "top_n": rc.top_n, "votes": rc.votes, "n_inter": rc.n_inter, "var_candidates": rc.var_candidates,
            "leave_one_out": rc.leave_one_out, "seed": seed}


def key_parts(scorer: dict, task: str, prompt: str, data_hash: str, convention: Convention, method: Method,
              rospr: dict | None) -> dict[str, Any]:
    """What a unit's records depend on (see the module docstring): ``scorer`` from ``scorer_part``,
    the unit, its data's content hash, the convention, the method and (RoSPr methods) ``rospr``
    from ``rospr_part``. Refuses (``ValueError``) a RoSPr method without its ``rospr`` part."""
    parts = {"model": scorer, "task": task, "prompt": prompt, "data": data_hash,
             "convention": asdict(convention), "method": method.name}
    if method.retrieve:
        if rospr is None:
            raise ValueError(f"method {method.name}: a unit cache key needs the retrieval's part (rospr_part)")
        parts["rospr"] = rospr
    return parts


def unit_key(parts: dict[str, Any]) -> str:
    """The content key of a unit from its parts (``key_parts``)."""
    return digest_json({"format": CACHE_FORMAT, "version": CACHE_VERSION, **parts})


@dataclass(frozen=True)
class UnitMeta:
    """What an entry's meta.json holds of its unit (its ``unit`` object, keys in this order): the
    ``UnitResult`` fields that its records do not give (skipped rows and why, truncations, the data's
    content hash, wall time, the retrieval log), ``n`` and ``accuracy`` for people reading the entry
    (a reuse takes them from the records), and ``figures`` (``rospr_harness.figures.spread_fields``: the
    spread, taken again on reuse when the records agree). A key an entry lacks takes its default."""

    n: int = 0
    accuracy: float | None = None
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    content_hash: str = ""
    wall_s: float = 0.0
    retrieval: RetrievalLog | None = None
    figures: dict[str, Any] | None = None

    @classmethod
    def of(cls, unit: UnitResult, figures: dict[str, Any] | None = None) -> "UnitMeta":
        """The metadata of a computed ``unit`` (``figures``: its ``spread_fields``)."""
        return cls(n=unit.n, accuracy=unit.accuracy, skipped=unit.skipped, skipped_reasons=dict(unit.skipped_reasons),
                   truncated=unit.truncated, content_hash=unit.content_hash, wall_s=unit.wall_s,
                   retrieval=unit.retrieval, figures=figures)

    def to_json(self) -> dict[str, Any]:
        """meta.json's ``unit`` object (``figures`` only when set)."""
        out = {"n": self.n, "accuracy": self.accuracy, "skipped": self.skipped,
               "skipped_reasons": dict(self.skipped_reasons), "truncated": self.truncated,
               "content_hash": self.content_hash, "wall_s": self.wall_s,
               "retrieval": self.retrieval.model_dump() if self.retrieval is not None else None}
        if self.figures is not None:
            out["figures"] = self.figures
        return out

    @classmethod
    def from_json(cls, data: Any, where: Path) -> "UnitMeta":
        """The metadata in meta.json's ``unit`` object (``where``: that file). Refuses (``StoreError``,
        naming the field) an object that does not follow ``UnitMeta``: the unit is recomputed."""
        try:
            return _UNIT_META.validate_python(data or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(x) for x in first["loc"])
            raise StoreError(f"{where}: field 'unit.{name}': {first['msg']}; recomputing the unit") from None


_UNIT_META = TypeAdapter(UnitMeta)


@dataclass
class CachedUnit:
    """A verified entry: the records file's bytes and digest, and the unit's metadata."""

    key: str
    records: bytes
    sha256: str
    meta: UnitMeta
    source: FileRef | None = None  # the records file these bytes were read from (a run links it: no copy)


class UnitCache:
    """Content-addressed finished units under ``root``: a client of ``rospr.store.ContentStore``
    (entry ``<key[:2]>/<key>``, manifest ``meta.json``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.store = ContentStore(self.root, CACHE_FORMAT, CACHE_VERSION, manifest_name="meta.json",
                                  fix="recomputing the unit")

    def path(self, key: str) -> Path:
        return self.store.path(f"{key[:2]}/{key}")

    def get(self, key: str) -> CachedUnit | None:
        """The entry of ``key`` when present and intact; None otherwise (a damaged one is logged and
        left for ``put`` to replace: reading changes nothing, so ``rospr plan`` may look)."""
        return self.store.open(f"{key[:2]}/{key}", verify=lambda entry: self._check(entry, key), repair=False)

    def _check(self, entry: Path, key: str) -> CachedUnit:
        """The verified entry in ``entry``; refuses (``StoreError``) meta.json unsealed, of another
        format, version or key, and records whose sha256 differs."""
        meta = self.store.read_manifest(entry)
        if meta.get("key") != key:
            raise StoreError(f"{entry / 'meta.json'}: field 'key' is not {key[:12]}…, not this entry's; "
                             "recomputing the unit")
        # entries written before the store list their one file as 'sha256'
        files = meta.get("files") or {RECORDS: meta.get("sha256")}
        if not isinstance(files, dict) or RECORDS not in files:
            check_files(entry, files, entry / "meta.json", "recomputing the unit")  # refuses it, naming why
        others = {name: digest for name, digest in files.items() if name != RECORDS}
        if others:
            check_files(entry, others, entry / "meta.json", "recomputing the unit")
        try:  # the records read once, from the regular file itself (a link is refused), and hashed once
            records, source = read_file_ref(entry / RECORDS)
        except OSError as exc:
            what = "missing" if isinstance(exc, FileNotFoundError) else f"not a regular file ({exc.strerror or exc})"
            raise StoreError(f"{entry / RECORDS}: listed in {entry / 'meta.json'} field 'files' but {what}; "
                             "recomputing the unit") from None
        digest = digest_bytes(records)
        if digest != files.get(RECORDS) or digest != meta.get("sha256"):
            raise StoreError(f"{entry / RECORDS}: sha256 {digest[:12]}… differs from meta.json's; "
                             "recomputing the unit")
        return CachedUnit(key, records, digest, UnitMeta.from_json(meta.get("unit"), entry / "meta.json"), source)

    def put(self, key: str, parts: dict[str, Any], records: bytes, unit: UnitMeta) -> None:
        """Store a unit: a good entry already there (a concurrent writer's) is kept, a damaged one
        replaced. Raises ``OSError`` for a cache that cannot be written."""
        stage = self.store.stage(f"{key[:2]}/{key}")
        try:
            digest = stage.write_bytes(RECORDS, records)
            # read-only: a run that reuses the unit hard-links this file as its records (no copy), so an
            # edit in place of either would change both; the cache's own writers only ever rename
            os.chmod(stage.path / RECORDS, 0o444 & file_mode())  # within the umask, as written
        except BaseException:
            self.store.drop(stage)
            raise
        meta = {"key": key, "parts": parts, "unit": unit.to_json(), "sha256": digest}

        def good(entry: Path) -> bool:
            try:
                self._check(entry, key)
                return True
            except (StoreError, OSError):
                return False

        self.store.publish(stage, meta, keep=good)
