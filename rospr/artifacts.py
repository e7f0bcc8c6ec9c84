"""On-disk artifacts of the method (prompt banks, libraries): atomic writes, hashes, manifests.

Every artifact is plain data: safetensors for arrays, JSON for manifests, FAISS's own format for
indexes. Never pickle. A manifest carries the sha256 of every file it names and a ``manifest_hash``
over its own canonical JSON, so an edit to any file (or to the manifest) is found on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rospr.identity import digest_json


class ArtifactError(ValueError):
    """An artifact on disk that cannot be used. The message names the file, what is wrong and the fix."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_document(text: str, where: str | Path, error: type[ValueError], fix: str, expect: type = dict):
    """The JSON value of ``text``, which must be an ``expect`` (dict or list): the one parser of the JSON
    files a user or a run supplies (checkpoint configs, results files, task.json, row lists). Refuses
    (``error``, naming ``where``, the position and ``fix``) invalid JSON and a value of another type."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); {fix}") from None
    if not isinstance(data, expect):
        kind = {dict: "object", list: "list"}.get(expect, expect.__name__)
        raise error(f"{where}: a JSON {kind} is expected, not a {type(data).__name__}; {fix}")
    return data


def json_lines(text: str, where: str | Path, error: type[ValueError], fix: str) -> list[dict]:
    """The objects of JSON-lines ``text`` (blank lines skipped): the one reader of records files and
    row files. Refuses (``error``, naming ``where``, the line and ``fix``) a line that is not JSON or not
    a JSON object."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}: line {i} is not valid JSON ({exc.msg}); {fix}") from None
        if not isinstance(obj, dict):
            raise error(f"{where}: line {i} is a {type(obj).__name__}, not a JSON object; {fix}")
        out.append(obj)
    return out


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a part.

    An ``OSError`` (disk full, read-only or unwritable folder) is raised again with ``path`` as its
    ``filename`` (a failed ``write`` names no file), the half-written temporary file removed and the
    old file, if any, untouched.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise


def seal(manifest: dict) -> dict:
    """``manifest`` with ``manifest_hash`` set to the sha256 of its canonical JSON (hash excluded)."""
    body = {k: v for k, v in manifest.items() if k != "manifest_hash"}
    return {**body, "manifest_hash": digest_json(body)}


def write_manifest(path: Path, manifest: dict) -> dict:
    """Seal and atomically write a manifest; returns the sealed manifest."""
    sealed = seal(manifest)
    atomic_write_bytes(path, (json.dumps(sealed, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())
    return sealed


def read_manifest(path: Path, kind: str, version: int) -> dict:
    """Read a manifest and check its format, version and ``manifest_hash``.

    Refuses (``ArtifactError``) a missing or unparsable file, another format or version, and a
    manifest whose content no longer matches its hash (edited on disk).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no manifest; build the {kind} first")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not a readable JSON manifest ({exc}); rebuild the {kind}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != kind:
        raise ArtifactError(f"{path}: field 'format' is not {kind!r}; this is not a {kind} manifest")
    if manifest.get("version") != version:
        raise ArtifactError(f"{path}: field 'version' is {manifest.get('version')!r}, this rospr reads "
                            f"{version}; rebuild the {kind}")
    if seal(manifest)["manifest_hash"] != manifest.get("manifest_hash"):
        raise ArtifactError(f"{path}: the manifest does not match its manifest_hash (edited on disk?); "
                            f"rebuild the {kind} or restore the file")
    return manifest


def check_file(path: Path, expected_sha256: str, kind: str) -> None:
    """Refuse a file that is missing or whose sha256 differs from the manifest's."""
    if not Path(path).is_file():
        raise ArtifactError(f"{path}: missing from the {kind}; rebuild it")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ArtifactError(f"{path}: sha256 {actual[:12]}… differs from the manifest's {expected_sha256[:12]}… "
                            f"(edited on disk?); rebuild the {kind} or restore the file")
