"""Reading what users and runs supply, within budgets: the one reader of text files and the one YAML
loader of every YAML a user can write (configs, ``templates.yaml``, the dataset catalog).

Budgets, each refused with the caller's error class naming the file (and line) and the fix:

- a text file (``read_text``): at most ``max_bytes`` (a larger file is refused before it is read),
  and UTF-8 (a bad byte is refused naming the file, its line and the byte, not as a bare
  ``UnicodeDecodeError``);
- YAML (``load_yaml``): plain data only (a safe loader, no Python object), each key once per mapping
  (YAML would keep the last value silently), nesting at most ``MAX_DEPTH`` deep, and at most
  ``MAX_NODES`` nodes once every alias is expanded. The expanded size is counted while the document is
  composed, node by node, before anything is built from it: a "billion laughs" of one kilobyte, whose
  nine aliases of nine aliases would expand to gigabytes when the tree is copied or written as JSON,
  is refused after a few hundred nodes, and an alias to a node that holds it (a cycle) is refused too.
  Events come from libyaml where PyYAML has it; the nodes are composed here, in Python, because
  libyaml's composer recurses without a guard and crashes the interpreter on deep nesting.

JSON's budget is ``rospr.artifacts.strict_loads``'s: each key once, and nesting deeper than the
interpreter parses refused as the caller's error, not as ``RecursionError``.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent
from yaml.resolver import Resolver

MAX_DEPTH = 100  # nesting of collections; real configs and templates nest fewer than ten deep
MAX_NODES = 1_000_000  # nodes with every alias expanded; the largest catalog file has under 50,000
MAX_TEXT_BYTES = 64 << 20  # a config, a templates.yaml or a manifest; BIG-bench's largest task.json is ~20 MB


def read_text(path: str | Path, error: type[Exception], fix: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of the file ``path``. Refuses (``error``, naming the file and ``fix``) a file
    over ``max_bytes`` (unread) and bytes that are not UTF-8 (naming the line and the byte); an
    ``OSError`` (missing, unreadable) propagates for the caller to word."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        raw = fh.read(max_bytes + 1)
    if max(size, len(raw)) > max_bytes:
        raise error(f"{path}: {max(size, len(raw))} bytes, more than the {max_bytes} this file may have; {fix}")
    return decode_utf8(raw, path, error, fix)


def decode_utf8(raw: bytes, where: str | Path, error: type[Exception], fix: str) -> str:
    """``raw`` decoded as UTF-8; refuses (``error``) a bad byte, naming ``where``, its line and the byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{where}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); {fix}") from None


try:  # libyaml's parser where PyYAML was built with it (about 10x faster)
    from yaml.cyaml import CParser

    _Parser: tuple[type, ...] = (CParser,)
except ImportError:
    _Parser = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)


class BudgetLoader(Composer, *_Parser, SafeConstructor, Resolver):  # type: ignore[misc]
    """A YAML safe loader within the module's budgets. ``where`` names the document in errors
    (``one_line``: a document of one line, e.g. a ``--set`` value, named without a line number);
    ``error`` is the class it refuses with. Subclasses add constructors (tags) as ``SafeLoader``'s do."""

    max_depth = MAX_DEPTH
    max_nodes = MAX_NODES

    def __init__(self, text: str, where: str, error: type[Exception], one_line: bool = False) -> None:
        if len(_Parser) == 1:
            _Parser[0].__init__(self, text)
        else:
            for part in _Parser:
                part.__init__(self, *((text,) if part is yaml.reader.Reader else ()))
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.where, self.error, self.one_line = where, error, one_line
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its node count with aliases expanded

    def at(self, node_or_mark: Any) -> str:
        """``where:line`` of a node or a mark (``where`` alone for a one-line document)."""
        mark = getattr(node_or_mark, "start_mark", node_or_mark)
        return self.where if self.one_line or mark is None else f"{self.where}:{mark.line + 1}"

    def compose_node(self, parent, index):
        if self.check_event(AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise self.error(f"{self.at(event)}: alias *{event.anchor} refers to a node that holds it (a "
                                 "structure without end); write the value out")
            return node
        if self._depth >= self.max_depth:
            raise self.error(f"{self.at(self.peek_event())}: nested more than {self.max_depth} deep; "
                             "flatten the document")
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children = node.value if isinstance(node.value, list) else []
        flat = [c for child in children for c in (child if isinstance(child, tuple) else (child,))]
        size = 1 + sum(self._sizes[id(c)] for c in flat)
        if size > self.max_nodes:  # an alias counts the whole node it repeats, every time it is used
            raise self.error(f"{self.at(node)}: more than {self.max_nodes} values once its aliases are "
                             "expanded (an alias bomb?); write the document without nested aliases")
        self._sizes[id(node)] = size
        return node

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: its keys may be given again
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                raise self.error(f"{self.at(key_node)}: key {key!r} is given twice in one mapping (first at line "
                                 f"{seen[key].start_mark.line + 1}); keep one")
            if isinstance(key, typing.Hashable):
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, where: str, error: type[Exception], fix: str,
              loader: type[BudgetLoader] = BudgetLoader, one_line: bool = False) -> Any:
    """The data of one YAML document ``text`` (``where`` names it). Refuses (``error`` naming ``where``,
    the line and ``fix``): malformed YAML, a key given twice in one mapping, nesting deeper than
    ``MAX_DEPTH``, more than ``MAX_NODES`` values with aliases expanded, a recursive alias, and what
    ``loader``'s own constructors refuse."""
    parser = loader(text, where, error, one_line)
    try:
        return parser.get_single_data()
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML: {exc}; {fix}") from None
    finally:
        parser.dispose()


def read_json(path: str | Path, error: type[Exception], fix: str, expect: type = dict,
              max_bytes: int = MAX_TEXT_BYTES) -> Any:
    """The JSON ``expect`` (dict or list) of the file ``path``: ``read_text`` (size, UTF-8, naming the
    file) then ``rospr.artifacts.json_document`` (valid JSON, each key once, bounded depth, the type)."""
    from rospr.artifacts import json_document

    return json_document(read_text(path, error, fix, max_bytes), path, error, fix, expect)
