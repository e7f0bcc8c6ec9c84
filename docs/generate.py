"""Regenerate the generated parts of the documentation, or check that they are current.

    python -m docs.generate          # rewrite every generated block in README.md and docs/*.md
    python -m docs.generate --check  # exit 1, naming each stale block, when one differs

Two kinds of generated text sit between HTML comments, so a reader of the rendered page sees only the
text and a writer sees where it comes from:

- ``<!-- generated: schema -->`` ... ``<!-- /generated -->``: the results file's schema as tables, one
  per object, from the output of ``rospr schema`` (run in process).
- ``<!-- figure FILE PATH FORMAT -->`` VALUE ``<!-- /figure -->``: one measured figure, read from
  ``benchmarks/results/FILE`` at ``PATH`` (keys and list indices joined by dots) and written with the
  Python format spec ``FORMAT`` (``.2f``, ``.0f``...). A figure is never typed by hand.

``tests/unit/test_docs.py`` fails when a block differs from what this writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SCHEMA_BLOCK = re.compile(r"(<!-- generated: schema -->\n)(.*?)(<!-- /generated -->)", re.S)
FIGURE = re.compile(r"(<!-- figure (\S+) (\S+) (\S+) -->)(.*?)(<!-- /figure -->)", re.S)


def doc_files(root: Path = ROOT) -> list[Path]:
    """The README and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def lookup(document: Any, path: str) -> Any:
    """The value at ``path`` (dot-separated keys, integers index lists). ``KeyError`` names the part
    that is missing."""
    value = document
    for part in path.split("."):
        if isinstance(value, list):
            if not part.isdigit() or int(part) >= len(value):
                raise KeyError(f"{path}: no item {part!r}")
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"{path}: no key {part!r}")
    return value


def figure(results: Path, file: str, path: str, spec: str) -> str:
    """One figure of ``results/file`` formatted with ``spec``."""
    document = json.loads((results / file).read_text())
    return format(lookup(document, path), spec)


def fill_figures(text: str, results: Path = RESULTS) -> str:
    """``text`` with every figure block holding its value from the results files."""
    return FIGURE.sub(lambda m: m[1] + figure(results, m[2], m[3], m[4]) + m[6], text)


# ---------------------------------------------------------------------------------------------
# the results schema
# ---------------------------------------------------------------------------------------------

def schema_json() -> dict:
    """What ``rospr schema`` prints, parsed (the command run in process)."""
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    out = CliRunner().invoke(app, ["schema"])
    if out.exit_code != 0:
        raise RuntimeError(f"rospr schema exited {out.exit_code}: {out.output}")
    return json.loads(out.stdout)


def type_of(prop: dict) -> str:
    """A JSON-schema property's type in a few words: ``integer``, ``list of Unit``, ``string or null``."""
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " or ".join(dict.fromkeys(type_of(p) for p in prop["anyOf"]))
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {type_of(prop.get('items', {}))}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of {type_of(prop['additionalProperties'])}"
    return kind


def one_line(text: str) -> str:
    """Text fit for a table cell: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def object_table(name: str, body: dict) -> list[str]:
    """The lines of one object's table: field, type, required, description."""
    lines = [f"**{name}**" + (f": {one_line(body['description'])}" if body.get("description") else ""), "",
             "| field | type | required | description |", "| --- | --- | --- | --- |"]
    required = set(body.get("required", ()))
    for field, prop in body.get("properties", {}).items():
        lines.append(f"| `{field}` | {one_line(type_of(prop))} | {'yes' if field in required else ''} | "
                     f"{one_line(prop.get('description', ''))} |")
    return lines + [""]


def schema_markdown(schema: dict) -> str:
    """The schema as markdown: the top object first, then each definition by name."""
    lines = object_table(schema.get("title", "results.json"), schema)
    for name, body in sorted(schema.get("$defs", {}).items()):
        if body.get("type") == "object" or "properties" in body:
            lines += object_table(name, body)
        else:
            lines += [f"**{name}**: {one_line(type_of(body))}" + (
                f". {one_line(body['description'])}" if body.get("description") else ""), ""]
    return "\n".join(lines)


def fill_schema(text: str, schema_text: Callable[[], str]) -> str:
    """``text`` with its schema block (if any) rewritten."""
    if not SCHEMA_BLOCK.search(text):
        return text
    body = schema_text()
    return SCHEMA_BLOCK.sub(lambda m: m[1] + body + m[3], text)


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------

def generated(text: str, results: Path = RESULTS, schema_text: Callable[[], str] | None = None) -> str:
    """``text`` with every generated block rewritten."""
    schema_text = schema_text or (lambda: schema_markdown(schema_json()))
    return fill_schema(fill_figures(text, results), schema_text)


def stale(files: list[Path], results: Path = RESULTS) -> list[Path]:
    """The files whose generated blocks differ from what ``generated`` writes."""
    cache: dict[str, str] = {}

    def schema_text() -> str:
        if "s" not in cache:
            cache["s"] = schema_markdown(schema_json())
        return cache["s"]

    return [f for f in files if generated(f.read_text(), results, schema_text) != f.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a block is stale")
    args = parser.parse_args(argv)
    files = stale(doc_files())
    if args.check:
        for f in files:
            print(f"{f.relative_to(ROOT)}: generated text is stale; run python -m docs.generate")
        return 1 if files else 0
    for f in files:
        f.write_text(generated(f.read_text()))
        print(f"rewrote {f.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
