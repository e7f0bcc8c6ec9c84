"""One tokenization whatever the transformers version: a checkpoint's ids, and what decides them.

For a T5-family checkpoint (one that ships sentencepiece's ``spiece.model``: T5, T5 v1.1, T0, mT5) the
ids are sentencepiece's own encoding of the text, with the checkpoint's EOS appended where special tokens
are asked for. transformers 4 and 5 do not agree with each other here: their tokenizers are rebuilt
from ``tokenizer.json`` or from ``spiece.model`` depending on the version, and a ``tokenizer.json``
converted with ``legacy=False`` drops the ``▁`` of the first word, so "Hello" was ``H`` under one and
``▁H`` under the other. sentencepiece is the reference both were meant to reproduce, and is one thing.

Other checkpoints (no ``spiece.model``) keep their ``tokenizer.json`` read by the ``tokenizers`` library,
else transformers' ``AutoTokenizer``.

``tokenizer_digest`` names what decides the ids (the kind, the model file's sha256, the special ids):
every artifact whose bytes depend on ids (prompt bank, library, export, unit cache) holds it in its key.

Known difference from transformers, written down: special-token text inside an input (a literal
``</s>``) is encoded by sentencepiece as characters, where transformers maps it to the EOS id.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

from rospr.canonical import digest_bytes, sha256_file, sha256_text
from rospr.errors import SettingError
from rospr.parsing import read_json

log = logging.getLogger(__name__)

SPIECE = "spiece.model"
# the rule that turns a checkpoint's files into ids; part of every checkpoint digest (rospr.identity)
TOKENIZATION = "rospr-tokenization-1: sentencepiece where spiece.model is, else tokenizer.json, else transformers"


class SentencePieceTokenizer:
    """sentencepiece's encoding with a checkpoint's special ids: ``tok(texts, add_special_tokens=...)
    ["input_ids"]``, ``eos_token_id``, ``pad_token_id``, ``digest`` (see the module docstring)."""

    kind = "sentencepiece"

    def __init__(self, model_file: Path, eos_token_id: int, pad_token_id: int) -> None:
        import sentencepiece as spm

        self.model_file = Path(model_file)
        data = self.model_file.read_bytes()
        self.processor = spm.SentencePieceProcessor(model_proto=data)
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.digest = _digest(self.kind, digest_bytes(data), eos_token_id, pad_token_id)

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        """``{"input_ids": ids}``: a list of ids for one text, a list of lists for a list of texts."""
        single = isinstance(text, str)
        ids = self.processor.encode([text] if single else list(text), out_type=int)
        if add_special_tokens:
            ids = [row + [self.eos_token_id] for row in ids]
        return {"input_ids": ids[0] if single else ids}

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.processor.id_to_piece(int(i)) for i in ids]

    def decode(self, ids: int | Sequence[int]) -> str:
        """The text of ``ids``, special tokens kept as their pieces (``</s>``), as transformers decodes."""
        out, run = [], []
        for i in [ids] if isinstance(ids, int) else list(ids):
            if self.processor.is_control(int(i)) or self.processor.is_unknown(int(i)):
                out.append(self.processor.decode(run) + self.processor.id_to_piece(int(i)))
                run = []
            else:
                run.append(int(i))
        return "".join(out) + self.processor.decode(run)

    def __len__(self) -> int:
        return self.processor.get_piece_size()


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` read from a checkpoint's ``tokenizer.json``, with its special ids."""

    kind = "tokenizer.json"

    def __init__(self, tokenizer, eos_token_id: int | None, pad_token_id: int | None, file_sha256: str) -> None:
        self.tokenizer, self.eos_token_id, self.pad_token_id = tokenizer, eos_token_id, pad_token_id
        self.digest = _digest(self.kind, file_sha256, eos_token_id, pad_token_id)

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        if isinstance(text, str):
            return {"input_ids": self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}
        encs = self.tokenizer.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encs]}

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def decode(self, ids: int | Sequence[int]) -> str:
        return self.tokenizer.decode([ids] if isinstance(ids, int) else list(ids), skip_special_tokens=False)

    def __len__(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)


def _digest(kind: str, file_sha256: str, eos: int | None, pad: int | None) -> str:
    text = json.dumps({"kind": kind, "file": file_sha256, "eos": eos, "pad": pad}, sort_keys=True)
    return sha256_text(text)[:16]


def _token(value) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it (text or object)."""
    return value.get("content") if isinstance(value, dict) else value


def _special_config(folder: Path) -> dict:
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
        f = folder / name
        if f.is_file():
            config.update(read_json(f, SettingError, "restore the checkpoint's tokenizer files"))
    return config


def sentencepiece_tokenizer(folder: Path) -> SentencePieceTokenizer | None:
    """The ``SentencePieceTokenizer`` of a checkpoint folder holding ``spiece.model`` (``None`` without).
    The special ids are the configured EOS and pad tokens' pieces (T5: ``</s>`` 1, ``<pad>`` 0), else the
    model file's own. Refuses (``ValueError``) a configured special token the model file does not have."""
    path = Path(folder) / SPIECE
    if not path.is_file():
        return None
    tok = SentencePieceTokenizer(path, -1, -1)
    config = _special_config(Path(folder))
    ids = {}
    for role, own in (("eos_token", tok.processor.eos_id()), ("pad_token", tok.processor.pad_id())):
        token = _token(config.get(role))
        if token is None:
            ids[role] = own
            continue
        piece = tok.processor.piece_to_id(token)
        if piece == tok.processor.unk_id() and token != tok.processor.id_to_piece(piece):
            raise ValueError(f"{folder}: {role} {token!r} is not a piece of {path.name}")
        ids[role] = piece
    return SentencePieceTokenizer(path, ids["eos_token"], ids["pad_token"])


def fast_tokenizer(folder: Path) -> FastTokenizer | None:
    """The ``FastTokenizer`` of a local checkpoint, or None where transformers would load something else
    than ``tokenizer.json`` as written (``add_prefix_space``: rebuilt from the slow tokenizer; tokens
    added outside tokenizer.json; special tokens it does not hold)."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    config = _special_config(Path(folder))
    if config.get("add_prefix_space") is not None:
        return None
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    vocab = tok.get_vocab(with_added_tokens=True)
    added = [_token(t) for t in (config.get("added_tokens_decoder") or {}).values()]
    if any(t not in vocab for t in added):
        return None
    ids = {}
    for role in ("eos_token", "pad_token"):
        token = _token(config.get(role))
        ids[role] = None if token is None else tok.token_to_id(token)
        if token is not None and ids[role] is None:
            return None
    return FastTokenizer(tok, ids["eos_token"], ids["pad_token"], sha256_file(path))


def _hub_folder(name: str, revision: str | None) -> Path | None:
    """The local folder of a hub checkpoint's tokenizer files (downloaded, or from the hub cache)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    found = None
    for filename in (SPIECE, "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        try:
            found = Path(hf_hub_download(name, filename, revision=revision)).parent
        except Exception:  # noqa: BLE001 - a file the repository lacks, or no hub: the others decide
            continue
    return found


def load_tokenizer(name_or_path: str | Path, revision: str | None = None):
    """The tokenizer of a checkpoint (local folder or hub name at ``revision``): sentencepiece's where it
    ships ``spiece.model``, else its ``tokenizer.json`` (``FastTokenizer``), else transformers'
    ``AutoTokenizer``. Raises what they raise (``ValueError``, ``OSError``)."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        folder = _hub_folder(str(name_or_path), revision) or folder
    if folder.is_dir():
        tok = sentencepiece_tokenizer(folder) or fast_tokenizer(folder)
        if tok is not None:
            return tok
        log.debug("%s: tokenizer loaded through transformers", folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)


def tokenizer_digest(tokenizer) -> str:
    """What decides a tokenizer's ids, as 16 hex digits: ours carry it; a transformers tokenizer is named
    by its class, vocabulary and special ids."""
    digest = getattr(tokenizer, "digest", None)
    if isinstance(digest, str):
        return digest
    vocab = sorted(tokenizer.get_vocab().items())
    text = json.dumps({"class": type(tokenizer).__name__, "vocab": vocab,
                       "eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id})
    return sha256_text(text)[:16]
