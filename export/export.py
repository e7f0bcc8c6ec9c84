"""Export the ``t0_scorer`` and ``retriever`` graphs through Optimum, and check them against PyTorch.

Every export is validated on inputs of several shapes (batch 1 and more, one-token and longer
sequences and choices, prompt length 0 and more, rows with and without a soft prompt in one batch):
the maximum absolute difference to PyTorch is recorded in ``manifest.json`` and an export above the
tolerance raises ``ExportValidationError`` (the files are kept for inspection, the manifest is not
written, so a cache never serves a graph that failed).

Integrity. ``manifest.json`` lists the sha256 of every file of the export (``files``: each graph
and its external data) and is sealed as a whole (``manifest_hash``, ``rospr.artifacts.seal``): an edit
to any field (the identity, the weights digest, a dtype, a validation figure) is refused.
``verify_export`` checks the seal, the validation figures (each graph's tolerance is the one this
rospr validates that graph and dtype with, its maximum difference is the maximum of its per-shape
figures and within the tolerance, so a resealed manifest cannot pass a graph that failed or loosen
its tolerance) and the files before a graph is used: in full (``rospr verify``), or through
``rospr.artifacts.FileDigests``, which re-reads a file only when its stat key (device, inode, size,
mtime, ctime) changed since it was last read in full. Given the checkpoints a run uses
(``export_sources``), it also refuses an export made from other weights or another config
(``ExportSourceError``): the same architecture is not the same model. The export's content hash
(``graph_digest``) is part of the unit-cache key of every unit scored with it.

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

from rospr.artifacts import ArtifactError, seal, sha256_file, strict_loads, write_manifest
from rospr.errors import RosprError, SettingError
from rospr.identity import config_digest, weights_digest  # noqa: F401  (the export's names for them)

log = logging.getLogger(__name__)

# Bump when the graphs or their inputs change: it is part of the cache key of on-demand exports.
# 2: packed decoder and LM head (only real choices and tokens); 3: cross-attention keys and values
# projected once per input and shared by its choices (rospr.backbone.PromptedT5._decode); 4: the decoder's
# residual stream packed to real tokens (no projection or feed-forward on a choice's padding), LogSoftmax.
EXPORT_VERSION = "4"
# The manifest's own layout: 2 is sealed (manifest_hash) and records the checkpoints' config digests.
MANIFEST_FORMAT = "rospr-onnx-export"
MANIFEST_VERSION = 2
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


class ExportValidationError(RosprError, RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance (the message gives both)."""


class ExportIntegrityError(ArtifactError):
    """An export whose files do not match their recorded sha256, or whose manifest is not sealed or
    not what this rospr writes (the message names the file, the field and the fix)."""


class ExportSourceError(ExportIntegrityError):
    """An intact export made from other weights (or another config) than the checkpoint of the run."""


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
        raise SettingError(f"export dtype {dtype!r}: choose one of {list(DTYPES)}")
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
        raise SettingError(f"prompt dtype {prompt_dtype!r}: choose float32 or float16")
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


def checkpoint_source(name_or_path: str | Path, revision: str | None = None) -> dict:
    """What an export of a checkpoint is made from: its config digest and weights digest
    (``rospr.identity.config_digest`` / ``weights_digest``: a local folder by its files, read without
    torch or transformers; a hub checkpoint by its commit at ``revision``)."""
    return {"config": config_digest(name_or_path, revision), "weights": weights_digest(name_or_path, revision=revision)}


def export_sources(model: str | Path | None, retriever: str | Path | None = None, revision: str | None = None,
                   retriever_revision: str | None = None) -> dict:
    """The checkpoints an export of ``model`` (and ``retriever``) must come from: ``{"model": ...,
    "retriever": ...}``, each ``checkpoint_source`` or None. The cache key is computed from it and
    ``verify_export`` checks a manifest against it."""
    return {"model": None if model is None else checkpoint_source(model, revision),
            "retriever": None if retriever is None else checkpoint_source(retriever, retriever_revision)}


def cache_key(model_name: str | Path | None, retriever_name: str | Path | None = None, dtype: str = "float32",
              prompt_dtype: str | None = None, revision: str | None = None,
              retriever_revision: str | None = None, sources: dict | None = None) -> str:
    """The content address of an export: configs and weights of the model (and retriever), the
    dtypes, the opset and ``EXPORT_VERSION``. Hub checkpoints are identified by the commit that
    ``revision`` (``retriever_revision``) resolves to; local ones by their files (the weights'
    digests remembered per file: ``weights_digest``). ``sources``: ``export_sources`` of these
    checkpoints when the caller has it already (it is computed otherwise)."""
    if sources is None:
        sources = export_sources(model_name, retriever_name, revision, retriever_revision)
    parts = {
        "model": sources["model"],
        "retriever": sources["retriever"],
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
    manifest: dict = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "export_version": EXPORT_VERSION,
                      "opset": OPSET, "dtype": dtype, "graphs": {}}
    if scorer:
        model, _tok, identity = load_backbone(model_name_or_path, dtype=torch.float32, revision=revision)
        manifest["model"] = identity.as_dict()
        manifest["model_source"] = str(model_name_or_path)
        manifest["model_revision"] = revision
        manifest["model_weights"] = identity.weights
        manifest["model_config"] = config_digest(model_name_or_path, revision)
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
        renc = model_identity(encoder, str(retriever))
        manifest["graphs"]["retriever"] = {"file": "retriever.onnx", "dim": dim, "source": str(retriever),
                                           "identity": renc.as_dict(), "weights": renc.weights,
                                           "config": config_digest(retriever, retriever_revision),
                                           "validation": asdict(v)}
    manifest["files"] = {f.name: sha256_file(f) for g in manifest["graphs"].values()
                         for f in graph_files(out / g["file"])}
    sealed = write_manifest(out / "manifest.json", manifest)  # atomic; the seal covers every field
    return ExportResult(out, sealed, validations)


def find_manifest(out_dir: str | Path) -> dict | None:
    """The manifest of a finished export as written, or None when there is none (or it is not a
    readable JSON object: an export that cannot be used). It checks nothing: ``verify_export`` does
    (``rospr.artifacts.read_manifest`` is the checking reader of the method's own artifacts)."""
    p = Path(out_dir) / "manifest.json"
    if not p.is_file():
        return None
    try:  # a key given twice is refused (logged here), as every JSON file rospr reads
        manifest = strict_loads(p.read_text(), p, ArtifactError, FIX)
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


FIX = "delete the folder to export again (an on-demand export is redone by the next run)"


def check_seal(manifest: dict, mpath: Path) -> None:
    """Refuse (``ExportIntegrityError``) a manifest that is not a sealed one of this layout
    (``MANIFEST_FORMAT`` / ``MANIFEST_VERSION``) or whose content no longer matches its seal."""
    if "manifest_hash" not in manifest or manifest.get("format") != MANIFEST_FORMAT:
        raise ExportIntegrityError(f"{mpath}: field 'manifest_hash' (the seal over every field) is missing: an export "
                                   f"made before rospr sealed export manifests; {FIX}")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ExportIntegrityError(f"{mpath}: field 'version' is {manifest.get('version')!r}, this rospr reads "
                                   f"{MANIFEST_VERSION}; {FIX}")
    try:
        intact = seal(manifest)["manifest_hash"] == manifest["manifest_hash"]
    except (TypeError, ValueError):  # not canonical JSON (NaN, say): not what export_models wrote
        intact = False
    if not intact:
        raise ExportIntegrityError(f"{mpath}: the manifest does not match its manifest_hash (edited after the "
                                   f"export?); {FIX}")


def expected_tolerance(graph: str, dtype: str, prompt_dtype: str | None) -> float:
    """The tolerance ``export_models`` validates ``graph`` with, for the export's dtypes."""
    if graph == "retriever":
        return RETRIEVER_TOLERANCE
    half = dtype != "float32" or (prompt_dtype or default_prompt_dtype(dtype)) != "float32"
    return HALF_TOLERANCE if half else SCORER_TOLERANCE


CHECK_SHAPES = {"t0_scorer": SCORER_CHECK_SHAPES, "retriever": RETRIEVER_CHECK_SHAPES}


def check_validation(manifest: dict, mpath: Path) -> None:
    """Refuse (``ExportIntegrityError``, naming the field) validation figures that do not show a
    passed check as ``export_models`` runs it: another graph name, shapes or tolerance than this
    rospr's for that graph and dtype, per-shape figures that are not finite numbers (one per shape),
    a maximum that is not their maximum, and a maximum above the tolerance."""
    for name, entry in manifest["graphs"].items():
        field_ = f"graphs.{name}.validation"
        if name not in CHECK_SHAPES or not isinstance(entry, dict) or not isinstance(entry.get("validation"), dict):
            raise ExportIntegrityError(f"{mpath}: field {field_!r} is missing or graph {name!r} is not one rospr "
                                       f"exports; {FIX}")
        v = entry["validation"]
        tolerance = expected_tolerance(name, str(manifest.get("dtype")), entry.get("prompt_dtype"))
        shapes = [list(s) for s in CHECK_SHAPES[name]]
        per_shape = v.get("per_shape")
        numbers = isinstance(per_shape, list) and len(per_shape) == len(shapes) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in per_shape)
        problem = (
            f"{field_}.graph is {v.get('graph')!r}" if v.get("graph") != name else
            f"{field_}.tolerance is {v.get('tolerance')!r}, rospr validates this graph with {tolerance:g}"
            if v.get("tolerance") != tolerance else
            f"{field_}.shapes is {v.get('shapes')!r}, rospr checks {shapes}" if v.get("shapes") != shapes else
            f"{field_}.per_shape is {per_shape!r}, not {len(shapes)} finite numbers" if not numbers else
            f"{field_}.max_abs_diff is {v.get('max_abs_diff')!r}, the maximum of per_shape is {max(per_shape)!r}"
            if v.get("max_abs_diff") != max(per_shape) else
            f"{field_}.max_abs_diff {v['max_abs_diff']:.3g} is above the tolerance {tolerance:g}: the graph failed "
            "its check" if not v["max_abs_diff"] <= tolerance else None)
        if problem:
            raise ExportIntegrityError(f"{mpath}: {problem}; {FIX}")


def check_sources(manifest: dict, sources: dict, mpath: Path) -> None:
    """Refuse (``ExportSourceError``, naming both digests) an export whose graphs were made from other
    checkpoints than ``sources`` (``export_sources``): weights or config of the model (the scorer
    graph) or of the retriever."""
    recorded = {
        "model": None if "t0_scorer" not in manifest["graphs"] else
        {"config": manifest.get("model_config"), "weights": manifest.get("model_weights"),
         "source": manifest.get("model_source")},
        "retriever": None if "retriever" not in manifest["graphs"] else
        {"config": manifest["graphs"]["retriever"].get("config"),
         "weights": manifest["graphs"]["retriever"].get("weights"),
         "source": manifest["graphs"]["retriever"].get("source")},
    }
    for role, graph in (("model", "t0_scorer"), ("retriever", "retriever")):
        want, got = sources.get(role), recorded[role]
        if want is None:
            continue
        if got is None:
            raise ExportSourceError(f"{mpath}: no {graph} graph, and this run needs one of its {role}; {FIX}")
        for what in ("weights", "config"):
            if got[what] != want[what]:
                raise ExportSourceError(
                    f"{mpath}: the {graph} graph was exported from {role} {what} {got[what]} ({got['source']}), "
                    f"the {role} of this run has {what} {want[what]}: the same architecture is not the same model; "
                    f"export this checkpoint (`rospr export`; the on-demand cache does it) or point the run at "
                    f"the checkpoint the export was made from")


def verify_export(folder: str | Path, full: bool = False, sources: dict | None = None) -> dict:
    """The manifest of the export in ``folder`` once it is sealed, its validation figures show passed
    checks, every file it lists has its recorded sha256 and (given ``sources``: ``export_sources`` of
    the run's checkpoints) its graphs were made from those checkpoints.

    ``full``: read every byte; otherwise a file whose stat key is unchanged since it was last read
    in full is not read again (``rospr.artifacts.FileDigests``; what that guarantees is written
    there). Refuses (``ExportIntegrityError``, naming the file, the field and the fix) a folder
    without a manifest, an unsealed (older) or edited manifest, validation figures ``check_validation``
    refuses, a graph file the manifest does not list, and a missing or changed file;
    (``ExportSourceError``) an export of other weights or another config than ``sources``.
    """
    from rospr.artifacts import FileDigests

    folder = Path(folder)
    mpath = folder / "manifest.json"
    manifest = find_manifest(folder)
    if manifest is None:
        raise ExportIntegrityError(f"{mpath}: missing or unreadable, so the export cannot be checked; {FIX}")
    files = manifest.get("files")
    graphs = manifest.get("graphs")
    if not isinstance(files, dict) or not files or not isinstance(graphs, dict):
        raise ExportIntegrityError(f"{mpath}: field 'files' (the sha256 of each file) is missing: an export made "
                                   f"before rospr recorded them; {FIX}")
    check_seal(manifest, mpath)
    check_validation(manifest, mpath)
    if sources is not None:
        check_sources(manifest, sources, mpath)
    for g in graphs.values():
        for f in graph_files(folder / str(g.get("file", ""))):
            if f.name not in files:
                raise ExportIntegrityError(f"{f}: a file of graph {g.get('file')!r} that {mpath} field 'files' "
                                           f"does not list; {FIX}")
    digests = FileDigests(None if full else folder / DIGEST_MEMO)
    try:
        for name, expected in sorted(files.items()):
            path = folder / str(name)
            if Path(str(name)).name != name or not path.is_file() or path.is_symlink():
                raise ExportIntegrityError(f"{path}: listed in {mpath} field 'files' but not a file of the export; "
                                           f"{FIX}")
            got = digests.sha256(path, full=full)
            if got != expected:
                raise ExportIntegrityError(f"{path}: sha256 {got[:12]}… differs from {mpath} files.{name} "
                                           f"{str(expected)[:12]}… (changed after the export); {FIX}")
    finally:
        digests.save()
    return manifest
