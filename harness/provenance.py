"""Where a run came from: code revision, package versions, machine."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGES = ("rospr", "torch", "transformers", "tokenizers", "sentencepiece", "numpy", "datasets",
            "onnxruntime", "optimum-onnx", "faiss-cpu", "ray", "tritonclient")


def git_state(repo: Path | None = None, ignore: tuple[str, ...] = ()) -> tuple[str | None, bool | None]:
    """(revision, dirty) of the checkout holding this code, or (None, None) outside git; changes under
    the folders ``ignore`` (relative to the checkout's root) do not make it dirty."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
                                *(f":(top,exclude){p}" for p in ignore)],
                               cwd=cwd, capture_output=True, text=True, timeout=10)
        return rev.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def hub_revision(name_or_path: str, revision: str | None) -> str | None:
    """``revision`` where it applies: a hub name's; None for a local folder, which has no revisions (loading
    ignores one). What an identity or the provenance may record as used."""
    from rospr.checkpoint import is_path_like

    return None if is_path_like(name_or_path) or Path(name_or_path).is_dir() else revision


def used_revision(name_or_path: str, revision: str | None, field: str) -> str | None:
    """The hub revision ``name_or_path`` was loaded at, as the provenance records it (``hub_revision``): a
    revision the config (``field``) gives for a local folder is never recorded as used; a warning says so."""
    used = hub_revision(name_or_path, revision)
    if used == revision:
        return used
    log.warning("%s %s: %s is a local folder, which has no revisions: it was loaded as it is on disk, and the "
                "provenance records no revision (remove %s, or give a hub name)", field, revision, name_or_path, field)
    return None


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def host() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
