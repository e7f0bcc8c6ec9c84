"""Identity and digests: the one place where what a thing *is* becomes a hash.

- Content addresses (prompt train keys, bank and library hashes, manifest seals, unit-cache keys, the
  run config's hash) are ``rospr.canonical.digest_json`` of a plain dict; this module says what goes
  into a model's.
- ``checkpoint_config_hash``: a model's identity from its ``config.json`` (volatile keys dropped).
  Its encoding (``json.dumps(sort_keys=True, default=str)``) predates ``canonical`` and is kept as
  it is: the value is stored in every prompt bank, library and export already on disk, and another
  encoding would make each of them "another backbone".
- ``weights_digest``: which weights a checkpoint holds. A local folder by the sha256 of its weight
  files (remembered per file by ``rospr.artifacts.FileDigests``, so a checkpoint seen before costs a
  few ``stat`` calls), a hub checkpoint by its commit. Two checkpoints of one architecture (T0-3B and
  T5-LM-adapt-XL) share a config hash, never a weights digest: every artifact made from a model
  (prompt bank, library, export) records it and is used only with those weights.
- ``ModelIdentity`` (a loaded scorer backbone: the config hash of ``to_dict()``, the weights) and
  ``retriever_identity`` (an encoder checkpoint: a local folder's ``config.json`` read as JSON and its
  weight files, so neither torch nor transformers is imported; a hub name through transformers) are
  built on them; the unit cache's part of a scorer is ``rospr_harness.cache``'s.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rospr.canonical import digest_chunks, sha256_text
from rospr.errors import SettingError

# keys of a checkpoint config that say where or with what it was saved, not what the model is
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash")


def checkpoint_config_hash(config_dict: dict) -> str:
    """16 hex digits identifying a checkpoint config (``PretrainedConfig.to_dict()``), the volatile
    keys left out. Encoding frozen for the artifacts on disk (see the module docstring)."""
    cfg = {k: v for k, v in config_dict.items() if k not in VOLATILE_CONFIG_KEYS}
    return sha256_text(json.dumps(cfg, sort_keys=True, default=str))[:16]


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".h5", ".msgpack")
# what decides a checkpoint's token ids (``rospr.tokenizer``): in the digest beside the weights, so every
# artifact made with the ids (bank, library, export, unit) is remade when the tokenizer changes
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def weights_digest(name_or_path: str | Path, model=None, full: bool = False, revision: str | None = None) -> str:
    """16 hex digits naming a checkpoint's weights and what decides its token ids: of a local directory,
    the names and sha256 of its weight files (``WEIGHT_SUFFIXES``) and tokenizer files
    (``TOKENIZER_FILES``), with the tokenization rule's version (``rospr.tokenizer.TOKENIZATION``); of a
    hub checkpoint, ``hub-`` and its commit, which pins every file (from the loaded ``model``'s config,
    else resolved at ``revision`` through transformers).

    A local file's sha256 is remembered in ``rospr.artifacts.default_memo()`` under its stat key, so
    a checkpoint seen before is not read again (T0-3B: 11 GB, ~15 s); ``full``: read every byte. Any
    rewrite of a file through the file system changes its stat key (``rospr.artifacts`` says what is
    and is not caught). Refuses (``ValueError``) a folder without weight files and a name that is
    neither a folder nor a hub checkpoint with a commit.
    """
    from rospr.artifacts import FileDigests, default_memo  # rospr.artifacts imports this module

    p = Path(name_or_path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in WEIGHT_SUFFIXES)
        if not files:
            raise SettingError(f"{p}: no weight files (*.safetensors, *.bin) to fingerprint")
        from rospr.tokenizer import TOKENIZATION

        files += sorted(p / name for name in TOKENIZER_FILES if (p / name).is_file())
        digests = FileDigests(None if full else default_memo())
        digest = digest_chunks([TOKENIZATION, *(part for f in files for part in (f.name, digests.sha256(f, full=full)))])
        digests.save()
        return digest[:16]
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    if not commit and model is None:
        commit = getattr(_hub_config(str(name_or_path), revision), "_commit_hash", None)
    if not commit:
        raise SettingError(f"{name_or_path}: neither a local directory nor a hub checkpoint with a commit hash")
    return f"hub-{commit[:16]}"


def base_tokenizer_digest(name_or_path: str | Path, revision: str | None = None) -> str:
    """16 hex digits naming what decides a checkpoint's token ids, its weights aside (the base of a
    retriever weights file, whose own sha256 names the weights): of a local directory, the names and
    sha256 of its tokenizer files (``TOKENIZER_FILES``) with the tokenization rule's version, as
    ``weights_digest`` folds them; of a hub checkpoint, ``weights_digest``'s ``hub-`` and commit, which
    pins every file. Refuses what ``weights_digest`` refuses of a hub name."""
    from rospr.artifacts import FileDigests, default_memo

    p = Path(name_or_path)
    if not p.is_dir():
        return weights_digest(name_or_path, revision=revision)
    from rospr.tokenizer import TOKENIZATION

    files = sorted(p / name for name in TOKENIZER_FILES if (p / name).is_file())
    digests = FileDigests(default_memo())
    digest = digest_chunks([TOKENIZATION, *(part for f in files for part in (f.name, digests.sha256(f)))])
    digests.save()
    return digest[:16]


def _hub_config(name: str, revision: str | None):
    """The transformers config of a hub checkpoint (resolved online or from the hub cache)."""
    from transformers import AutoConfig  # heavy: only for a checkpoint that is not a local folder

    try:
        return AutoConfig.from_pretrained(name, revision=revision)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingError(f"{name}: neither a local checkpoint folder nor a hub checkpoint reachable from here "
                           f"({first[:200]})") from None


def read_config(name_or_path: str | Path, revision: str | None = None) -> dict:
    """A checkpoint's config as a dict: a local folder's ``config.json`` read as JSON (no transformers,
    which would import torch), else the hub's ``config.json`` at ``revision`` (transformers' ``to_dict()``
    where it cannot be had as a file). Refuses
    (``ValueError``, naming the file) a ``config.json`` that is not a JSON object."""
    path = Path(name_or_path) / "config.json"
    if path.is_file():
        from rospr.artifacts import json_document

        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingError(f"{path}: unreadable ({exc}); restore the checkpoint") from None
        return json_document(text, path, SettingError, "restore the checkpoint")
    if Path(name_or_path).is_dir():
        raise SettingError(f"{path}: missing, so {name_or_path} is not a checkpoint folder; give the folder that "
                           "holds config.json and the weights")
    try:  # the hub's config.json as written: the same dict whatever transformers would make of it
        from huggingface_hub import hf_hub_download

        return read_config(Path(hf_hub_download(str(name_or_path), "config.json", revision=revision)).parent)
    except Exception:  # noqa: BLE001 - no hub client, no network, no such file: transformers' own resolution
        return _hub_config(str(name_or_path), revision).to_dict()


def config_digest(name_or_path: str | Path, revision: str | None = None) -> str:
    """``checkpoint_config_hash`` of ``read_config``: a local ``config.json`` as written, a hub one as
    transformers gives it."""
    return checkpoint_config_hash(read_config(name_or_path, revision))


def display_name(name_or_path: str) -> str:
    """How a model is named in identities: a local folder by its last component, a hub id as is."""
    return Path(name_or_path).name if Path(name_or_path).exists() else name_or_path


def file_sha256(path: str | Path) -> str:
    """The sha256 of one file (a retriever's weights file), remembered by its stat key as
    ``weights_digest``'s files are. Refuses (``SettingError`` naming it) a path that is no file."""
    from rospr.artifacts import FileDigests, default_memo

    if not Path(path).is_file():
        raise SettingError(f"{path}: no such file")
    digests = FileDigests(default_memo())
    sha = digests.sha256(Path(path))
    digests.save()
    return sha


@dataclass(frozen=True)
class ModelIdentity:
    """What a scorer backbone is, for provenance and keys: name, config hash, sizes, and the digest
    of its weights (``weights_digest``)."""

    name: str
    config_hash: str
    d_model: int
    vocab_size: int
    n_parameters: int
    weights: str

    def as_dict(self) -> dict:
        return asdict(self)


def backbone_identity(model, name: str) -> ModelIdentity:
    """The identity of a (transformers) encoder-decoder ``model`` loaded from ``name`` (a local folder
    or a hub checkpoint, whose commit the loaded config carries). The config hash is of the checkpoint's
    ``config.json`` as written (``config_digest``), not of what the installed transformers makes of it:
    transformers 4 and 5 give T0 other ``to_dict()``s, and an export, a bank or a library made under one
    must be the same model under the other. Refuses (``ValueError``) a ``name`` whose weights cannot be
    identified (``weights_digest``)."""
    revision = getattr(model.config, "_commit_hash", None)
    return ModelIdentity(
        name=display_name(name),
        config_hash=config_digest(name, None if Path(name).is_dir() else revision),
        d_model=int(model.config.d_model),
        vocab_size=int(model.config.vocab_size),
        n_parameters=sum(p.numel() for p in model.parameters()),
        weights=weights_digest(name, model),
    )


def retriever_identity(name_or_path: str | Path, revision: str | None = None,
                       weights: str | Path | None = None) -> dict:
    """The retriever's identity, no model loaded (so it works for any backend): name, config hash
    (``config_digest``), output dimension and ``weights`` (``weights_digest``); ``revision`` pins a hub
    checkpoint. With ``weights``, a weights file for ``name_or_path``'s architecture (the authors'
    T0-small): named by the file, ``base`` the checkpoint, ``weights`` the first 16 hex digits of the
    file's sha256, ``tokenizer`` the base's tokenizer (``base_tokenizer_digest``: it tokenizes every key
    text, and the file does not name it). A local folder is read as files (``config.json`` as JSON, the weights' remembered
    digests): neither torch nor transformers is imported. Refuses (``ValueError``) a config with
    neither ``d_model`` nor ``hidden_size`` and a checkpoint whose weights cannot be identified."""
    name = str(name_or_path)
    config = read_config(name, revision)
    dim = config.get("d_model") or config.get("hidden_size")
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise SettingError(f"{name}: its config has no output size (d_model or hidden_size); not an encoder checkpoint")
    identity = {"name": display_name(name), "config_hash": checkpoint_config_hash(config), "dim": dim}
    if weights is None:
        identity["weights"] = weights_digest(name, revision=revision)
    else:
        identity = {**identity, "name": Path(weights).name, "base": display_name(name),
                    "weights": file_sha256(weights)[:16], "tokenizer": base_tokenizer_digest(name, revision)}
    return identity if revision is None else {**identity, "revision": revision}
