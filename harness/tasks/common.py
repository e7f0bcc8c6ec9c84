"""Helpers shared by the task sources: content hashes and local row files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

from rospr_harness.tasks.base import TaskError
from rospr.artifacts import json_document, json_lines
from rospr.canonical import digest_chunks, row_text

log = logging.getLogger(__name__)


def content_hash(template_text: str, rows: Iterable[Mapping[str, Any] | Any]) -> str:
    """sha256 (hex) over ``template_text`` and the JSON text (``rospr.canonical.row_text``) of every row, in order."""
    def chunks():  # streamed: a long row list is never joined in memory
        yield template_text
        for row in rows:
            yield "\n"
            yield row_text(row)

    return digest_chunks(chunks())


def read_rows(path: Path) -> list[dict]:
    """Rows of a ``.jsonl`` file (one JSON object a line) or a ``.json`` file (a list of objects).

    Refuses (``TaskError`` naming the file and line/position): invalid JSON, or a row that is not
    a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TaskError(f"{path}: cannot read rows: {e}") from e
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not UTF-8 text (byte {e.start}); write the rows as UTF-8 JSON") from None
    rows: list[dict] = []
    if path.suffix == ".jsonl":
        rows = json_lines(text, path, TaskError, "write one JSON object a line")
    else:
        data = json_document(text, path, TaskError, "write a list of row objects", expect=list)
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise TaskError(f"{path}: item {i} is a {type(row).__name__}, not a JSON object")
            rows.append(row)
    log.debug("read %d rows from %s", len(rows), path)
    return rows
