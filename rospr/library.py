"""The Source Prompt Library: training instances of every soft prompt as keys, the prompt as value.

For each prompt of a bank, ``n`` of its training instances (the hard-prompted input texts, default
100: the first ``n`` of its training data, or ``n`` drawn at random, ``key_texts``) are embedded by
the retriever (``rospr.retriever``: the mean of the last encoder hidden states, pooled as the
library's ``pooling`` says) and stored in a FAISS index. A library is a directory::

    manifest.json        format "rospr-source-library": prompt ids and sources, retriever identity,
                         the bank's content hash, settings, the sha256 of every file, build_key
    keys.safetensors     "keys" float32 [K, D_r], "values" int64 [K] (index into manifest prompt_ids)
    index.faiss          the CPU index in FAISS's own file format (faiss.serialize_index, the bytes
                         faiss.write_index writes)
    instances.jsonl      the key texts with their prompt id, for people to read

The folder is one ``rospr.store`` entry (the store rooted at its parent, the folder's name the
entry's): the four files are staged beside it and published together by a rename, so a reader sees
the earlier library or the new one, never a mix, and nothing is overwritten in place. A folder
that holds anything but a library (no manifest of ours) is refused, not replaced.

One key. ``build_key`` is the library's one content address: its prompts, the bank's hash of them,
the retriever and the settings. A prompt's texts enter it as their digest, or as ``texts_key`` when
the caller can name what determines them without rendering them (``rospr_harness.method.library``:
the prompt's source key with the count and draw of its texts).

Index types (``IndexSettings.type``): ``flat`` (exact inner product, the default), ``ivf`` (inverted
lists, ``nlist`` cells, ``nprobe`` searched) and ``hnsw`` (graph, ``hnsw_m`` links). With faiss-gpu and
a GPU, ``flat`` and ``ivf`` indexes are cloned to the GPU for search (HNSW has no GPU version in
FAISS and stays on the CPU). With ``normalize`` (our default; the paper does not say) keys and
queries are L2-normalised, so inner product is cosine similarity and long inputs do not dominate;
without it the similarity is the raw dot product (the lab's code). Queries are embedded as the keys
were: the manifest records ``normalize``, ``max_tokens`` and ``pooling``.

Loading checks every file against the manifest, the index against the keys (count, dimension), and
the retriever identity against the one asked for: its config, output size and weights digest
(``rospr.identity.retriever_identity``), so a library is searched only with the encoder whose
weights made its keys. Libraries built before the weights were recorded (version 1) are refused:
rebuilding one is cheap and needs no one's word about the retriever.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from rospr.artifacts import ArtifactError, check_file, read_manifest
from rospr.canonical import derive_seed, digest_json
from rospr.errors import SettingError
from rospr.retriever import POOLINGS, Embedder, embed_padded, embed_texts
from rospr.store import ContentStore

log = logging.getLogger(__name__)
# faiss is imported here only; its loader logs at INFO which instruction set it tried and loaded ("Loading faiss
# with AVX2 support", six lines on every run): a failure to load still raises, so only warnings are kept
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

LIBRARY_FORMAT = "rospr-source-library"
LIBRARY_VERSION = 2  # 2: the retriever's weights digest recorded and checked


@dataclass(frozen=True)
class IndexSettings:
    """The FAISS index. ``nlist``/``nprobe`` of ``ivf`` default to sqrt(K) and nlist/4 (at least 1)."""

    type: Literal["flat", "ivf", "hnsw"] = field(default="flat", metadata={"help": "flat: exact inner product"})
    nlist: int | None = field(default=None, metadata={"help": "ivf cells (default sqrt(keys))"})
    nprobe: int | None = field(default=None, metadata={"help": "ivf cells searched (default nlist/4)"})
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    gpu: Literal["auto", "off"] = field(default="auto", metadata={
        "help": "auto: a GPU index when faiss-gpu and a GPU are present"})

    def __post_init__(self) -> None:
        if self.type not in ("flat", "ivf", "hnsw"):
            raise SettingError(f"library index type {self.type!r}: choose flat, ivf or hnsw")
        for name in ("nlist", "nprobe"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SettingError(f"library index {name} must be >= 1, got {v}")
        if self.gpu not in ("auto", "off"):
            raise SettingError(f"library index gpu {self.gpu!r}: choose auto or off")
        if self.hnsw_m < 2 or self.hnsw_ef_search < 1:
            raise SettingError("library index hnsw_m must be >= 2 and hnsw_ef_search >= 1")


@dataclass(frozen=True)
class LibraryEntry:
    """What goes into the library for one prompt: its id, source and key texts; ``texts_key``, when
    given, stands for the texts in ``build_key`` (what determines them; None: their own digest)."""

    prompt_id: str
    source: str
    texts: tuple[str, ...] = ()
    texts_key: str | None = None


SAMPLES = ("first", "random")


def key_texts(texts: Sequence[str], n: int, sample: str = "first", seed: int = 0, key: str = "") -> tuple[str, ...]:
    """The ``n`` key texts of a prompt from its training inputs ``texts`` (all when fewer): the first
    ``n`` (``sample="first"``), or ``n`` drawn at random (``"random"``), the draw depending only on
    ``seed``, ``key`` and ``len(texts)`` and kept in row order. ``key`` the prompt's source dataset:
    its prompts keep the same rows, as the lab's code keeps one permutation per dataset. Refuses
    (``SettingError``) another ``sample``."""
    if sample not in SAMPLES:
        raise SettingError(f"library sample {sample!r}: choose one of {list(SAMPLES)}")
    if sample == "first" or len(texts) <= n:
        return tuple(texts[:n])
    rng = random.Random(derive_seed("rospr-library", seed, key))
    return tuple(texts[i] for i in sorted(rng.sample(range(len(texts)), n)))


RETRIEVER_KEYS = ("config_hash", "dim", "weights")
# of a weights file's identity only (its base's tokenizer, ``retriever_identity``): in the key and checked
# where the identity gives it, so the keys of libraries built without a weights file are unchanged
RETRIEVER_OPTIONAL_KEYS = ("tokenizer",)


def _retriever_key(retriever: Mapping[str, Any]) -> dict:
    """The retriever's part of the build key: ``RETRIEVER_KEYS``, and the ``RETRIEVER_OPTIONAL_KEYS`` it has."""
    return {**{k: retriever.get(k) for k in RETRIEVER_KEYS},
            **{k: retriever[k] for k in RETRIEVER_OPTIONAL_KEYS if retriever.get(k) is not None}}


def _pooling(pooling: str) -> dict:
    """``pooling`` as a key part: nothing for ``masked`` (the keys of libraries built before it was a
    setting stay valid), else ``{"pooling": ...}``. Refuses (``SettingError``) an unknown pooling."""
    if pooling not in POOLINGS:
        raise SettingError(f"pooling {pooling!r}: choose one of {list(POOLINGS)}")
    return {} if pooling == "masked" else {"pooling": pooling}


def build_key(entries: Sequence[LibraryEntry], bank_hash: str, retriever: Mapping[str, Any],
              index: IndexSettings, normalize: bool, max_tokens: int, pooling: str = "masked") -> str:
    """The library's one key: what went into it (each prompt's texts, or their ``texts_key``; the
    bank, the retriever, the settings)."""
    return digest_json({
        "entries": [[e.prompt_id, e.source, e.texts_key or digest_json(list(e.texts))] for e in entries],
        "bank": bank_hash, "retriever": _retriever_key(retriever),
        "index": asdict(index), "normalize": normalize, "max_tokens": max_tokens, **_pooling(pooling),
    })


def _gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def make_index(keys: np.ndarray, settings: IndexSettings):
    """A CPU FAISS inner-product index over ``keys`` (float32 [K, D]), trained where needed."""
    import faiss

    k, d = keys.shape
    if settings.type == "flat":
        index = faiss.IndexFlatIP(d)
    elif settings.type == "ivf":
        nlist = settings.nlist or max(1, int(math.sqrt(k)))
        nlist = min(nlist, k)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(keys)
        index.nprobe = settings.nprobe or max(1, nlist // 4)
    else:
        index = faiss.IndexHNSWFlat(d, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = settings.hnsw_ef_search
    index.add(keys)
    return index


def _to_search_device(index, settings: IndexSettings):
    """Clone to the GPU when asked, possible and supported (flat, ivf); else the CPU index."""
    if settings.gpu == "off" or settings.type == "hnsw" or not _gpu_available():
        return index
    import faiss

    res = faiss.StandardGpuResources()
    log.info("library index on the GPU")
    gpu_index = faiss.index_cpu_to_gpu(res, 0, index)
    gpu_index._rospr_resources = res  # keep the resources alive with the index
    return gpu_index


def device_class(embedder: Embedder) -> str | None:
    """The device class an embedder computes on ("cpu", "cuda"), as the library's manifest records it:
    a ``device`` attribute's type (torch), else an onnxruntime session's first provider; None when it
    cannot be told (a served retriever)."""
    device = getattr(embedder, "device", None)
    if device is not None:
        return str(getattr(device, "type", device)).split(":")[0]
    session = getattr(embedder, "session", None)  # onnxruntime's: opened by the embedding before
    providers = session.get_providers() if session is not None and hasattr(session, "get_providers") else []
    if providers:
        name = providers[0].removesuffix("ExecutionProvider").lower()
        return "cuda" if name in ("cuda", "tensorrt") else name
    return None


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class Library:
    """A loaded (or just built) Source Prompt Library: keys, values, the index and the manifest."""

    def __init__(self, root: Path, manifest: dict, keys: np.ndarray, values: np.ndarray, index) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.keys = keys
        self.values = values
        self.index = index
        self.prompt_ids: list[str] = list(manifest["prompt_ids"])
        self.sources: list[str] = list(manifest["sources"])
        self.normalize = bool(manifest["normalize"])
        self.max_tokens = int(manifest["max_tokens"])
        self.pooling: str = manifest.get("pooling", "masked")

    @property
    def build_key(self) -> str:
        return self.manifest["build_key"]

    @property
    def content_hash(self) -> str:
        return self.manifest["manifest_hash"]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def embed(self, embedder: Embedder, tokenizer, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Query embeddings made the way the keys were (same truncation, pooling and normalisation;
        the padded pooling's queries: EOS appended, the mean over their tokens, as the lab's code)."""
        q = embed_texts(embedder, tokenizer, texts, batch_size=batch_size, max_tokens=self.max_tokens,
                        eos=self.pooling == "padded")
        if q.shape[1] != self.keys.shape[1]:
            raise SettingError(f"{self.root}: the retriever gives vectors of size {q.shape[1]}, the library's keys "
                               f"are {self.keys.shape[1]}; use the retriever the library was built with")
        return _normalise(q) if self.normalize else q

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` keys per query, skipping keys whose prompt (index into ``prompt_ids``) is in
        ``exclude``. Returns (prompt indices int64 [Q, k], similarities float32 [Q, k]); -1 / -inf
        pad rows with fewer than ``k`` eligible keys."""
        excluded = set(int(e) for e in exclude)
        n_excluded = int(np.isin(self.values, list(excluded)).sum()) if excluded else 0
        fetch = min(len(self), k + n_excluded)  # over-fetch so k eligible hits remain
        sims, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        out_sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for qi in range(len(queries)):
            col = 0
            for sim, row in zip(sims[qi], rows[qi]):
                if row < 0:
                    continue
                pid = int(self.values[row])
                if pid in excluded:
                    continue
                out_ids[qi, col], out_sims[qi, col] = pid, sim
                col += 1
                if col == k:
                    break
        return out_ids, out_sims


def build_library(
    root: str | Path,
    entries: Sequence[LibraryEntry],
    embedder: Embedder,
    tokenizer,
    retriever: Mapping[str, Any],
    bank_hash: str,
    index: IndexSettings = IndexSettings(),
    normalize: bool = True,
    max_tokens: int = 512,
    batch_size: int = 32,
    pooling: str = "masked",
) -> Library:
    """Embed every entry's texts, build the index and write the library to ``root``.

    ``retriever`` is the embedder's identity (``retriever_identity``); ``bank_hash`` the content hash
    of the prompts the values point to; ``pooling`` one of ``rospr.retriever.POOLINGS`` (``padded``
    needs a ``TorchEmbedder``). Refuses an empty library, duplicate prompt ids and an unknown pooling.
    """
    root = Path(root)
    ids = [e.prompt_id for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError("a prompt appears twice among the library entries")
    if not any(e.texts for e in entries):
        raise SettingError("the library would be empty: no entry has instances")
    texts = [t for e in entries for t in e.texts]
    values = np.array([i for i, e in enumerate(entries) for _ in e.texts], dtype=np.int64)
    _pooling(pooling)
    keys = (embed_padded(embedder, tokenizer, texts, batch_size=batch_size) if pooling == "padded"  # type: ignore[arg-type]
            else embed_texts(embedder, tokenizer, texts, batch_size=batch_size, max_tokens=max_tokens))
    if normalize:
        keys = _normalise(keys)
    if not np.isfinite(keys).all():
        raise ValueError("the retriever produced non-finite embeddings")
    cpu_index = make_index(keys, index)
    import faiss
    from safetensors.numpy import save

    lines = [json.dumps({"value": int(v), "prompt_id": ids[v], "text": t}, ensure_ascii=False)
             for v, t in zip(values, texts)]
    manifest = _publish(root, {
        "keys.safetensors": save({"keys": keys, "values": values}),
        "index.faiss": faiss.serialize_index(cpu_index).tobytes(),
        "instances.jsonl": ("\n".join(lines) + "\n").encode("utf-8"),
    }, {
        "prompt_ids": ids, "sources": [e.source for e in entries],
        "n_per_prompt": [len(e.texts) for e in entries], "n_keys": int(len(values)), "dim": int(keys.shape[1]),
        "retriever": dict(retriever), "bank_hash": bank_hash, "index": asdict(index), "normalize": normalize,
        "max_tokens": max_tokens, "pooling": pooling,
        # where the keys were embedded (their low bits differ across devices): recorded, never keyed, as a
        # bank's device (a library built on a GPU is meant to be searched on CPUs; docs/method.md)
        "device": device_class(embedder),
        "build_key": build_key(entries, bank_hash, retriever, index, normalize, max_tokens, pooling),
    })
    log.info("library %s: %d keys of %d prompts, %s index", root, len(values), len(entries), index.type)
    return Library(root, manifest, keys, values, _to_search_device(cpu_index, index))


def library_store(root: Path) -> ContentStore:
    """The store a library folder is an entry of: rooted at its parent, the folder's name the entry's."""
    return ContentStore(Path(os.path.abspath(root)).parent, LIBRARY_FORMAT, LIBRARY_VERSION, fix="delete it to rebuild")


def _publish(root: Path, files: Mapping[str, bytes], fields: dict) -> dict:
    """Stage ``files`` beside ``root`` and publish them with the sealed manifest ``fields`` as the
    folder ``root`` (replacing an earlier library there); returns the manifest. Refuses
    (``ArtifactError``) a folder ``root`` that holds anything but a library: it is not ours."""
    store = library_store(root)
    name = Path(os.path.abspath(root)).name  # abspath, not resolve: a link is refused, not followed
    dest = store.path(name)  # refuses a link
    if dest.exists() and any(dest.iterdir()) and not _is_library(dest):
        raise ArtifactError(f"{dest}: a folder that is not a rospr library (no {store.manifest_name} of format "
                            f"{LIBRARY_FORMAT!r}); it is not replaced: give rospr.library / --out a new or empty folder")
    stage = store.stage(name)
    try:
        for file, data in files.items():
            stage.write_bytes(file, data)
    except BaseException:
        store.drop(stage)
        raise
    store.publish(stage, fields)  # an earlier library (or an empty folder) there is replaced whole
    return store.read_manifest(dest)


def _is_library(folder: Path) -> bool:
    """Whether ``folder`` carries a library's manifest (any version: a stale or edited one is still ours)."""
    try:
        head = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == LIBRARY_FORMAT


def check_retriever(recorded: Mapping[str, Any], expected: Mapping[str, Any], where: str | Path) -> None:
    """Refuse (``ArtifactError``, naming both values) a library built with another retriever than
    ``expected`` (``retriever_identity``): config, output size, weights (which ``expected`` must give), and
    a weights file's base tokenizer where both record one (a library that records none is rebuilt: its
    build key differs)."""
    optional = [k for k in RETRIEVER_OPTIONAL_KEYS if recorded.get(k) is not None and expected.get(k) is not None]
    for key in (*RETRIEVER_KEYS, *optional):
        if recorded.get(key) != expected.get(key) or (key == "weights" and not expected.get(key)):
            raise ArtifactError(f"{where}: built with retriever {recorded.get('name')!r} ({key}={recorded.get(key)!r}), "
                                f"not {expected.get('name')!r} ({key}={expected.get(key)!r}); point rospr.retriever at "
                                "the checkpoint it was built with, or build a library for this retriever (another "
                                "rospr.library folder, or delete this one)")


def _read_library_manifest(path: Path) -> dict:
    """``read_manifest`` of a library, refusing a version-1 one (no retriever weights) in one line."""
    try:
        return read_manifest(path, LIBRARY_FORMAT, LIBRARY_VERSION)
    except ArtifactError as exc:
        try:
            read_manifest(path, LIBRARY_FORMAT, 1)
        except ArtifactError:
            raise exc from None
    raise ArtifactError(f"{path}: a library built before rospr recorded the retriever's weights (version 1), so "
                        "nothing shows which encoder made its keys; delete it to rebuild (`rospr library build`, or "
                        "the next run builds it)")


def load_library(root: str | Path, retriever: Mapping[str, Any] | None = None,
                 gpu: Literal["auto", "off"] | None = None) -> Library:
    """Load and check a library. Refuses (``ArtifactError``) a missing or edited file, an index that
    does not match its keys, and a retriever other than ``retriever`` (identity) when given."""
    import faiss
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(root)
    mpath = root / "manifest.json"
    manifest = _read_library_manifest(mpath)
    for name, digest in manifest["files"].items():
        check_file(root / name, digest, "library")
    if retriever is not None:
        check_retriever(manifest["retriever"], retriever, mpath)
    try:
        arrays = load_file(str(root / "keys.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{root / 'keys.safetensors'}: unreadable ({exc}); rebuild the library") from None
    keys, values = arrays.get("keys"), arrays.get("values")
    n, dim = int(manifest["n_keys"]), int(manifest["dim"])
    if keys is None or values is None or keys.dtype != np.float32 or keys.shape != (n, dim) \
            or values.dtype != np.int64 or values.shape != (n,):
        raise ArtifactError(f"{root / 'keys.safetensors'}: expected keys float32 [{n}, {dim}] and values int64 [{n}]")
    if not np.isfinite(keys).all() or values.min() < 0 or values.max() >= len(manifest["prompt_ids"]):
        raise ArtifactError(f"{root / 'keys.safetensors'}: non-finite keys or values outside the prompt ids")
    index = faiss.deserialize_index(np.frombuffer((root / "index.faiss").read_bytes(), dtype=np.uint8))
    if index.ntotal != n or index.d != dim:
        raise ArtifactError(f"{root / 'index.faiss'}: {index.ntotal} vectors of size {index.d}, the keys are [{n}, {dim}]")
    settings = IndexSettings(**{**manifest["index"], **({"gpu": gpu} if gpu is not None else {})})
    if settings.type == "ivf" and settings.nprobe:
        faiss.extract_index_ivf(index).nprobe = settings.nprobe
    if settings.type == "hnsw":
        index.hnsw.efSearch = settings.hnsw_ef_search
    return Library(root, manifest, keys, values, _to_search_device(index, settings))
