"""The onnxruntime backend: the exported ``t0_scorer`` / ``retriever`` graphs in process.

The default backend of ``rospr run``. Graphs come from a content-addressed export cache
(``<cache>/<key>/``, key = model config + weights (+ retriever) + dtypes + export version; see
``rospr_export.identity.cache_key``): the first run exports and validates them against PyTorch, later runs
reuse them. The cache is ``onnxruntime.cache_dir``, else ``$ROSPR_ONNX_CACHE``, else ``onnx/`` under
the user cache root (``rospr.cachedirs.cache_path``); it is a ``rospr.store.ContentStore`` whose
entries carry the export's own sealed manifest.

Integrity: no graph reaches a session unchecked. ``ensure_export`` verifies a cached export (its
sealed manifest, validation figures and the sha256 of its files: ``rospr_export.manifest.verify_export``;
a file is re-read when its stat key changed) and that it was made from the weights and config of the
run's checkpoints (the manifest's digests against ``export_sources``, so an export of another model
of the same architecture placed in the cache is never scored), and re-exports one that fails: the
cache belongs to the run. A graph without external
data is then hashed in full on every open, and so is the optimised copy the session is built from,
read by onnxruntime through a descriptor on the file hashed (``/proc/self/fd/N``; elsewhere from
bytes read into memory and hashed), so what is scored is what was checked, every time; a graph with external data (over 2 GB) is opened
from its files just after the stat-keyed check (``rospr verify`` reads it all). A graph that fails
the full check makes the whole export be checked in full and redone once; then the run stops,
naming the file. The graph's content hash is in the backend's identity (``onnx_graph_sha256``), so
the unit cache keys units by the graph that computed them.

Session options, and why:

- ``graph_optimization_level`` ALL by default: constant folding, node fusions (attention, GELU,
  layer norm variants) and layout changes; the optimised graph is checked against PyTorch by the
  same tolerance as the export (the export validation runs with these options). onnxruntime does
  this work once: the first session of a graph without external data saves its optimised graph
  (``optimized_model_filepath``) as an entry of its own store (``optimized_store``: ``ort-optimized/``
  in the export cache's root, keyed by the export's graph and the session options, staged, sealed and
  published by ``rospr.store``), and later sessions open that copy, hashed in full, with optimisation
  off (the same kernels: the same scores). A graph with external data (over 2 GB) is optimised at each open: saving it would
  write a second copy of its weights (onnxruntime's external-initializer options) to save seconds.
- ``intra_op_num_threads``: one per core unless set (``onnxruntime.threads`` / ``scoring.threads``).
  Several scoring actors on one machine should each get cores / actors.
- ``inter_op_num_threads = 1`` and sequential execution: the scorer graph is one chain (encoder, then
  decoder); parallel branches are a few tiny shape ops, not worth a second pool contending for cores.
- CUDA: inputs and the output are bound to the device with I/O binding, so a batch crosses PCIe once
  each way and onnxruntime does not allocate per run.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from rospr_harness.backends.base import Backend
from rospr_harness.config import ModelConfig, OnnxRuntimeConfig, ScoringConfig
from rospr.cachedirs import cache_path
from rospr.canonical import digest_bytes
from rospr.errors import RosprError, SettingError
from rospr.scoring import ScoreBatch

log = logging.getLogger(__name__)

OPT_LEVELS = ("disabled", "basic", "extended", "all")


def ensure_export(model: str | Path | None, retriever: str | Path | None = None, dtype: str = "float32",
                  cache_dir: str | Path | None = None, prompt_dtype: str | None = None, full: bool = False,
                  revision: str | None = None, retriever_revision: str | None = None) -> Path:
    """The folder of a validated export of ``model`` (and ``retriever``; hub checkpoints at ``revision``
    and ``retriever_revision``) whose files match their
    recorded sha256, exporting it if absent and again if the check fails (``full``: read every byte).

    Concurrent callers (several actors) may export at once: each fills its own stage of the export
    store (``rospr.store.ContentStore``: beside the entry, renamed into place); the first good
    export published wins and the others discard theirs.
    """
    from rospr_export.export import export_models
    from rospr_export.identity import cache_key, export_sources
    from rospr_export.manifest import ExportIntegrityError, check_sources, find_manifest, verify_export

    sources = export_sources(model, retriever, revision, retriever_revision)
    key = cache_key(model, retriever, dtype, prompt_dtype, revision, retriever_revision, sources=sources)
    store = export_store(cache_dir)
    target = store.path(key)

    def check(folder: Path) -> dict:
        return verify_export(folder, full=full, sources=sources)

    def good(folder: Path) -> bool:  # a concurrent caller's export, published first
        try:
            return bool(check(folder))
        except (ExportIntegrityError, OSError):
            return False

    if store.open(key, verify=check) is not None:  # a failed export is logged and discarded
        log.debug("onnx cache hit: %s", target)
        return target
    stage = store.stage(key)
    log.info("exporting %s to ONNX (once; cached in %s)", model, target)
    try:
        export_models(model, stage.path, retriever=retriever, dtype=dtype, prompt_dtype=prompt_dtype,
                      scorer=model is not None, revision=revision, retriever_revision=retriever_revision)
    except BaseException:
        store.drop(stage)
        raise
    store.publish(stage, keep=good)  # no manifest to seal: export_models wrote and sealed its own
    # a checkpoint that changed while it was exported is refused here (its files were just hashed)
    manifest = find_manifest(target)
    if manifest is None:
        raise ExportIntegrityError(f"{target / 'manifest.json'}: gone just after the export (removed by another "
                                   "process?); run again")
    check_sources(manifest, sources, target / "manifest.json")
    return target


def export_store(cache_dir: str | Path | None = None):
    """The export cache as a ``rospr.store.ContentStore`` (``cache_path("onnx", cache_dir)``); an
    entry's manifest is the export's own (``rospr_export.export``: written by ``export_models``)."""
    from rospr_export.manifest import MANIFEST_FORMAT, MANIFEST_VERSION
    from rospr.store import ContentStore

    return ContentStore(cache_path("onnx", cache_dir), MANIFEST_FORMAT, MANIFEST_VERSION, fix="exporting again")


def export_folder(model: str | Path | None, retriever: str | Path | None = None, dtype: str = "float32",
                  cache_dir: str | Path | None = None, prompt_dtype: str | None = None, revision: str | None = None,
                  retriever_revision: str | None = None) -> Path:
    """Where the export of ``model`` (and ``retriever``) lives in the cache, whether or not it is
    there yet: ``<cache>/<cache_key>``. Reads the checkpoints' configs and weight digests only."""
    from rospr_export.identity import cache_key

    key = cache_key(model, retriever, dtype, prompt_dtype, revision, retriever_revision)
    return cache_path("onnx", cache_dir) / key


def open_graph(folder: Path, manifest: dict, graph: str, **session_options):
    """An ``InferenceSession`` of ``graph`` of a verified export. A graph without external data is
    hashed in full on every open, the export itself must be whole; refuses (``ExportIntegrityError``)
    bytes that differ from the manifest. The session comes from its optimised copy
    (``_optimized_session``: opened through a descriptor, hashed in full while onnxruntime reads it),
    or else from the graph's verified bytes, optimised and saved. The two hashes run in threads while
    onnxruntime opens the copy (all three release the GIL): on the small model the open takes 0.6 s,
    where reading the copy into memory, hashing it and then building the session from those bytes took 1.0 s."""
    from concurrent.futures import ThreadPoolExecutor

    from rospr_export.manifest import graph_files

    path = folder / manifest["graphs"][graph]["file"]
    files = graph_files(path)
    if len(files) > 1:  # external data: onnxruntime reads it from the folder (checked by verify_export)
        return make_session(path, **session_options)
    expected = manifest["files"][path.name]
    with ThreadPoolExecutor(2, thread_name_prefix="rospr-graph-sha256") as pool:
        checked = pool.submit(_check_graph, folder, path, expected)
        try:
            opened = _optimized_session(path, expected, pool, **session_options)
        finally:
            checked.result()  # raises for a graph that differs, whatever was opened
    if opened is not None:
        return opened
    data = path.read_bytes()  # the first open (or a copy refused): optimised from bytes checked here
    _check_graph(folder, path, expected, data)
    return _save_optimized(path, data, expected, **session_options)


def _check_graph(folder: Path, path: Path, expected: str, data: bytes | None = None) -> None:
    from rospr.artifacts import sha256_file
    from rospr_export.manifest import ExportIntegrityError

    got = digest_bytes(data) if data is not None else sha256_file(path)
    if got != expected:
        raise ExportIntegrityError(f"{path}: sha256 {got[:12]}… differs from {folder / 'manifest.json'} "
                                   f"files.{path.name} {expected[:12]}… (changed after the export); delete "
                                   "the folder to export again")


OPTIMIZED_FORMAT = "rospr-ort-optimized"
OPTIMIZED_VERSION = 2  # 2: an entry of its own store (1 was a file and a record inside the export)
OPTIMIZED_DIR = "ort-optimized"  # the store's folder, beside the export entries of the cache
OPTIMIZED_FILE = "model.onnx"


def optimized_store(export_folder: Path):
    """The store of onnxruntime's optimised graphs (``rospr.store.ContentStore``): the folder
    ``ort-optimized`` beside the export entry ``export_folder`` (in the export cache's root)."""
    from rospr.store import ContentStore

    return ContentStore(Path(export_folder).parent / OPTIMIZED_DIR, OPTIMIZED_FORMAT, OPTIMIZED_VERSION,
                        fix="optimising the graph again")


def optimized_fields(graph: str, graph_sha256: str, graph_optimization: str, providers: Sequence[str]) -> dict:
    """What an optimised graph depends on: the export's graph (name and sha256), onnxruntime's version,
    the level, the providers and the processor (the ALL level chooses layouts for the machine it runs
    on). Its ``digest_json`` is the entry's name; the entry's sealed manifest records it."""
    import platform

    flags = ""
    try:  # the instruction sets (Linux); elsewhere the machine's name alone
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return {"graph": graph, "graph_sha256": graph_sha256, "onnxruntime": _ort_version(),
            "graph_optimization": graph_optimization, "providers": list(providers),
            "machine": platform.machine(), "cpu_flags": digest_bytes(flags.encode("utf-8"))}


def optimized_name(fields: dict) -> str:
    """The store entry of an optimised graph: the digest of its ``optimized_fields``."""
    from rospr.canonical import digest_json

    return digest_json(fields)


def _optimized_session(path: Path, graph_sha256: str, pool, graph_optimization: str = "all", device: str = "cpu",
                       providers: Sequence[str] | None = None, **session_options):
    """The session of ``path``'s optimised graph saved earlier in ``optimized_store`` (opened with
    optimisation off), when its entry's sealed manifest records these ``optimized_fields`` and the
    file's bytes, hashed in full, are the recorded ones; None otherwise (the entry is discarded and
    ``_save_optimized`` makes it again; a record of other fields, so of another graph, is refused
    before its file is opened). The store checks the seal; the file is hashed here, on
    ``pool``, while onnxruntime reads it through ``/proc/self/fd/N`` of a descriptor opened here, so
    what is hashed is the very file (inode) opened; a file written to during the open (its size,
    mtime or ctime moved) is refused. Without ``/proc`` the file is read into memory, hashed, and the
    session built from those bytes."""
    from rospr.artifacts import sha256_file

    if graph_optimization == "disabled":
        return None
    providers = list(providers or default_providers(device))
    store, fields = optimized_store(path.parent), optimized_fields(path.name, graph_sha256, graph_optimization, providers)
    name = optimized_name(fields)
    record = store.open(name, verify=store.read_manifest)  # the seal; the file is hashed below
    if record is None:
        return None
    opt = store.path(name) / OPTIMIZED_FILE
    if {k: record.get(k) for k in fields} != fields:  # another graph's (or options') copy: never opened
        log.warning("%s: its record %s is not of this graph and these options; optimising the graph again",
                    opt, opt.with_name(store.manifest_name))
        store.discard(name)
        return None
    try:
        fd = os.open(opt, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        log.warning("%s: %s; optimising the graph again", opt, exc)
        store.discard(name)
        return None

    def intact(got: str, before: os.stat_result, after: os.stat_result) -> bool:
        same = [(st.st_size, st.st_mtime_ns, st.st_ctime_ns) for st in (before, after)]
        if got == (record.get("files") or {}).get(OPTIMIZED_FILE) and same[0] == same[1]:
            return True
        log.warning("%s: differs from its record %s (changed after it was saved); optimising the graph again",
                    opt, opt.with_name(store.manifest_name))
        store.discard(name)
        return False

    options = dict(graph_optimization="disabled", providers=providers, device=device, **session_options)
    by_fd = Path(f"/proc/self/fd/{fd}")
    try:
        before = os.fstat(fd)
        if not by_fd.exists():  # no /proc: the session is built from the bytes read and hashed here
            data = b"".join(iter(lambda: os.read(fd, 4 << 20), b""))
            return make_session(data, **options) if intact(digest_bytes(data), before, before) else None
        digest = pool.submit(sha256_file, fd)
        try:
            session, failed = make_session(by_fd, **options), None
        except Exception as exc:  # onnxruntime's own errors: a damaged copy, or a real fault (below)
            session, failed = None, exc
        got, after = digest.result(), os.fstat(fd)
    finally:
        os.close(fd)
    if not intact(got, before, after):
        return None
    if failed is not None:
        raise failed  # the recorded bytes, and onnxruntime cannot open them: not a damaged file
    return session


def _save_optimized(path: Path, data: bytes, graph_sha256: str, graph_optimization: str = "all", device: str = "cpu",
                    providers: Sequence[str] | None = None, **session_options):
    """The session of the verified graph ``data``, optimised by onnxruntime, which also writes the
    optimised graph into a stage of ``optimized_store``; the entry is then sealed and published for
    the next open (a concurrent writer's intact entry is kept). A store that cannot be written only
    costs the next run the optimisation again."""
    providers = list(providers or default_providers(device))
    options = dict(graph_optimization=graph_optimization, providers=providers, device=device, **session_options)
    if graph_optimization == "disabled":
        return make_session(data, **options)
    store, fields = optimized_store(path.parent), optimized_fields(path.name, graph_sha256, graph_optimization, providers)
    name = optimized_name(fields)
    try:
        stage = store.stage(name)
    except (OSError, RosprError) as exc:  # a read-only cache, a file in the store's place
        log.warning("%s: the optimised graph cannot be saved (%s); optimising at each open", store.root, exc)
        return make_session(data, **options)
    written = stage.path / f".{OPTIMIZED_FILE}"
    try:
        session = make_session(data, save_to=written, **options)
    except Exception as exc:  # onnxruntime's Fail (not a RuntimeError); if it was the save, the session opens without it
        store.drop(stage)
        log.warning("%s: onnxruntime could not save the optimised graph (%s); optimising at each open",
                    store.path(name), exc)
        return make_session(data, **options)
    try:
        stage.adopt(OPTIMIZED_FILE, written)
        store.publish(stage, fields, keep=lambda entry: _intact_entry(store, entry))
        log.info("onnxruntime's optimised %s saved in %s", path.name, store.path(name))
    except (OSError, RosprError) as exc:
        store.drop(stage)
        log.warning("%s: the optimised graph could not be saved (%s); it is optimised again next time",
                    store.path(name), exc)
    return session


def _intact_entry(store, entry: Path) -> bool:
    """Whether the entry (a concurrent writer's, published first) passes the store's full check."""
    try:
        return bool(store.verify_sealed(entry))
    except (RosprError, ValueError, OSError):
        return False


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def _verified_session(model, retriever, dtype: str, cache_dir, graph: str, revision: str | None = None,
                      retriever_revision: str | None = None, **session_options):
    """(folder, manifest, session) of an on-demand export: checked, re-exported once when a graph fails
    its full check (the cache is the run's own), refused the second time."""
    from rospr_export.manifest import ExportIntegrityError, find_manifest

    for attempt in range(2):
        folder = ensure_export(model, retriever, dtype, cache_dir, full=attempt > 0, revision=revision,
                               retriever_revision=retriever_revision)
        manifest = find_manifest(folder)
        try:
            return folder, manifest, open_graph(folder, manifest, graph, **session_options)
        except ExportIntegrityError as exc:
            if attempt:
                raise
            log.warning("onnx cache: %s; checking the whole export in full", exc)
    raise AssertionError("unreachable")


def cuda_devices() -> tuple[int | None, str]:
    """Whether onnxruntime can score on CUDA here (0: no CUDA provider; None: it has one, and cannot tell how
    many devices), and its providers (for ``check_device``)."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return (None if "CUDAExecutionProvider" in available else 0), f"onnxruntime {ort.__version__}: {', '.join(available)}"


def default_providers(device: str = "cpu") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(path: str | Path | bytes, threads: int | None = None, graph_optimization: str = "all",
                 providers: Sequence[str] | None = None, device: str = "cpu", save_to: Path | None = None):
    """An ``InferenceSession`` of a graph file (or its bytes) with the options above (``save_to``:
    onnxruntime writes the optimised graph there). Refuses a
    provider that is not installed, and ``threads`` outside 0 .. ``rospr_harness.config.MAX_THREADS``
    (onnxruntime starts every thread with the session: 100000 of them hang the machine)."""
    from rospr_harness.config import MAX_THREADS

    if threads is not None and not (isinstance(threads, int) and 0 <= threads <= MAX_THREADS):
        raise SettingError(f"onnxruntime.threads={threads!r}: give 1 to {MAX_THREADS} intra-op threads (this machine "
                           f"has {os.cpu_count()} cores; 0 or unset: one per core)")
    import onnxruntime as ort

    if graph_optimization not in OPT_LEVELS:
        raise SettingError(f"onnxruntime.graph_optimization={graph_optimization!r}: choose one of {list(OPT_LEVELS)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[graph_optimization]
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    providers = list(providers or default_providers(device))
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise SettingError(f"onnxruntime.providers: {missing} not available here (have {ort.get_available_providers()}); "
                           "install onnxruntime-gpu for CUDAExecutionProvider")
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


class _LazySession:
    """An ``InferenceSession`` given, or opened by ``opener`` on first use (thread-safe). A Ray driver
    whose actors do the scoring never uses its own, so it never holds the model's memory (issue 12:
    memory scales with the sessions actually used)."""

    def __init__(self, session=None, opener: Callable[[], Any] | None = None) -> None:
        if (session is None) == (opener is None):
            raise ValueError("give a session or an opener")
        self._session, self._opener, self._lock = session, opener, threading.Lock()

    @property
    def opened(self) -> bool:
        return self._session is not None

    def get(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._opener()
        return self._session


class OnnxScorer:
    """``Scorer`` on an onnxruntime session of the ``t0_scorer`` graph: a session, or (``opener``) a
    function that opens it on the first use of the scorer."""

    def __init__(self, session=None, io_binding: bool = True, *, opener: Callable[[], Any] | None = None) -> None:
        self._lazy = _LazySession(session, opener)
        self._io_binding = io_binding

    @property
    def session(self):
        return self._lazy.get()

    @functools.cached_property
    def prompt_dim(self) -> int:
        return int({i.name: i for i in self.session.get_inputs()}["prompt_embeds"].shape[2])

    @functools.cached_property
    def prompt_type(self):
        return _NP_TYPES[{i.name: i for i in self.session.get_inputs()}["prompt_embeds"].type]

    @functools.cached_property
    def on_cuda(self) -> bool:
        return self.session.get_providers()[0] == "CUDAExecutionProvider"

    @property
    def io_binding(self) -> bool:
        return self._io_binding and self.on_cuda

    def score(self, batch: ScoreBatch) -> np.ndarray:
        feeds = batch.feeds(self.prompt_type)
        if not self.io_binding:
            return self.session.run(["scores"], feeds)[0]
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)  # copied to the device once, by onnxruntime
        binding.bind_output("scores", "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class OnnxEmbedder:
    """``Embedder`` on an onnxruntime session of the ``retriever`` graph (a session, or ``opener``:
    opened on first use)."""

    def __init__(self, session=None, *, opener: Callable[[], Any] | None = None) -> None:
        self._lazy = _LazySession(session, opener)

    @property
    def session(self):
        return self._lazy.get()

    @functools.cached_property
    def dim(self) -> int:
        return int(self.session.get_outputs()[0].shape[1])

    def embed(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
        return self.session.run(["sentence_embedding"], feeds)[0].astype(np.float32, copy=False)


def create_onnxruntime_backend(model: ModelConfig, ort_cfg: OnnxRuntimeConfig, scoring: ScoringConfig) -> Backend:
    """The onnxruntime ``Backend`` of ``model`` (exported on first use into ``onnxruntime.cache_dir``),
    with ``onnxruntime.threads`` (else ``scoring.threads``) intra-op threads."""
    from rospr_export.manifest import find_manifest
    from rospr.tokenizer import load_tokenizer

    # exported and verified now (stat-keyed); the session is opened, from files hashed in full, by
    # the scorer's first use (``_verified_session``: re-exported once if that check fails)
    folder = ensure_export(model.name_or_path, None, model.dtype, ort_cfg.cache_dir, revision=model.revision)
    manifest = find_manifest(folder)
    session_options = dict(threads=ort_cfg.threads or scoring.threads, graph_optimization=ort_cfg.graph_optimization,
                           providers=ort_cfg.providers, device=model.device)
    scorer = OnnxScorer(io_binding=ort_cfg.io_binding, opener=lambda: _verified_session(
        model.name_or_path, None, model.dtype, ort_cfg.cache_dir, "t0_scorer", revision=model.revision,
        **session_options)[2])
    tokenizer = load_tokenizer(model.name_or_path, model.revision)  # tokenizer.json: no transformers, no torch
    return Backend("onnxruntime", scorer, tokenizer, onnx_identity(model, ort_cfg, folder, manifest))


def onnx_identity(model: ModelConfig, ort_cfg: OnnxRuntimeConfig, folder: Path, manifest: dict) -> dict:
    """The onnxruntime backend's identity of the scorer exported in ``folder`` (its ``manifest``):
    the model's, with the export's cache key, dtype, provider and the graph's content hash."""
    from rospr_export.manifest import graph_digest

    # The export cache is content-addressed: the same weights exported from another path share the
    # entry, so the name shown is this config's, not the one the entry was first exported under.
    name = model.name_or_path
    return dict(manifest["model"], name=Path(name).name if Path(name).exists() else name,
                onnx_cache_key=folder.name, onnx_dtype=manifest["dtype"],
                onnx_provider=list(ort_cfg.providers or default_providers(model.device))[0],
                onnx_graph_sha256=graph_digest(manifest, "t0_scorer"))


def create_onnxruntime_embedder(retriever: str | Path, model: ModelConfig, ort_cfg: OnnxRuntimeConfig,
                                scoring: ScoringConfig, revision: str | None = None) -> OnnxEmbedder:
    """The retriever graph of ``retriever`` (at hub ``revision``; exported on first use into the same
    cache), on ``model.device``."""
    # exported and verified now, opened on first use
    ensure_export(None, retriever, "float32", ort_cfg.cache_dir, retriever_revision=revision)
    return OnnxEmbedder(opener=lambda: _verified_session(
        None, retriever, "float32", ort_cfg.cache_dir, "retriever", retriever_revision=revision,
        threads=ort_cfg.threads or scoring.threads,
        graph_optimization=ort_cfg.graph_optimization, providers=ort_cfg.providers, device=model.device)[2])
