"""Write a servable Triton model repository from an export and the committed ``model_repo/``.

Layout written under ``out`` (``model_repo_build/`` by convention; never committed)::

    triton/<model>/config.pbtxt, 1/model.onnx   onnxruntime backend: the NGC image serves this
    twin/<model>/config.pbtxt, 1/model.py, 1/model.onnx
                                                python backend twin: what `rospr serve` runs here
    onnx/                                       the export: graphs + manifest.json (validation)

The committed configs are copied with what depends on the model filled in: the width of
``prompt_embeds`` (d_model) and of ``sentence_embedding``, the prompt's data type, and the model's
identity as ``rospr_identity`` (so a Triton client knows what it scores with), and the checkpoint it
was exported from as ``rospr_source`` (JSON: ``config`` and ``weights`` digests, as
``rospr_export.identity.checkpoint_source`` gives them, with the ``source`` path or hub name and its
``revision``), from the export's sealed manifest; the Triton backend compares it with the run's
configured checkpoint and refuses another (``rospr_harness.backends.triton_backend.check_served_source``).
Graph files are hard-linked where possible (T0-3B is 11 GB) and copied otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from rospr.errors import RosprError
from rospr_export.manifest import graph_files

REPO_ROOT = Path(__file__).resolve().parents[1]
# the committed model_repo/: beside this folder in a checkout, or inside the package when installed from a
# wheel (pyproject maps it to rospr_export.model_repo)
MODEL_REPO = next((p for p in (REPO_ROOT / "model_repo", Path(__file__).resolve().parent / "model_repo")
                   if (p / "python_twin" / "model.py").is_file()), REPO_ROOT / "model_repo")
MODELS = ("t0_scorer", "retriever")
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16"}


class RepositoryError(RosprError, FileNotFoundError):
    """No export, no committed config, or not a model repository where one is needed (the message
    names the folder and the fix)."""


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _set_param(text: str, key: str, value: str) -> str:
    """Set (replace or append) a string parameter of a config.pbtxt."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    line = f'parameters {{ key: "{key}" value: {{ string_value: "{escaped}" }} }}'
    pattern = re.compile(r'^parameters \{ key: "' + re.escape(key) + r'".*$', re.M)
    return pattern.sub(lambda _m: line, text) if pattern.search(text) else text.rstrip("\n") + "\n" + line + "\n"


def served_source(manifest: dict, model: str) -> dict:
    """What the graph ``model`` of an export was made from, as its manifest records it: ``config`` and
    ``weights`` digests (``checkpoint_source``), ``source`` and ``revision``."""
    if model == "t0_scorer":
        return {"config": manifest.get("model_config"), "weights": manifest.get("model_weights"),
                "source": manifest.get("model_source"), "revision": manifest.get("model_revision")}
    graph = manifest["graphs"][model]
    return {"config": graph.get("config"), "weights": graph.get("weights"), "source": graph.get("source"),
            "revision": graph.get("revision")}


def fill_config(text: str, model: str, graph: dict, identity: dict | None, source: dict | None = None) -> str:
    """The committed config text with the model-dependent values of ``graph`` (a manifest entry) and
    ``source`` (``served_source``) as ``rospr_source``."""
    if source is not None:
        text = _set_param(text, "rospr_source", json.dumps(source, sort_keys=True))
    if model == "t0_scorer":
        dtype = TRITON_DTYPES[graph.get("prompt_dtype", "float32")]
        text = re.sub(r'(name: "prompt_embeds"\s+data_type: )TYPE_\w+(\s+dims: \[ -1, )\d+', rf"\g<1>{dtype}\g<2>{graph['d_model']}", text)
        text = _set_param(text, "rospr_d_model", str(graph["d_model"]))
        text = _set_param(text, "rospr_prompt_dtype", graph.get("prompt_dtype", "float32"))
        if identity:
            text = _set_param(text, "rospr_identity", json.dumps(identity, sort_keys=True))
    else:
        text = re.sub(r'(name: "sentence_embedding"\s+data_type: TYPE_FP32\s+dims: \[ )\d+', rf"\g<1>{graph['dim']}", text)
        text = _set_param(text, "rospr_dim", str(graph["dim"]))
        if graph.get("identity"):
            text = _set_param(text, "rospr_identity", json.dumps(graph["identity"], sort_keys=True))
    return text


def write_repository(export_dir: str | Path, out: str | Path, source: str | Path = MODEL_REPO) -> Path:
    """Build ``out`` (see the module docstring) from a validated export in ``export_dir``.

    Returns ``out``. Refuses (``RepositoryError``, a ``FileNotFoundError``) an export without
    ``manifest.json`` (unfinished or failed validation) or a committed config that is missing, and
    (``ExportIntegrityError``) an export whose files no longer have their recorded sha256 (read in
    full: what is served is checked).
    """
    from rospr_export.manifest import verify_export

    export_dir, out, source = Path(export_dir), Path(out), Path(source)
    manifest_path = export_dir / "manifest.json"
    if not manifest_path.is_file():
        raise RepositoryError(f"{manifest_path}: no validated export here; run `rospr export` first")
    manifest = verify_export(export_dir, full=True)
    twin_model_py = source / "python_twin" / "model.py"
    for flavour in ("triton", "twin"):
        shutil.rmtree(out / flavour, ignore_errors=True)
    for model, graph in manifest["graphs"].items():
        onnx_path = export_dir / graph["file"]
        for flavour, cfg_path in (("triton", source / model / "config.pbtxt"),
                                  ("twin", source / "python_twin" / model / "config.pbtxt")):
            if not cfg_path.is_file():
                raise RepositoryError(f"{cfg_path}: the committed Triton config of {model!r} is missing")
            target = out / flavour / model
            (target / "1").mkdir(parents=True, exist_ok=True)
            text = fill_config(cfg_path.read_text(), model, graph, manifest.get("model"),
                               served_source(manifest, model))
            (target / "config.pbtxt").write_text(text)
            for f in graph_files(onnx_path):
                # The graph is always model.onnx; external data keeps the name the graph refers to.
                _link_or_copy(f, target / "1" / ("model.onnx" if f == onnx_path else f.name))
            if flavour == "twin":
                shutil.copy2(twin_model_py, target / "1" / "model.py")
    if export_dir.resolve() != (out / "onnx").resolve():
        for f in export_dir.iterdir():
            if f.is_file():
                _link_or_copy(f, out / "onnx" / f.name)
    return out


def twin_repository(repo: str | Path) -> Path:
    """The python-backend repository to serve for ``repo``: ``repo/twin`` of a build, or ``repo``
    itself when it already holds model folders. Refuses a folder with neither."""
    repo = Path(repo)
    if (repo / "twin").is_dir():
        return repo / "twin"
    if any((d / "config.pbtxt").is_file() for d in repo.iterdir()) if repo.is_dir() else False:
        return repo
    raise RepositoryError(
        f"{repo}: not a model repository (no twin/ and no <model>/config.pbtxt); build one with "
        "`rospr export --model M --out model_repo_build/`"
    )
