"""Class 3 (issue 32): parsing is bounded. Every YAML a user writes goes through one budgeted loader
and every JSON through ``strict_loads``: alias bombs, deep nesting, cycles, duplicate keys and
oversized or non-UTF-8 files are refused with our error naming the file, never expanded, never a
``RecursionError`` or a crash."""

from __future__ import annotations

import json

import pytest

from rospr.artifacts import ArtifactError, json_document, json_lines
from rospr.parsing import MAX_DEPTH, load_yaml, read_text
from rospr_harness.config import ConfigError, load_config
from rospr_harness.tasks import TaskError
from rospr_harness.tasks.catalog import load_table
from rospr_harness.tasks.templates import load_templates_file


class Refused(ValueError):
    pass


def laughs(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level a list of ``width`` aliases of the level before."""
    lines = ["l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def wide_bomb() -> str:
    """Another shape: one list of 200 scalars, aliased 10,000 times in one flow list (quadratic)."""
    return "a: &a [" + ", ".join(["x"] * 200) + "]\nb: [" + ", ".join(["*a"] * 10_000) + "]\n"


BOMBS = {"billion laughs": laughs(), "wide aliases": wide_bomb(),
         "block-style laughs": "".join(
             f"l{i}: &l{i}\n" + "".join(f"  - *l{i - 1}\n" if i else "  - lol\n" for _ in range(9)) for i in range(9))}


@pytest.mark.parametrize("name", list(BOMBS))
def test_class3_an_alias_bomb_is_refused_before_it_expands(name):
    text = BOMBS[name]
    assert len(text) < 100_000
    with pytest.raises(Refused, match=r"doc.yaml:\d+: more than \d+ values once its aliases are expanded"):
        load_yaml(text, "doc.yaml", Refused, "fix it")


def test_class3_aliases_within_the_budget_are_read_as_yaml_reads_them():
    assert load_yaml("a: &x {k: [1, 2]}\nb: *x\nc:\n  <<: *x\n  j: 3\n", "doc.yaml", Refused, "fix") == {
        "a": {"k": [1, 2]}, "b": {"k": [1, 2]}, "c": {"k": [1, 2], "j": 3}}


@pytest.mark.parametrize("text", ["a: &r [1, *r]\n", "a: &r {k: *r}\n"])
def test_class3_a_recursive_alias_is_refused(text):
    with pytest.raises(Refused, match=r"doc.yaml:1: alias \*r refers to a node that holds it"):
        load_yaml(text, "doc.yaml", Refused, "fix")


@pytest.mark.parametrize("text", ["[" * 20_000 + "]" * 20_000, "{a: " * 20_000 + "1" + "}" * 20_000,
                                  "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * 200 + "x: 1\n",
                                  "- " * 300_000 + "x\n"])
def test_class3_deep_nesting_is_our_error_not_a_crash(text):
    # ours, or libyaml's own flow-depth limit (0.2.5 and later) where its scanner meets it first
    with pytest.raises(Refused, match=rf"(?s)^doc.yaml:(\d+: nested more than {MAX_DEPTH} deep| not valid YAML: .*nesting)"):
        load_yaml(text, "doc.yaml", Refused, "fix")


def test_class3_nesting_within_the_budget_is_read():
    depth = MAX_DEPTH - 1
    assert json.dumps(load_yaml("[" * depth + "]" * depth, "doc.yaml", Refused, "fix")) == "[" * depth + "]" * depth


@pytest.mark.parametrize("text", ["[" * 20_000 + "]" * 20_000, '{"a": ' * 20_000 + "1" + "}" * 20_000])
def test_class3_deep_json_is_our_error(text, tmp_path):
    with pytest.raises(ArtifactError, match=r"task.json: nested deeper than the JSON reader allows.*; fix it"):
        json_document(text, "task.json", ArtifactError, "fix it")
    with pytest.raises(ArtifactError, match=r"rows.jsonl: nested deeper"):
        json_lines('{"ok": 1}\n' + text + "\n", "rows.jsonl", ArtifactError, "fix it")


def test_class3_a_config_bomb_deep_config_and_duplicate_key_name_the_file(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(laughs() + "tasks: [rte]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{cfg}:\d+: more than .* aliases are expanded"):
        load_config(cfg)
    cfg.write_text("tasks: " + "[" * 20_000 + "]" * 20_000 + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"(?s)^{cfg}:(1: nested more than| not valid YAML: .*nesting)"):
        load_config(cfg)
    cfg.write_text("tasks: [rte]\nscoring:\n  batch_size: 4\n  batch_size: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"{cfg}:4: key 'batch_size' is given twice in one mapping \(first at line 3\)"):
        load_config(cfg)
    with pytest.raises(ConfigError, match=r"^--set scoring\.x=.*: more than .* aliases are expanded"):
        load_config(None, overrides=["scoring.x={" + laughs().strip().replace("\n", ", ") + "}"], tree={})


def test_class3_an_oversized_or_non_utf8_config_is_refused_unread(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    with pytest.raises(ConfigError, match=rf"{cfg}: \d+ bytes, more than the 1048576"):
        load_config(cfg)
    cfg.write_bytes(b"tasks: [rte]\nname: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"{cfg}:2: not UTF-8 text \(byte 0xe9\)"):
        load_config(cfg)


def _templates(tmp_path, body: str):
    path = tmp_path / "toy" / "templates.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("dataset: toy\ntemplates:\n" + body, encoding="utf-8")
    return path


def _template(tid: str, name: str, extra: str = "") -> str:
    return (f"  {tid}: !Template\n    id: {tid}\n    name: {name}\n    jinja: '{{{{premise}}}} ||| x'\n{extra}"
            "    answer_choices: null\n")


def test_class3_templates_yaml_refuses_a_template_id_or_a_jinja_key_given_twice(tmp_path):
    path = _templates(tmp_path, _template("a1", "first") + _template("a1", "second"))
    with pytest.raises(TaskError, match=rf"{path}:\d+: key 'a1' is given twice in one mapping"):
        load_templates_file(path)
    path = _templates(tmp_path, _template("a1", "first", extra="    jinja: 'other ||| y'\n"))
    with pytest.raises(TaskError, match=rf"{path}:\d+: key 'jinja' is given twice in one mapping"):
        load_templates_file(path)
    path = _templates(tmp_path, _template("a1", "first") + "  b2: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(TaskError, match=rf"(?s)^{path}:(\d+: nested more than| not valid YAML: .*nesting)"):
        load_templates_file(path)


def test_class3_a_templates_yaml_bomb_is_refused(tmp_path):
    path = tmp_path / "toy" / "templates.yaml"
    path.parent.mkdir()
    path.write_text(laughs() + "dataset: toy\ntemplates: {}\n", encoding="utf-8")
    with pytest.raises(TaskError, match=rf"{path}:\d+: more than .* aliases are expanded"):
        load_templates_file(path)


def test_class3_the_dataset_catalog_is_read_within_the_budget(tmp_path):
    path = tmp_path / "datasets.yaml"
    path.write_text(laughs(), encoding="utf-8")
    with pytest.raises(TaskError, match=rf"{path}:\d+: more than"):
        load_table(path)


def test_class3_read_text_refuses_a_large_file_before_reading_it(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:  # sparse: 3 GB announced, nothing written
        fh.truncate(3 << 30)
    with pytest.raises(Refused, match=rf"{path}: 3221225472 bytes, more than the 1000"):
        read_text(path, Refused, "fix", max_bytes=1000)


def test_class3_the_loader_builds_no_python_object():
    with pytest.raises(Refused, match="not valid YAML"):
        load_yaml("a: !!python/object/apply:os.system ['true']\n", "doc.yaml", Refused, "fix")
