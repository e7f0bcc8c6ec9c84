"""Checkpoint checks made before anything is loaded: a path that is meant as local, a directory that
holds a Hugging Face checkpoint, JSON files that parse, safetensors files that are complete.

Light on purpose (json and the file system only): a run whose export is cached checks its checkpoint
without importing torch or transformers (``rospr.backbone`` re-exports these for its own callers).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rospr.artifacts import json_document
from rospr.errors import RosprError


class CheckpointError(RosprError, ValueError):
    """A checkpoint that cannot be loaded: the message names the file (or the name), what is wrong, the fix."""


# A hub repository id: ``name`` or ``namespace/name`` (huggingface_hub's rule, without its length limit).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_JSON_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
               "special_tokens_map.json", "added_tokens.json", "model.safetensors.index.json")
_PROJECT_FOLDERS = ("build", "runs", "prompts", "library", "model_repo_build", ".cache")
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt", "*.h5", "*.msgpack")


def is_path_like(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id: absolute, ``./``/``../``/``~``,
    more than one ``/``, a trailing ``/`` or ``\\``, not a valid hub id, or ``a/b`` whose ``a`` is a local
    folder or one of the folders this project writes to (``build/tiny-t00``: ``rospr tiny`` and the
    Makefile write models under ``build/``, so a hub user named ``build`` is not reachable by that name)."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or "\\" in name:
        return True
    if name.endswith("/") or name.count("/") > 1 or not _HUB_ID.match(name) or "--" in name or ".." in name:
        return True
    first = name.split("/", 1)[0]
    return "/" in name and (first in _PROJECT_FOLDERS or Path(first).is_dir())


def check_checkpoint(name_or_path: str | Path, field: str = "model.name_or_path") -> None:
    """Refuse, before anything is loaded, a checkpoint that cannot work.

    Takes a hub id or a local directory and the config ``field`` it came from. A path-like name
    (``is_path_like``) must be an existing directory: it is never looked up on the hub. A local
    directory must hold a ``config.json``; every JSON file of a checkpoint it holds must parse; every
    ``*.safetensors`` file must be complete (its header parses and its tensors end where the file
    does, so a truncated download is found without loading it); and some weight file must exist.
    Raises ``CheckpointError`` naming the file; a hub id that is not local passes (it is looked up).
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if not path.exists():
        if is_path_like(name):
            raise CheckpointError(f"{field}={name!r}: no such directory (a local path, so it is not looked up "
                                  "on the hub); check the path, or make a model with `rospr tiny --out DIR`")
        return
    if not path.is_dir():
        raise CheckpointError(f"{field}={name!r}: {path} is a file; give the checkpoint directory that holds "
                              "config.json and the weights")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path / 'config.json'}: missing, so {path} is not a Hugging Face checkpoint "
                              f"directory ({field}); give one, or make one with `rospr tiny --out DIR`")
    for fname in _JSON_FILES:
        f = path / fname
        if f.is_file():
            try:
                text = f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(f"{f}: not UTF-8 text; restore or re-download the checkpoint") from None
            json_document(text, f, CheckpointError, "restore or re-download the checkpoint")
    weights = sorted(w for pattern in _WEIGHTS for w in path.glob(pattern))
    if not weights:
        raise CheckpointError(f"{path}: no weight files (model.safetensors or pytorch_model.bin) in the checkpoint "
                              f"directory ({field}); restore or re-download them")
    for w in weights:
        if w.suffix == ".safetensors":
            check_safetensors(w)


def check_safetensors(path: Path) -> None:
    """Refuse (``CheckpointError``) a safetensors file whose header is unreadable or whose tensors do
    not exactly fill the data after it (a truncated or padded file). Reads the header only."""
    path = Path(path)
    size = path.stat().st_size
    fix = "restore or re-download the checkpoint"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: {size} bytes, too short for a safetensors file (truncated); {fix}")
        n = int.from_bytes(head, "little")
        if n > size - 8 or n > 100_000_000:
            raise CheckpointError(f"{path}: header of {n} bytes in a file of {size} (truncated or not "
                                  f"safetensors); {fix}")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: the safetensors header is not valid JSON ({exc}); {fix}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is not a JSON object; {fix}")
    end = 0
    for tensor, info in header.items():
        if tensor == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise CheckpointError(f"{path}: tensor {tensor!r} has no valid data_offsets in the header; {fix}")
        end = max(end, offsets[1])
    data = size - 8 - n
    if end != data:
        what = "truncated" if end > data else "longer than its tensors"
        raise CheckpointError(f"{path}: {what}: its tensors need {end} bytes of data, the file has {data}; {fix}")
