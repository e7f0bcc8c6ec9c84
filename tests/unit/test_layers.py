"""Imports flow one way between folders. Every import of every module in rospr/, harness/, export/ and
benchmarks/ is read with ``ast`` (function-local ones and relative ``from . import`` included) and
mapped to the folder (package directory) of the module it names; the test fails on any cycle between
folders, naming the cycle and the import lines that make it, and on an import that breaks a layer rule
of docs/architecture.md (``rospr/`` imports nothing of the harness, the export or the benchmarks; the
export imports only ``rospr/``; the tasks know nothing of the runner).

A package's implicit import of its parents (``a.b.c`` runs ``a/__init__.py``) is not an edge: only the
module an import statement names is."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import REPO

# installed name -> folder (pyproject.toml's package-dir)
PACKAGES = {"rospr": "rospr", "rospr_harness": "harness", "rospr_export": "export", "rospr_bench": "benchmarks"}
# (importing folder, imported folder prefix): never allowed, with the reason
FORBIDDEN = [("rospr", "harness", "rospr/ is the method; the harness is built on it"),
             ("rospr", "export", "rospr/ is the method; the export is built on it"),
             ("rospr", "benchmarks", "rospr/ is the method; the benchmarks measure it"),
             ("harness", "benchmarks", "the harness reaches the benchmarks through the rospr-bench entry only"),
             ("export", "harness", "the export imports only rospr/"),
             ("export", "benchmarks", "the export imports only rospr/"),
             ("harness/tasks", "harness/runner", "the tasks know nothing of the runner")]
Edges = dict[tuple[str, str], list[str]]  # (from folder, to folder) -> "file:line: statement"


def modules(root: Path, packages: dict[str, str]) -> dict[str, Path]:
    """Every module of ``packages`` (installed name -> folder under ``root``) by its dotted name."""
    found = {}
    for name, folder in packages.items():
        base = root / folder
        for path in sorted(base.rglob("*.py")):
            parts = [name, *path.relative_to(base).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement may load: a module, or a package and its names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    stem = ".".join(p for p in ((base if node.level else ""), node.module or "") if p)
    return [stem] + [f"{stem}.{alias.name}" for alias in node.names]


def folder_of(name: str, known: dict[str, Path], root: Path) -> str | None:
    """The folder of the module ``name`` names (its longest known prefix), relative to ``root``."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return known[name].parent.relative_to(root).as_posix() if name else None


def folder_imports(root: Path, packages: dict[str, str] = PACKAGES) -> Edges:
    """The imports between different folders of ``packages`` under ``root``, every statement counted."""
    known = modules(root, packages)
    edges: Edges = defaultdict(list)
    for module, path in known.items():
        source = path.relative_to(root).as_posix()
        src = path.parent.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            names = imported_names(node, module, path.name == "__init__.py")
            # `from pkg import mod` loads pkg/mod.py: the most specific name that is a module wins
            targets = {n for n in names[1:] if n in known} or set(names[:1]) if isinstance(node, ast.ImportFrom) \
                else set(names)
            for dst in {folder_of(n, known, root) for n in targets} - {None, src}:
                edges[(src, dst)].append(f"{source}:{node.lineno}: {ast.unparse(node)}")
    return dict(edges)


def folder_cycles(edges: Edges) -> list[list[str]]:
    """One cycle (a folder path back to its start) per strongly connected group of folders."""
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in edges:
        graph[src].add(dst)
    cycles, seen = [], set()
    for start in sorted(graph):
        if start in seen:
            continue
        path = _path_back(graph, start)
        if path:
            cycles.append(path)
            seen.update(path)
    return cycles


def _path_back(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """The shortest folder path from ``start`` back to itself (breadth first), or None."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for folder in frontier:
            for dst in sorted(graph.get(folder, ())):
                if dst == start:
                    path = [folder]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if dst not in came_from:
                    came_from[dst] = folder
                    nxt.append(dst)
        frontier = nxt
    return None


def describe(cycle: list[str], edges: Edges) -> str:
    """The cycle ``a -> b -> a`` and, under each step, the import lines that make it."""
    lines = [" -> ".join(cycle)]
    for src, dst in zip(cycle, cycle[1:]):
        lines += [f"  {src} -> {dst}:"] + [f"    {line}" for line in edges[(src, dst)]]
    return "\n".join(lines)


def broken_rules(edges: Edges) -> list[str]:
    """Every import that a rule of ``FORBIDDEN`` refuses, with the rule's reason."""
    broken = []
    for (src, dst), lines in sorted(edges.items()):
        for importer, imported, why in FORBIDDEN:
            if _within(src, importer) and _within(dst, imported):
                broken += [f"{line}  ({why})" for line in lines]
    return broken


def _within(folder: str, top: str) -> bool:
    """``folder`` is ``top`` or a folder under it."""
    return folder == top or folder.startswith(top + "/")


# -- the repository -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def repo_edges() -> Edges:
    return folder_imports(REPO)


def test_the_walk_sees_function_local_and_relative_imports(repo_edges):
    """The walk is not blind: the function-local imports of the runner and the CLI are edges too."""
    assert any(src == "harness/cli" and dst == "harness/runner" for src, dst in repo_edges)
    assert all(lines for lines in repo_edges.values())


def test_no_import_cycle_between_folders(repo_edges):
    """No cycle at all, none allowed for: a module that closes one moves to a folder of its own."""
    cycles = folder_cycles(repo_edges)
    assert not cycles, "import cycles between folders:\n" + "\n".join(describe(c, repo_edges) for c in cycles)


def test_no_import_breaks_a_layer_rule(repo_edges):
    broken = broken_rules(repo_edges)
    assert not broken, "imports against the layering:\n" + "\n".join(broken)


# -- the check itself, on small trees of its own ---------------------------------------------------------
def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_cycle_through_a_function_local_import_is_found_and_named(tmp_path):
    """``low`` imports ``high`` at module level; ``high`` imports ``low`` inside a function."""
    _tree(tmp_path, {"pkg/__init__.py": "", "pkg/low/__init__.py": "", "pkg/high/__init__.py": "",
                     "pkg/low/a.py": "from pkg.high.b import thing\n",
                     "pkg/high/b.py": "def thing():\n    from ..low import a\n    return a\n"})
    edges = folder_imports(tmp_path, {"pkg": "pkg"})
    assert edges == {("pkg/low", "pkg/high"): ["pkg/low/a.py:1: from pkg.high.b import thing"],
                     ("pkg/high", "pkg/low"): ["pkg/high/b.py:2: from ..low import a"]}
    (cycle,) = folder_cycles(edges)
    assert cycle == ["pkg/high", "pkg/low", "pkg/high"]
    assert describe(cycle, edges) == ("pkg/high -> pkg/low -> pkg/high\n"
                                      "  pkg/high -> pkg/low:\n    pkg/high/b.py:2: from ..low import a\n"
                                      "  pkg/low -> pkg/high:\n    pkg/low/a.py:1: from pkg.high.b import thing")


def test_a_three_folder_cycle_is_found_and_a_one_way_tree_passes(tmp_path):
    _tree(tmp_path, {"pkg/__init__.py": "", "pkg/x/__init__.py": "from pkg import y\n",
                     "pkg/y/__init__.py": "import pkg.z.m\n", "pkg/z/m.py": "", "pkg/top.py": "from .x import *\n"})
    assert folder_cycles(folder_imports(tmp_path, {"pkg": "pkg"})) == []
    (tmp_path / "pkg/z/m.py").write_text("def late():\n    import pkg.x\n")
    assert folder_cycles(folder_imports(tmp_path, {"pkg": "pkg"})) == [["pkg/x", "pkg/y", "pkg/z", "pkg/x"]]


def test_a_forbidden_import_is_named_with_its_rule(tmp_path):
    _tree(tmp_path, {"rospr/__init__.py": "", "rospr/m.py": "def f():\n    from rospr_harness import config\n",
                     "harness/__init__.py": "", "harness/config.py": "import rospr.m\n"})
    edges = folder_imports(tmp_path, {"rospr": "rospr", "rospr_harness": "harness"})
    assert broken_rules(edges) == ["rospr/m.py:2: from rospr_harness import config  "
                                   "(rospr/ is the method; the harness is built on it)"]
    assert folder_cycles(edges) == [["harness", "rospr", "harness"]]
