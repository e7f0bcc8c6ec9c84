"""An export's ``manifest.json``: its layout, reading it, and verifying an export against it.

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

onnxruntime's optimised graphs are no part of an export: each is an entry of its own store, keyed by
the graph's sha256 and the session options (``optimized_store`` in
``harness/backends/onnxruntime_backend.py``), checked by ``rospr.store`` when it is opened.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rospr.artifacts import ArtifactError, check_sealed, strict_loads
from rospr.canonical import digest_json
from rospr_export.validate import CHECK_SHAPES, expected_tolerance

log = logging.getLogger(__name__)

# The manifest's own layout: 2 is sealed (manifest_hash) and records the checkpoints' config digests.
MANIFEST_FORMAT = "rospr-onnx-export"
MANIFEST_VERSION = 2
DIGEST_MEMO = ".digests.json"  # remembered file digests (rospr_export.digests); not part of the export
FIX = "delete the folder to export again (an on-demand export is redone by the next run)"


class ExportIntegrityError(ArtifactError):
    """An export whose files do not match their recorded sha256, or whose manifest is not sealed or
    not what this rospr writes (the message names the file, the field and the fix)."""


class ExportSourceError(ExportIntegrityError):
    """An intact export made from other weights (or another config) than the checkpoint of the run."""


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
    return digest_json({n: sha for n, sha in manifest.get("files", {}).items() if n in own})


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
    check_sealed(manifest, mpath, MANIFEST_FORMAT, MANIFEST_VERSION, FIX, ExportIntegrityError)
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
