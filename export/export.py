"""Export the ``t0_scorer`` and ``retriever`` graphs of checkpoints into a folder with its sealed manifest.

``export_models`` is the whole export: load the checkpoints, trace and validate each graph
(``rospr_export.trace``, ``rospr_export.validate``), record what it was made from
(``rospr_export.identity``) and write ``manifest.json`` (``rospr_export.manifest``, which also reads and
verifies it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from rospr.artifacts import sha256_file, write_manifest
from rospr.identity import config_digest
from rospr_export.manifest import MANIFEST_FORMAT, MANIFEST_VERSION, graph_files
from rospr_export.trace import EXPORT_VERSION, OPSET, default_prompt_dtype, export_retriever, export_scorer, torch_dtype
from rospr_export.validate import Validation

__all__ = ["ExportResult", "export_models"]


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


def export_models(model_name_or_path: str | Path, out_dir: str | Path, retriever: str | Path | None = None,
                  dtype: str = "float32", external_data: bool | None = None, device: str = "cpu",
                  scorer: bool = True, providers: Sequence[str] | None = None,
                  prompt_dtype: str | None = None, revision: str | None = None,
                  retriever_revision: str | None = None) -> ExportResult:
    """Export the scorer of a checkpoint (and the retriever of another, when given) into ``out_dir``;
    ``revision`` / ``retriever_revision`` pin hub checkpoints to a commit (a local directory ignores them).

    Writes ``t0_scorer.onnx``, ``retriever.onnx`` and ``manifest.json`` (identity, dtype, opset,
    validation figures). Where this environment cannot run Optimum (transformers >= 4.58, or no
    optimum-onnx) the same export runs in rospr's export environment (``rospr_export.isolated``).
    Raises ``ExportValidationError`` when a graph fails its check, ``ValueError`` for a checkpoint that
    cannot be loaded or an unknown dtype, ``ExportEnvironmentError`` when the export environment fails.
    """
    from rospr_export.isolated import export_elsewhere, unable_here

    why = unable_here()
    if why is not None:
        return export_elsewhere(why, dict(
            model_name_or_path=str(model_name_or_path), out_dir=str(out_dir),
            retriever=None if retriever is None else str(retriever), dtype=dtype, external_data=external_data,
            device=device, scorer=scorer, providers=None if providers is None else list(providers),
            prompt_dtype=prompt_dtype, revision=revision, retriever_revision=retriever_revision))
    import torch

    from rospr.backbone import load_backbone
    from rospr.identity import backbone_identity as model_identity
    from rospr.retriever import load_encoder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)
    export_dtype = torch_dtype(dtype)
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
        export_model = model if dtype == "float32" else load_backbone(model_name_or_path, dtype=export_dtype,
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

