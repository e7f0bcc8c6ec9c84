"""Identity and digests: the one place where what a thing *is* becomes a hash.

- ``canonical`` / ``digest_json``: canonical JSON (sorted keys, compact separators, UTF-8, no NaN)
  and its sha256. Every content address of the project (prompt train keys, bank and library hashes,
  manifest seals, unit-cache keys, the run config's hash) is ``digest_json`` of a plain dict.
- ``checkpoint_config_hash``: a model's identity from its ``config.json`` (volatile keys dropped).
  Its encoding (``json.dumps(sort_keys=True, default=str)``) predates ``canonical`` and is kept as
  it is: the value is stored in every prompt bank, library and export already on disk, and another
  encoding would make each of them "another backbone".
- ``ModelIdentity`` (a loaded scorer backbone) and ``retriever_identity`` (an encoder checkpoint,
  from its config alone) are built on it; the unit cache's part of a scorer is ``harness.cache``'s.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# keys of a checkpoint config that say where or with what it was saved, not what the model is
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash")


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no whitespace variation): the text that content hashes cover.
    Refuses (``ValueError``) NaN and infinities, (``TypeError``) values that are not JSON."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    """The sha256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest_json(value: Any) -> str:
    """The sha256 hex digest of ``value``'s canonical JSON (``canonical``)."""
    return sha256_text(canonical(value))


def checkpoint_config_hash(config_dict: dict) -> str:
    """16 hex digits identifying a checkpoint config (``PretrainedConfig.to_dict()``), the volatile
    keys left out. Encoding frozen for the artifacts on disk (see the module docstring)."""
    cfg = {k: v for k, v in config_dict.items() if k not in VOLATILE_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def display_name(name_or_path: str) -> str:
    """How a model is named in identities: a local folder by its last component, a hub id as is."""
    return Path(name_or_path).name if Path(name_or_path).exists() else name_or_path


@dataclass(frozen=True)
class ModelIdentity:
    """What a scorer backbone is, for provenance and keys: name, config hash, sizes."""

    name: str
    config_hash: str
    d_model: int
    vocab_size: int
    n_parameters: int

    def as_dict(self) -> dict:
        return asdict(self)


def backbone_identity(model, name: str) -> ModelIdentity:
    """The identity of a loaded (transformers) encoder-decoder ``model`` loaded from ``name``."""
    return ModelIdentity(
        name=display_name(name),
        config_hash=checkpoint_config_hash(model.config.to_dict()),
        d_model=int(model.config.d_model),
        vocab_size=int(model.config.vocab_size),
        n_parameters=sum(p.numel() for p in model.parameters()),
    )


def retriever_identity(name_or_path: str, revision: str | None = None) -> dict:
    """The retriever's identity from its checkpoint config alone (no weights loaded, so it works for
    any backend): name, config hash, output dimension; ``revision`` pins a hub checkpoint."""
    from transformers import AutoConfig  # heavy: only when an identity is asked for

    name = str(name_or_path)
    config = AutoConfig.from_pretrained(name, revision=revision)
    dim = getattr(config, "d_model", None) or getattr(config, "hidden_size")
    identity = {"name": display_name(name), "config_hash": checkpoint_config_hash(config.to_dict()), "dim": int(dim)}
    return identity if revision is None else {**identity, "revision": revision}  # the commit names the weights
