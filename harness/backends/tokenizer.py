"""The tokenizer of a checkpoint, without transformers when the checkpoint is local.

``load_tokenizer`` reads a local checkpoint's ``tokenizer.json`` with the ``tokenizers`` library
(what transformers' fast tokenizers run underneath), so a run on a cached export imports neither
transformers nor, through it, torch (``import transformers`` imports torch when it is installed).
``FastTokenizer`` offers what the harness calls on a tokenizer: ``tok(texts, add_special_tokens=...)
["input_ids"]``, ``eos_token_id`` and ``pad_token_id``; it gives the ids transformers' fast tokenizer
gives for the same files (tests/test_fast_start.py compares them). A hub name, a folder without
``tokenizer.json``, or a tokenizer config that asks transformers to change the tokenizer it loads
(``add_prefix_space``: rebuilt from the slow tokenizer; tokens added outside tokenizer.json) gets
``AutoTokenizer`` as before.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

log = logging.getLogger(__name__)


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` with the special token ids of its checkpoint."""

    def __init__(self, tokenizer, eos_token_id: int | None, pad_token_id: int | None) -> None:
        self.tokenizer, self.eos_token_id, self.pad_token_id = tokenizer, eos_token_id, pad_token_id

    def __call__(self, text: str | Sequence[str], add_special_tokens: bool = True) -> dict[str, Any]:
        """``{"input_ids": ids}``: a list of ids for one text, a list of lists for a list of texts."""
        if isinstance(text, str):
            return {"input_ids": self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}
        encs = self.tokenizer.encode_batch(list(text), add_special_tokens=add_special_tokens)
        return {"input_ids": [e.ids for e in encs]}


def _token(value) -> str | None:
    """A special token as tokenizer_config.json / special_tokens_map.json write it (text or object)."""
    return value.get("content") if isinstance(value, dict) else value


def fast_tokenizer(folder: Path) -> FastTokenizer | None:
    """The ``FastTokenizer`` of a local checkpoint, or None where transformers would load something
    else than ``tokenizer.json`` as written (see the module docstring)."""
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the config wins, as in transformers
        f = folder / name
        if f.is_file():
            config.update(json.loads(f.read_text(encoding="utf-8")))
    if config.get("add_prefix_space") is not None:  # transformers would rebuild it from the slow tokenizer
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
    return FastTokenizer(tok, ids["eos_token"], ids["pad_token"])


def load_tokenizer(name_or_path: str | Path, revision: str | None = None):
    """The tokenizer of a checkpoint: ``FastTokenizer`` for a local one that allows it, else
    transformers' ``AutoTokenizer`` (hub names at ``revision``, other layouts). Raises what they raise."""
    folder = Path(name_or_path)
    if folder.is_dir():
        tok = fast_tokenizer(folder)
        if tok is not None:
            return tok
        log.debug("%s: tokenizer loaded through transformers", folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name_or_path), revision=revision)
