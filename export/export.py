"""Export the ``t0_scorer`` and ``retriever`` graphs through Optimum, and check them against PyTorch.

Every export is validated on inputs of several shapes (batch 1 and more, one-token and longer
sequences and choices, prompt length 0 and more, rows with and without a soft prompt in one batch):
the maximum absolute difference to PyTorch is recorded in ``manifest.json`` and an export above the
tolerance raises ``ExportValidationError`` (the files are kept for inspection, the manifest is not
written, so a cache never serves a graph that failed).

Integrity. ``manifest.json`` lists the sha256 of every file of the export (``files``: each graph
and its external data). ``verify_export`` checks them before a graph is used: in full (``rospr
verify``), or through ``rospr_export.digests.FileDigests``, which re-reads a file only when its stat key
(device, inode, size, mtime, ctime) changed since it was last read in full. The export's content
hash (``graph_digest``) is part of the unit-cache key of every unit scored with it.

Half precision (GPU only). T5 v1.1 / T0 overflow float16: activations of the feed-forward output
projection exceed 65504 in the larger checkpoints. What the float16 export does about it: the model
is loaded with Hugging Face's ``_keep_in_fp32_modules`` (T5's ``wo`` projections stay float32 and
their input is cast up), the clamp that ``T5Block`` applies to float16 hidden states is traced into
the graph, and the choice log-probabilities (logits, log-sum-exp, the sum) are computed in float32 /
float64 by ``PromptedT5`` itself, so ``scores`` stay FP32. ``bfloat16`` has float32's range and does
not overflow: prefer it on GPUs that have it (Ampere and later). Half-precision graphs are validated
with a looser tolerance (``HALF_TOLERANCE``) against the float32 PyTorch model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from rospr.artifacts import ArtifactError, sha256_file
from rospr.identity import checkpoint_config_hash

log = logging.getLogger(__name__)

# Bump when the graphs or their inputs change: it is part of the cache key of on-demand exports.
# 2: packed decoder and LM head (only real choices and tokens); 3: cross-attention keys and values
# projected once per input and shared by its choices (rospr.backbone.PromptedT5._decode); 4: the decoder's
# residual stream packed to real tokens (no projection or feed-forward on a choice's padding), LogSoftmax.
EXPORT_VERSION = "4"
OPSET = 17
SCORER_TOLERANCE = 1e-4
RETRIEVER_TOLERANCE = 1e-5
HALF_TOLERANCE = 0.25  # summed log-probabilities of a few tokens, float16 weights vs float32 reference
TWO_GB = 2**31
DTYPES = ("float32", "float16", "bfloat16")

# (batch, sequence, prompt length, choices, choice length) used to check the scorer graph.
SCORER_CHECK_SHAPES = ((1, 1, 1, 1, 1), (2, 13, 0, 3, 4), (4, 7, 3, 2, 1), (3, 21, 6, 5, 9))
# (batch, sequence) used to check the retriever graph.
RETRIEVER_CHECK_SHAPES = ((1, 1), (2, 9), (5, 23))


DIGEST_MEMO = ".digests.json"  # remembered file digests (rospr_export.digests); not part of the export


class ExportValidationError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance (the message gives both)."""


class ExportIntegrityError(ArtifactError):
    """An export whose files do not match their recorded sha256 (the message names the file)."""


@dataclass
class Validation:
    """The result of checking one graph against PyTorch."""

    graph: str
    max_abs_diff: float
    tolerance: float
    shapes: list[list[int]]
    provider: str
    per_shape: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite(self.max_abs_diff)) and self.max_abs_diff <= self.tolerance


@dataclass
class ExportResult:
    """What ``export_models`` wrote: the directory, the graphs and how they were validated."""

    out_dir: Path
    manifest: dict
    validations: list[Validation]

    @property
    def scorer_path(self) -> Path | None:
        return self.out_dir / "t0_scorer.onnx" if (self.out_dir / "t0_scorer.onnx").exists() else None

    @property
    def retriever_path(self) -> Path | None:
        return self.out_dir / "retriever.onnx" if (self.out_dir / "retriever.onnx").exists() else None


def _torch_dtype(dtype: str):
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"export dtype {dtype!r}: choose one of {list(DTYPES)}")
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def _float_tag(dtype: str) -> str:
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]


@contextlib.contextmanager
def _force_external_data(enabled: bool):
    """Optimum rewrites the graph with all weights in one ``<name>_data`` file when this is set."""
    old = os.environ.get("FORCE_ONNX_EXTERNAL_DATA")
    if enabled:
        os.environ["FORCE_ONNX_EXTERNAL_DATA"] = "1"
    try:
        yield
    finally:
        if enabled:
            if old is None:
                os.environ.pop("FORCE_ONNX_EXTERNAL_DATA", None)
            else:
                os.environ["FORCE_ONNX_EXTERNAL_DATA"] = old


def _parameter_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _optimum_export(wrapper, onnx_config, path: Path, external_data: bool | None, device: str, dtype: str) -> None:
    from optimum.exporters.onnx import export

    # Protobuf cannot hold a model over 2 GB: such models are always written with external data.
    external = external_data if external_data is not None else _parameter_bytes(wrapper) >= TWO_GB
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    # Optimum's export sets config.use_cache = False on the model it is given; the caller's model
    # (a shared backbone, say) must come back as it went in.
    configs = [m.config for m in wrapper.modules() if hasattr(getattr(m, "config", None), "use_cache")]
    saved = [c.use_cache for c in configs]
    try:
        with _force_external_data(external):
            export(wrapper, onnx_config, path, opset=OPSET, device=device,
                   dtype="fp16" if dtype == "float16" else None)
    except Exception as exc:  # Optimum opens an onnxruntime session on the new graph (fix_dynamic_axes)
        if dtype == "float32" or not type(exc).__module__.startswith("onnxruntime"):
            raise
        raise ExportValidationError(
            f"{path}: the {dtype} graph cannot be built here: onnxruntime on {device} has no kernel for one of "
            f"its ops ({str(exc).strip().splitlines()[0][:200]}). Export half precision where it will be served: "
            "--device cuda with onnxruntime-gpu."
        ) from None
    finally:
        for c, v in zip(configs, saved):
            c.use_cache = v
    log.info("exported %s in %.1fs%s", path.name, time.time() - t0, " (external data)" if external else "")


def session_for_check(path: Path, providers: Sequence[str] | None = None):
    """An onnxruntime session for validation: all optimisations on, as the backend runs it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


def scorer_check_inputs(shape: tuple[int, int, int, int, int], vocab_size: int, d_model: int, seed: int = 0) -> dict:
    """Inputs in the tensor contract with realistic padding: rows of different lengths, choices of
    different counts and lengths, and (when P > 0) one row of every batch without a soft prompt."""
    b, s, p, c, t = shape
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(3, vocab_size, size=(b, s), dtype=np.int64)
    lengths = rng.integers(1, s + 1, size=b)
    lengths[0] = s
    attention_mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int64)
    input_ids[attention_mask == 0] = 0
    prompt_embeds = (rng.normal(size=(b, p, d_model)) * 0.5).astype(np.float32)
    plen = rng.integers(1, p + 1, size=b) if p > 0 else np.zeros(b, dtype=np.int64)
    if p > 0:
        plen[0] = p
        if b > 1:
            plen[-1] = 0  # a row with no soft prompt in the same batch
    prompt_mask = (np.arange(p)[None] < plen[:, None]).astype(np.int64)
    choice_ids = rng.integers(3, vocab_size, size=(b, c, t), dtype=np.int64)
    clen = rng.integers(1, t + 1, size=(b, c))
    clen[0, 0] = t
    choice_mask = (np.arange(t)[None, None] < clen[..., None]).astype(np.int64)
    if c > 1 and b > 1:
        choice_mask[1, -1] = 0  # a padded choice row, as collate makes for examples with fewer choices
    choice_ids[choice_mask == 0] = 0
    return dict(input_ids=input_ids, attention_mask=attention_mask, prompt_embeds=prompt_embeds,
                prompt_mask=prompt_mask, choice_ids=choice_ids, choice_mask=choice_mask)


def validate_scorer(model, path: Path, tolerance: float, providers: Sequence[str] | None = None,
                    shapes=SCORER_CHECK_SHAPES, float_dtype=np.float32) -> Validation:
    """Max |ONNX - PyTorch| of ``scores`` over ``shapes`` (valid choice rows only)."""
    import torch

    from rospr.backbone import PromptedT5

    ref_module = PromptedT5(model).eval()
    sess = session_for_check(path, providers)
    per_shape = []
    for i, shape in enumerate(shapes):
        feeds = scorer_check_inputs(shape, int(model.config.vocab_size), int(model.config.d_model), seed=i)
        with torch.inference_mode():
            ref = ref_module(*(torch.from_numpy(feeds[k]) for k in feeds)).float().numpy()
        onnx_feeds = dict(feeds)
        onnx_feeds["prompt_embeds"] = feeds["prompt_embeds"].astype(float_dtype)
        got = sess.run(["scores"], onnx_feeds)[0]
        valid = feeds["choice_mask"].any(-1)
        per_shape.append(float(np.max(np.abs(got[valid].astype(np.float64) - ref[valid]))))
    return Validation("t0_scorer", max(per_shape), tolerance, [list(s) for s in shapes],
                      sess.get_providers()[0], per_shape)


def validate_retriever(encoder, path: Path, tolerance: float, providers: Sequence[str] | None = None,
                       shapes=RETRIEVER_CHECK_SHAPES) -> Validation:
    """Max |ONNX - PyTorch| of ``sentence_embedding`` over ``shapes``."""
    import torch

    from rospr.retriever import MeanPoolEncoder

    ref_module = MeanPoolEncoder(encoder).eval()
    sess = session_for_check(path, providers)
    vocab = int(encoder.config.vocab_size)
    per_shape = []
    for i, (b, s) in enumerate(shapes):
        rng = np.random.default_rng(100 + i)
        ids = rng.integers(3, vocab, size=(b, s), dtype=np.int64)
        lengths = rng.integers(1, s + 1, size=b)
        lengths[0] = s
        mask = (np.arange(s)[None] < lengths[:, None]).astype(np.int64)
        ids[mask == 0] = 0
        with torch.inference_mode():
            ref = ref_module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
        got = sess.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        per_shape.append(float(np.max(np.abs(got.astype(np.float64) - ref))))
    return Validation("retriever", max(per_shape), tolerance, [list(s) for s in shapes],
                      sess.get_providers()[0], per_shape)


def _check(v: Validation, path: Path) -> Validation:
    log.info("%s: max |onnx - torch| = %.3g over %d shapes (tolerance %.1g, %s)",
             v.graph, v.max_abs_diff, len(v.shapes), v.tolerance, v.provider)
    if not v.ok:
        raise ExportValidationError(
            f"{path}: the exported {v.graph} graph differs from PyTorch by {v.max_abs_diff:.3g} "
            f"(tolerance {v.tolerance:.1g}; per shape {v.per_shape} for shapes {v.shapes}). The graph is "
            "kept for inspection and is not used; re-export with float32, or report the model."
        )
    return v


def default_prompt_dtype(dtype: str) -> str:
    """The data type of the ``prompt_embeds`` input: float16 for a float16 graph, else float32
    (numpy, hence the wire, has no bfloat16; a bfloat16 graph casts its float32 prompt inside)."""
    return "float16" if dtype == "float16" else "float32"


def export_scorer(model, out: Path, dtype: str = "float32", reference=None, external_data: bool | None = None,
                  device: str = "cpu", tolerance: float | None = None, providers: Sequence[str] | None = None,
                  prompt_dtype: str | None = None) -> Validation:
    """Export ``PromptedT5(model)`` to ``out`` (an .onnx file) and validate it.

    ``model`` is loaded in the export ``dtype``; ``reference`` is the float32 model to check against
    (``model`` itself when None). ``prompt_dtype`` (float32 or float16) is the type of the
    ``prompt_embeds`` input (the graph casts it to the model's type). Returns the ``Validation``;
    raises ``ExportValidationError``.
    """
    from rospr_export.onnx_config import ScorerForExport, ScorerOnnxConfig

    prompt_dtype = prompt_dtype or default_prompt_dtype(dtype)
    if prompt_dtype not in ("float32", "float16"):
        raise ValueError(f"prompt dtype {prompt_dtype!r}: choose float32 or float16")
    cfg = ScorerOnnxConfig(model.config, task="feature-extraction", float_dtype=_float_tag(prompt_dtype))
    _optimum_export(ScorerForExport(model), cfg, out, external_data, device, dtype)
    half = dtype != "float32" or prompt_dtype != "float32"
    tol = tolerance if tolerance is not None else (HALF_TOLERANCE if half else SCORER_TOLERANCE)
    try:
        v = validate_scorer(reference if reference is not None else model, out, tol, providers,
                            float_dtype=np.dtype(prompt_dtype).type)
    except Exception as exc:  # onnxruntime has no kernel for an op in this precision on this provider
        if dtype == "float32":
            raise
        raise ExportValidationError(
            f"{out}: the {dtype} graph cannot be checked here: onnxruntime failed to run it ({exc}). Export "
            "half precision where it will be served: --device cuda with onnxruntime-gpu."
        ) from None
    return _check(v, out)


def export_retriever(encoder, out: Path, external_data: bool | None = None, device: str = "cpu",
                     tolerance: float | None = None, providers: Sequence[str] | None = None) -> Validation:
    """Export ``MeanPoolEncoder(encoder)`` (always float32: it is small) and validate it."""
    from rospr_export.onnx_config import RetrieverForExport, RetrieverOnnxConfig

    cfg = RetrieverOnnxConfig(encoder.config, task="feature-extraction")
    _optimum_export(RetrieverForExport(encoder), cfg, out, external_data, device, "float32")
    return _check(validate_retriever(encoder, out, tolerance if tolerance is not None else RETRIEVER_TOLERANCE,
                                     providers), out)


def weights_digest(name_or_path: str | Path, model=None, full: bool = False) -> str:
    """A digest of a checkpoint's weights: the file contents of a local directory, or the hub commit.

    A local file's sha256 is remembered per file (``rospr_export.digests.FileDigests``, memo
    ``default_memo()``) under its stat key (device, inode, size, mtime_ns, ctime_ns), so a run on a
    checkpoint it has seen reads no weight file to key its caches (T0-3B: 11 GB, ~15 s a run).
    ``full``: read every byte. The trade-off: the weights are the user's input, not an artifact of
    ours, and any rewrite of a file through the file system changes its stat key (ctime cannot be
    set back by a user), so a changed checkpoint gets a new key; a change beneath the file system is
    not seen (``rospr_export.digests`` says what is and is not caught). The trust guarantee is untouched:
    what is scored is the export, and an export's own files are checked against its manifest before
    every use (``verify_export``), so a flipped byte in a cached export never reaches a score.
    """
    from rospr_export.digests import FileDigests, default_memo

    p = Path(name_or_path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack"))
        if not files:
            raise ValueError(f"{p}: no weight files (*.safetensors, *.bin) to fingerprint")
        digests = FileDigests(None if full else default_memo())
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode())
            h.update(digests.sha256(f, full=full).encode())
        digests.save()
        return h.hexdigest()[:16]
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if not commit:
        raise ValueError(f"{name_or_path}: neither a local directory nor a hub checkpoint with a commit hash")
    return f"hub-{commit[:16]}"


def config_digest(name_or_path: str | Path, revision: str | None = None) -> str:
    """A digest of a checkpoint's config: of a local directory's ``config.json`` as written (its
    volatile keys left out; read without transformers, which would import torch), else of the hub
    config's ``to_dict()`` at ``revision``."""
    path = Path(name_or_path) / "config.json"
    if path.is_file():
        try:
            return checkpoint_config_hash(json.loads(path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON config ({exc}); restore the checkpoint") from None
    from transformers import AutoConfig

    return checkpoint_config_hash(AutoConfig.from_pretrained(str(name_or_path), revision=revision).to_dict())


def cache_key(model_name: str | Path | None, retriever_name: str | Path | None = None, dtype: str = "float32",
              prompt_dtype: str | None = None, revision: str | None = None,
              retriever_revision: str | None = None) -> str:
    """The content address of an export: configs and weights of the model (and retriever), the
    dtypes, the opset and ``EXPORT_VERSION``. Hub checkpoints are identified by the commit that
    ``revision`` (``retriever_revision``) resolves to; local ones by their files (the weights'
    digests remembered per file: ``weights_digest``)."""

    def ident(name, rev):
        if name is None:
            return None
        if Path(name).is_dir():
            return {"config": config_digest(name), "weights": weights_digest(name)}
        from transformers import AutoConfig

        commit = getattr(AutoConfig.from_pretrained(str(name), revision=rev), "_commit_hash", None)
        return {"config": config_digest(name, rev), "weights": f"hub-{commit}"}

    parts = {
        "model": ident(model_name, revision),
        "retriever": ident(retriever_name, retriever_revision),
        "dtype": dtype,
        "prompt_dtype": prompt_dtype or default_prompt_dtype(dtype),
        "export_version": EXPORT_VERSION,
        "opset": OPSET,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def export_models(model_name_or_path: str | Path, out_dir: str | Path, retriever: str | Path | None = None,
                  dtype: str = "float32", external_data: bool | None = None, device: str = "cpu",
                  scorer: bool = True, providers: Sequence[str] | None = None,
                  prompt_dtype: str | None = None, revision: str | None = None,
                  retriever_revision: str | None = None) -> ExportResult:
    """Export the scorer of a checkpoint (and the retriever of another, when given) into ``out_dir``;
    ``revision`` / ``retriever_revision`` pin hub checkpoints to a commit (a local directory ignores them).

    Writes ``t0_scorer.onnx``, ``retriever.onnx`` and ``manifest.json`` (identity, dtype, opset,
    validation figures). Raises ``ExportValidationError`` when a graph fails its check, ``ValueError``
    for a checkpoint that cannot be loaded or an unknown dtype.
    """
    import torch

    from rospr.backbone import load_backbone
    from rospr.identity import backbone_identity as model_identity
    from rospr.retriever import load_encoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    torch_dtype = _torch_dtype(dtype)
    validations: list[Validation] = []
    prompt_dtype = prompt_dtype or default_prompt_dtype(dtype)
    manifest: dict = {"export_version": EXPORT_VERSION, "opset": OPSET, "dtype": dtype, "graphs": {}}
    if scorer:
        model, _tok, identity = load_backbone(model_name_or_path, dtype=torch.float32, revision=revision)
        manifest["model"] = identity.as_dict()
        manifest["model_source"] = str(model_name_or_path)
        manifest["model_revision"] = revision
        manifest["model_weights"] = weights_digest(model_name_or_path, model)
        export_model = model if dtype == "float32" else load_backbone(model_name_or_path, dtype=torch_dtype,
                                                                      revision=revision)[0]
        v = export_scorer(export_model, out / "t0_scorer.onnx", dtype, reference=model,
                          external_data=external_data, device=device, providers=providers,
                          prompt_dtype=prompt_dtype)
        validations.append(v)
        manifest["graphs"]["t0_scorer"] = {"file": "t0_scorer.onnx", "d_model": identity.d_model,
                                           "prompt_dtype": prompt_dtype, "validation": asdict(v)}
        del model, export_model
    if retriever:
        encoder, _tok = load_encoder(str(retriever), revision=retriever_revision)
        v = export_retriever(encoder, out / "retriever.onnx", external_data=external_data, device=device,
                             providers=providers)
        validations.append(v)
        dim = int(getattr(encoder.config, "d_model", None) or encoder.config.hidden_size)
        manifest["graphs"]["retriever"] = {"file": "retriever.onnx", "dim": dim, "source": str(retriever),
                                           "identity": model_identity(encoder, str(retriever)).as_dict(),
                                           "weights": weights_digest(retriever, encoder), "validation": asdict(v)}
    manifest["files"] = {f.name: sha256_file(f) for g in manifest["graphs"].values()
                         for f in graph_files(out / g["file"])}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(out / "manifest.json")
    return ExportResult(out, manifest, validations)


def find_manifest(out_dir: str | Path) -> dict | None:
    """The manifest of a finished export as written, or None when there is none (or it is not a
    readable JSON object: an export that cannot be used). It checks nothing: ``verify_export`` does
    (``rospr.artifacts.read_manifest`` is the checking reader of the method's own artifacts)."""
    p = Path(out_dir) / "manifest.json"
    if not p.is_file():
        return None
    try:
        manifest = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        log.warning("%s: unreadable export manifest (%s)", p, exc)
        return None
    return manifest if isinstance(manifest, dict) else None


def graph_files(onnx_path: str | Path) -> list[Path]:
    """A graph and its external data files, those present (Optimum writes one ``<name>_data`` file)."""
    onnx_path = Path(onnx_path)
    files = [onnx_path]
    for extra in (onnx_path.with_name(onnx_path.name + "_data"), onnx_path.with_name(onnx_path.name + ".data")):
        if extra.exists():
            files.append(extra)
    return files


def graph_digest(manifest: dict, graph: str) -> str:
    """The content hash of one graph of an export: its files' names and sha256 (from ``files``)."""
    entry = manifest["graphs"][graph]
    own = {entry["file"], entry["file"] + "_data", entry["file"] + ".data"}
    names = sorted(n for n in manifest.get("files", {}) if n in own)
    body = json.dumps({n: manifest["files"][n] for n in names}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


def verify_export(folder: str | Path, full: bool = False) -> dict:
    """The manifest of the export in ``folder`` once every file it lists has its recorded sha256.

    ``full``: read every byte; otherwise a file whose stat key is unchanged since it was last read
    in full is not read again (``rospr_export.digests``; what that guarantees is written there). Refuses
    (``ExportIntegrityError``, naming the file and the fix) a folder without a manifest, a manifest
    without ``files`` (an export made before they were recorded), a graph file it does not list,
    and a missing or changed file.
    """
    from rospr_export.digests import FileDigests

    folder = Path(folder)
    mpath = folder / "manifest.json"
    fix = "delete the folder to export again (an on-demand export is redone by the next run)"
    manifest = find_manifest(folder)
    if manifest is None:
        raise ExportIntegrityError(f"{mpath}: missing or unreadable, so the export cannot be checked; {fix}")
    files = manifest.get("files")
    graphs = manifest.get("graphs")
    if not isinstance(files, dict) or not files or not isinstance(graphs, dict):
        raise ExportIntegrityError(f"{mpath}: field 'files' (the sha256 of each file) is missing: an export made "
                                   f"before rospr recorded them; {fix}")
    for g in graphs.values():
        for f in graph_files(folder / str(g.get("file", ""))):
            if f.name not in files:
                raise ExportIntegrityError(f"{f}: a file of graph {g.get('file')!r} that {mpath} field 'files' "
                                           f"does not list; {fix}")
    digests = FileDigests(None if full else folder / DIGEST_MEMO)
    try:
        for name, expected in sorted(files.items()):
            path = folder / str(name)
            if Path(str(name)).name != name or not path.is_file() or path.is_symlink():
                raise ExportIntegrityError(f"{path}: listed in {mpath} field 'files' but not a file of the export; "
                                           f"{fix}")
            got = digests.sha256(path, full=full)
            if got != expected:
                raise ExportIntegrityError(f"{path}: sha256 {got[:12]}… differs from {mpath} files.{name} "
                                           f"{str(expected)[:12]}… (changed after the export); {fix}")
    finally:
        digests.save()
    return manifest
