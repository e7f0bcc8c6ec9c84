"""harness/cli/: one thin module per command group over one error base. Every command's help works,
every exception class of the project derives from RosprError (the CLI tells a refusal from a bug by
type alone), no command module re-catches our errors, and `rospr bench` reaches the benchmarks only
through the rospr-bench console entry (the harness imports nothing of benchmarks/)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rospr_harness.cli import app
from rospr.errors import RosprError
from helpers import REPO

PACKAGES = {"harness": "rospr_harness", "rospr": "rospr", "export": "rospr_export", "benchmarks": "rospr_bench"}
COMMANDS = ["run", "plan", "tiny", "tasks", "schema", "verify", "compare", "export", "export-env", "serve", "tune", "bench",
            "data", "data status", "data synth", "data check-hub", "data fetch", "bank", "bank import-peft",
            "bank export-peft", "bank rekey", "library", "library build"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_help(command):
    res = CliRunner().invoke(app, [*command.split(), "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and "error:" not in res.output


def _exception_classes():
    """(module name, class name) of every class of the project whose bases name an exception."""
    for folder, package in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            if "results" in path.parts or path.name.startswith("test"):
                continue
            tree = ast.parse(path.read_text())
            rel = path.relative_to(REPO / folder).with_suffix("")
            module = ".".join([package, *rel.parts]).removesuffix(".__init__")
            for node in tree.body:
                bases = [ast.unparse(b) for b in getattr(node, "bases", [])]
                if isinstance(node, ast.ClassDef) and any(b.endswith(("Error", "Exception")) for b in bases):
                    yield module, node.name


CLASSES = sorted(set(_exception_classes()))


def test_the_project_has_error_classes_to_check():
    assert len(CLASSES) >= 15, CLASSES


@pytest.mark.parametrize("module, name", CLASSES)
def test_every_error_class_derives_from_the_one_base(module, name):
    cls = getattr(importlib.import_module(module), name)
    if not issubclass(cls, BaseException) or name.startswith("_"):  # a private signal, never shown to users
        return
    assert issubclass(cls, RosprError), f"{module}.{name}: derive it from rospr.errors.RosprError"


COMMAND_MODULES = ["run", "data", "bank", "check", "models", "serve", "bench"]


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_no_command_re_catches_our_errors(name):
    """A command calls the library; the group handler prints what it raises. The only catches left
    translate what is not ours (pydantic, the system) or collect problems as lines (verify)."""
    tree = ast.parse((REPO / "harness" / "cli" / f"{name}.py").read_text())
    allowed = {"ValidationError", "OSError", "KeyboardInterrupt", "ValueError", "ExportIntegrityError"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler):
            caught = node.type
            names = [ast.unparse(e) for e in (caught.elts if isinstance(caught, ast.Tuple) else [caught])]
            assert len(names) == 1 and names[0] in allowed, (name, node.lineno, names)
    assert "_fail(" not in (REPO / "harness" / "cli" / f"{name}.py").read_text()


def test_harness_imports_nothing_of_benchmarks():
    for path in (REPO / "harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("rospr_bench"), path
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("rospr_bench") for a in node.names), path
    code = "import sys, rospr_harness.cli; print(sorted(m for m in sys.modules if m.startswith('rospr_bench')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]"


def test_bench_goes_through_the_rospr_bench_console_entry():
    from rospr_harness.cli.bench import bench_entry
    from rospr_bench import entry

    assert bench_entry() is entry.main


def test_rospr_bench_takes_the_model_flag_of_rospr_bench_as_its_own(monkeypatch):
    from rospr_bench import entry

    seen = {}
    monkeypatch.setattr(entry, "run", lambda name, args: seen.update({name: args}))
    assert entry.main(["latency", "--model", "small", "--repeats", "2"]) == 0
    assert entry.main(["fullrun", "--model", "small"]) == 0
    assert seen == {"latency": ["--size", "small", "--repeats", "2"], "fullrun": ["--model", "small"]}


def test_the_command_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "Usage" in out.stdout, out.stderr


def test_no_top_level_package_named_harness():
    """The harness installs under our own name (rospr_harness; the folder stays harness/): an unrelated
    distribution on the package registry is called `harness`. Asked from a folder outside the clone, the
    installed distribution provides rospr_harness and nothing importable as `harness`."""
    code = ("import importlib.util, importlib.metadata as md; "
            "print(importlib.util.find_spec('harness') is None, importlib.util.find_spec('rospr_harness') is not None, "
            "md.distribution('rospr').entry_points.select(group='console_scripts')['rospr'].value)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True).stdout
    assert out.split() == ["True", "True", "rospr_harness.cli:main"]


def test_a_wheel_carries_the_committed_model_repo():
    """`rospr export` copies model_repo/'s Triton configs and the python twin's model.py: pyproject maps the
    folder into the package (rospr_export.model_repo) and its package data covers every committed file."""
    import fnmatch
    import tomllib

    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "rospr_export.model_repo" in tool["packages"]
    assert tool["package-dir"]["rospr_export.model_repo"] == "model_repo"
    globs = tool["package-data"]["rospr_export.model_repo"]
    files = [str(p.relative_to(REPO / "model_repo")) for p in (REPO / "model_repo").rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert "python_twin/model.py" in files and len(files) >= 5
    for f in files:
        assert any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs), f
