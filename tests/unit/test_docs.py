"""The documentation against the code: README.md and docs/*.md.

- every ``rospr ...`` command line shown (in a shell block or inline) parses with the real command-line
  parser (an unknown command, an unknown flag, a bad value or a missing argument fails), and its
  ``--help`` exits 0; every ``make X`` names a target of the Makefile; every ``rospr bench NAME`` a
  benchmark;
- every relative link reaches a file of the repository, and its ``#anchor`` a heading there;
- every generated block (the results schema, each measured figure) equals what ``python -m
  docs.generate`` writes from ``rospr schema`` and ``benchmarks/results/``;
- no source file cites a design note outside the repository;
- the worked examples of docs/adding-a-task.md and docs/adding-a-backend.md run.

Each check also runs on a synthetic page that breaks it, so none of them passes by finding nothing.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import sys
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

try:  # typer >= 0.29 parses with its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:
    from click.exceptions import UsageError

REPO = Path(__file__).resolve().parents[2]


def _load_generate():
    spec = importlib.util.spec_from_file_location("rospr_docs_generate", REPO / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generate()
DOCS = generate.doc_files(REPO)


# ---------------------------------------------------------------------------------------------
# reading the pages
# ---------------------------------------------------------------------------------------------

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$")


@dataclass(frozen=True)
class Shown:
    """One command line shown on a page: its words, and where (file:line) for the failure message.
    ``inline``: shown in prose (`rospr plan`, `rospr tune --sources`), where a command or flag may be
    named without the arguments it needs; an unknown command, flag or bad value still fails."""

    where: str
    words: tuple[str, ...]
    inline: bool = False


def fenced_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line of the body's first line) of each fenced block."""
    return [(m[1].strip().lower(), m[2], text.count("\n", 0, m.start(2)) + 1) for m in FENCE.finditer(text)]


def synopsis_words(line: str) -> list[str]:
    """A synopsis line as argv: ``[`` and ``]`` and ``...`` dropped, ``a|b`` read as its first choice,
    a comment or a shell pipe ending it."""
    line = re.sub(r"(^|\s)#.*$", "", line).replace("...", " ").replace("[", " ").replace("]", " ")
    try:
        split = shlex.split(line)
    except ValueError:  # an apostrophe in prose after the command
        split = line.split()
    words = []
    for word in split:
        if word in ("|", "||", "&&", ";", ">", "2>&1"):
            break
        words.append(word.split("|")[0] if "|" in word and not word.startswith("-") else word)
    return words


def command_from(words: list[str]) -> list[str] | None:
    """The words from the program on (``rospr``, ``.venv/bin/rospr``, ``make``, ``rospr-bench``, ``python
    -m benchmarks``), past environment assignments; None when the line runs none of them."""
    for i, word in enumerate(words):
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", word):
            continue
        name = word.rsplit("/", 1)[-1]
        if name in ("rospr", "make", "rospr-bench"):
            return [name, *words[i + 1:]]
        if name in ("python", "python3") and words[i + 1:i + 3] == ["-m", "benchmarks"]:
            return ["rospr-bench", *words[i + 3:]]
        return None
    return None


def shown_commands(path: Path, text: str | None = None) -> list[Shown]:
    """Every command line of a page: the lines of its shell blocks (continuations joined) and its
    inline code that starts with ``rospr``."""
    text = path.read_text() if text is None else text
    found: list[Shown] = []
    for lang, body, first in fenced_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        joined = re.sub(r"\\\n", " ", body)
        for n, line in enumerate(joined.splitlines()):
            line = re.sub(r"^\s*\$\s+", "", line)
            words = command_from(synopsis_words(line)) if line.strip() else None
            if words:
                found.append(Shown(f"{path.name}:{first + n}", tuple(words)))
    prose = FENCE.sub(lambda m: "\n" * m[0].count("\n"), text)
    for m in re.finditer(r"`((?:\S*/)?rospr [^`]+)`", prose):
        words = command_from(synopsis_words(m[1]))
        if words and len(words) > 1:  # not prose such as "every `rospr ...` line"
            found.append(Shown(f"{path.name}:{prose.count(chr(10), 0, m.start()) + 1}", tuple(words), True))
    return found


# ---------------------------------------------------------------------------------------------
# parsing a command line with the real parser
# ---------------------------------------------------------------------------------------------

def rospr_group():
    from rospr_harness.cli import app

    return typer.main.get_command(app)


def numeric_kind(param) -> str:
    """``integer``, ``float`` or "" for an option's value type (click's type, or typer's annotation)."""
    name = getattr(getattr(param, "type", None), "name", "")
    if name:
        return name.replace(" range", "")
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    kinds = typing.get_args(annotation) or (annotation,)
    return "integer" if int in kinds else "float" if float in kinds else ""


def placeholder_value(param, word: str) -> str:
    """A value the parser takes for a placeholder (``N``, ``X``) of a numeric option; the word itself
    otherwise."""
    if param is None or not PLACEHOLDER.match(word):
        return word
    return {"integer": "2", "float": "1.5"}.get(numeric_kind(param), word)


def with_values(command, words: list[str]) -> list[str]:
    options = {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    out = list(words)
    for i in range(1, len(out)):
        out[i] = placeholder_value(options.get(out[i - 1]), out[i])
    return out


def remaining(ctx) -> list[str]:
    protected = getattr(ctx, "_protected_args", None)
    if protected is None:
        protected = getattr(ctx, "protected_args", [])
    return [*protected, *ctx.args]


def parse_rospr(argv: list[str]):
    """Parse ``argv`` (the words after ``rospr``) as the command would, running nothing: returns the
    command's path, the command and its context. Raises ``UsageError`` (unknown command, flag
    or value; a missing argument)."""
    argv = [a for a in argv if a not in ("--help", "-h")]  # eager: it would end the parse
    command = rospr_group()
    ctx = command.make_context("rospr", list(argv), resilient_parsing=False)
    path: list[str] = []
    while hasattr(command, "resolve_command"):  # a group
        rest = remaining(ctx)
        name, sub, rest = command.resolve_command(ctx, rest)
        path.append(name)
        command = sub
        ctx = sub.make_context(name, with_values(sub, rest), parent=ctx, resilient_parsing=False)
    return path, command, ctx


def command_path(argv: list[str]) -> list[str]:
    """The command path of ``argv`` (``["data", "status"]``), its own flags not parsed."""
    command = rospr_group()
    ctx = command.make_context("rospr", list(argv[:1]), resilient_parsing=True)
    path, rest = [], list(argv)
    while hasattr(command, "resolve_command") and rest:
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
    return path


def lm_eval_parser():
    """lm-evaluation-harness's own parser of ``lm-eval run`` (None where lm-eval is absent)."""
    if importlib.util.find_spec("lm_eval") is None:
        return None
    try:
        from lm_eval._cli.harness import HarnessCLI  # lm-eval >= 0.4.10: subcommands

        return HarnessCLI()._parser
    except ImportError:
        from lm_eval.__main__ import setup_parser

        return setup_parser()


def check_command(shown: Shown, makefile_targets: set[str]) -> str | None:
    """Why ``shown`` is wrong, or None."""
    program, *argv = shown.words
    if program == "make":
        missing = [t for t in argv if not t.startswith("-") and "=" not in t and t not in makefile_targets]
        return f"{shown.where}: make {' '.join(missing)}: no such target in the Makefile" if missing else None
    if program == "rospr-bench":
        return check_bench(shown, argv[:1])
    try:
        path, command, ctx = parse_rospr(argv)
    except UsageError as exc:
        if not (shown.inline and type(exc).__name__ in ("MissingParameter", "BadOptionUsage", "NoArgsIsHelpError")):
            return f"{shown.where}: rospr {' '.join(argv)}: {exc.format_message()}"
        path, ctx = command_path(argv), None
    if path == ["bench"]:
        return None if shown.inline and not argv[1:2] else check_bench(shown, argv[1:2])
    if path == ["lm-eval"]:
        return check_lm_eval(shown, ctx.args if ctx is not None else [])
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    result = CliRunner().invoke(app, [*path, "--help"])
    return None if result.exit_code == 0 else f"{shown.where}: rospr {' '.join(path)} --help exited {result.exit_code}"


def check_bench(shown: Shown, name: list[str]) -> str | None:
    from rospr_bench.entry import BENCHMARKS

    if name and PLACEHOLDER.match(name[0]):  # `rospr bench NAME`: any of them
        return None
    if not name or name[0] not in BENCHMARKS:
        return f"{shown.where}: benchmark {name}: not one of {', '.join(BENCHMARKS)}"
    return None


def check_lm_eval(shown: Shown, args: list[str]) -> str | None:
    parser = lm_eval_parser()
    if parser is None:
        return None  # the command exists; its flags are lm-eval's, checked where lm-eval is installed
    from rospr_harness.cli.lm_eval import with_rospr_model

    argv = with_rospr_model(list(args))
    try:
        _, unknown = parser.parse_known_args(argv)
    except SystemExit:
        return f"{shown.where}: lm-eval refuses {' '.join(args)}"
    return f"{shown.where}: lm-eval does not know {unknown}" if unknown else None


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*):", (REPO / "Makefile").read_text(), re.M))


# ---------------------------------------------------------------------------------------------
# links
# ---------------------------------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return out


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """Each relative link of ``path`` whose file or anchor is not there."""
    text = path.read_text() if text is None else text
    out = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            out.append(f"{path.name}: link {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{path.name}: link {target}: no heading #{anchor} in {dest.name}")
    return out


REPO_PATH = re.compile(r"(?<![\w/.~-])((?:rospr|harness|export|benchmarks|tests|configs|docker|model_repo|docs)/"
                       r"[\w/.-]*\w\.(?:py|yaml|yml|md|json|txt|toml|csv))")


def missing_paths(path: Path, text: str | None = None, written: tuple[str, ...] = ()) -> list[str]:
    """Each repository file a page names (``harness/tasks/builtin.py``, ``tests/unit/...``) that is not
    there. ``written``: files a page says a command writes (``benchmarks/results/gpu.json``)."""
    text = path.read_text() if text is None else text
    return [f"{path.name}: {m[1]}: no such file" for m in REPO_PATH.finditer(text)
            if m[1] not in written and not (REPO / m[1]).exists()]


# files the pages say a command writes, not in git
WRITTEN = ("benchmarks/results/gpu.json",)


# ---------------------------------------------------------------------------------------------
# design notes outside the repository
# ---------------------------------------------------------------------------------------------

OUTSIDE = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared(?!/data)|(?<![\w$])shared/(?!data)")


def outside_citations(files: list[Path]) -> list[str]:
    out = []
    for f in files:
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                out.append(f"{f.relative_to(REPO)}:{n}: {line.strip()}")
    return out


def source_files() -> list[Path]:
    found = [p for d in ("rospr", "harness", "export", "benchmarks", "tests") for p in (REPO / d).rglob("*.py")]
    this = Path(__file__).resolve()  # it spells the patterns it looks for
    return [*(p for p in found if p.resolve() != this), REPO / "pyproject.toml", REPO / "Makefile", *DOCS]


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------

ALL_SHOWN = [s for doc in DOCS for s in shown_commands(doc)]


def test_the_pages_show_commands():
    programs = {s.words[0] for s in ALL_SHOWN}
    assert {"rospr", "make"} <= programs
    assert len([s for s in ALL_SHOWN if s.words[0] == "rospr"]) >= 40


@pytest.mark.parametrize("shown", ALL_SHOWN, ids=lambda s: f"{s.where} {' '.join(s.words[:3])}")
def test_every_command_shown_parses(shown):
    assert check_command(shown, makefile_targets()) is None


@pytest.mark.parametrize("line, why", [
    ("rospr runn configs/demo.yaml", "No such command"),
    ("rospr run configs/demo.yaml --no-such-flag", "No such option"),
    ("rospr run configs/demo.yaml --limit many", "valid integer"),
    ("rospr data fetch", "Missing argument"),
    ("rospr bank nonsense", "No such command"),
    ("rospr bench nosuch", "not one of"),
    ("make nosuch", "no such target"),
])
def test_a_wrong_command_fails(line, why, tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"Run it:\n\n```bash\n{line}   # a comment\n```\n")
    [shown] = shown_commands(page)
    problem = check_command(shown, makefile_targets())
    assert problem is not None and why in problem, problem


def test_synopsis_and_inline_commands_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Say `rospr plan CONFIG --units` first.\n\n```bash\n"
                    "rospr run CONFIG [--limit N] [--set key.path=value]... \\\n    --out DIR\n"
                    "RAY_AUTH_MODE=token .venv/bin/rospr tiny --out D --size tiny|small\n```\n")
    shown = [s.words for s in shown_commands(page)]
    assert ("rospr", "run", "CONFIG", "--limit", "N", "--set", "key.path=value", "--out", "DIR") in shown
    assert ("rospr", "tiny", "--out", "D", "--size", "tiny") in shown
    assert ("rospr", "plan", "CONFIG", "--units") in shown
    for words in shown:
        assert check_command(Shown("page.md", words), makefile_targets()) is None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    assert broken_links(doc) == []


def test_a_broken_link_fails(tmp_path):
    (tmp_path / "other.md").write_text("# A heading, with `code`\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-heading-with-code) [gone](missing.md) [bad](other.md#nowhere) "
                    "[self](#top) [web](https://example.org/x)\n\n# Top\n")
    assert broken_links(page) == ["page.md: link missing.md: no such file",
                                  "page.md: link other.md#nowhere: no heading #nowhere in other.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_files_named_exist(doc):
    assert missing_paths(doc, written=WRITTEN) == []


def test_a_missing_file_named_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("See `harness/tasks/builtin.py` and tests/test_gone.py, or ~/x/rospr/none.py.\n")
    assert missing_paths(page) == ["page.md: tests/test_gone.py: no such file"]


def test_generated_blocks_are_current():
    assert [str(p.relative_to(REPO)) for p in generate.stale(DOCS)] == []


def test_the_docs_quote_measured_figures_through_the_generator():
    figures = [m for doc in DOCS for m in generate.FIGURE.finditer(doc.read_text())]
    assert len(figures) >= 5
    assert any(generate.SCHEMA_BLOCK.search(doc.read_text()) for doc in DOCS)


def test_a_stale_figure_or_schema_is_found(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "x.json").write_text(json.dumps({"rows": [{"units_per_s": 5.943}]}))
    page = tmp_path / "page.md"
    page.write_text("in process: <!-- figure x.json rows.0.units_per_s .2f -->5.90<!-- /figure --> units/s\n")
    assert generate.stale([page], results) == [page]
    assert "-->5.94<!--" in generate.generated(page.read_text(), results)
    page.write_text("<!-- generated: schema -->\nold\n<!-- /generated -->\n")
    assert generate.generated(page.read_text(), results, lambda: "new\n") == \
        "<!-- generated: schema -->\nnew\n<!-- /generated -->\n"


def test_the_schema_block_is_rospr_schema():
    schema = generate.schema_json()
    text = generate.schema_markdown(schema)
    for field in schema["properties"]:
        assert f"| `{field}` |" in text
    assert "**UnitResult**" in text


def test_no_source_cites_a_note_outside_the_repository():
    assert outside_citations(source_files()) == []


def test_the_pages_need_nothing_outside_the_repository():
    assert [f"{d.name}: {line}" for d in DOCS for line in d.read_text().splitlines() if "../shared" in line] == []


def test_a_citation_outside_is_found(tmp_path):
    bad = tmp_path / "mod.py"
    bad.write_text('"""See DESIGN.md section 3."""\nDATA = "../shared/data"  # a data location: allowed\n'
                   "# ../shared/notes.md\n")
    assert [line.split(": ", 1)[1] for line in outside_citations_rel(bad)] == [
        '"""See DESIGN.md section 3."""', "# ../shared/notes.md"]


def outside_citations_rel(f: Path) -> list[str]:
    return [f"{n}: {line.strip()}" for n, line in enumerate(f.read_text().splitlines(), 1) if OUTSIDE.search(line)]


# ---------------------------------------------------------------------------------------------
# the worked examples
# ---------------------------------------------------------------------------------------------

FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```[^\n]*\n(.*?)^```", re.S | re.M)


def example_files(doc: str, into: Path) -> dict[str, Path]:
    """Write each block of docs/``doc`` marked ``<!-- file: NAME -->`` to ``into/NAME``."""
    out = {}
    for name, body in FILE_BLOCK.findall((REPO / "docs" / doc).read_text()):
        dest = into / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body)
        out[name] = dest
    return out


def test_adding_a_task_example_loads_and_renders(tmp_path):
    from rospr_harness.tasks import get_task
    from rospr_harness.tasks.base import DataSettings, Task

    files = example_files("adding-a-task.md", tmp_path)
    assert "my_data/bigbench/capitals/task.json" in files
    task = get_task("bigbench/capitals", DataSettings.from_env(tmp_path / "my_data"))
    assert isinstance(task, Task)
    [prompt] = task.prompts()
    unit = task.load(prompt)
    assert len(unit.examples) == len(json.loads(files["my_data/bigbench/capitals/task.json"].read_text())["examples"])
    first = unit.examples[0]
    assert "France" in first.input_text
    assert dict(zip(first.choices, first.target_scores))["Paris"] == 1
    config = files["capitals.yaml"].read_text()
    assert "bigbench/capitals" in config and "data_dir: my_data" in config


def test_adding_a_task_example_runs_on_the_tiny_model(tmp_path, tiny_model_dir, monkeypatch):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    example_files("adding-a-task.md", tmp_path)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(app, ["run", "capitals.yaml", "--out", "runs/capitals", "--model", str(tiny_model_dir),
                                   "--set", "backend=torch"])
    assert out.exit_code == 0, out.output
    results = json.loads((tmp_path / "runs" / "capitals" / "results.json").read_text())
    assert [u["task"] for u in results["units"]] == ["bigbench/capitals"]


def test_adding_a_backend_example_is_a_scorer_that_matches_torch(tmp_path, tiny_model_dir, monkeypatch):
    from rospr_harness.backends import BACKENDS, BackendModule, create_backend
    from rospr_harness.backends.torch_backend import TorchScorer
    from rospr_harness.config import RunConfig
    from rospr.data import Example
    from rospr.scoring import Convention, Scorer, collate, encode_examples
    import numpy as np

    files = example_files("adding-a-backend.md", tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("loop_backend", None)
    import loop_backend

    entry = BACKENDS_ENTRY(files)
    monkeypatch.setitem(BACKENDS, "loop", entry)
    monkeypatch.setattr("rospr_harness.config.BACKENDS", (*config_backends(), "loop"))
    assert isinstance(entry, BackendModule)
    config = RunConfig.model_validate({"model": {"name_or_path": str(tiny_model_dir)}, "backend": "loop",
                                       "tasks": ["builtin/animals"]})
    backend = create_backend(config)
    assert isinstance(backend.scorer, Scorer) and isinstance(backend.scorer, loop_backend.LoopScorer)

    examples = [Example("t", "p", i, text, tuple(choices), label=0) for i, (text, choices) in enumerate([
        ("is the cat happy?", ["yes", "no"]), ("pick a colour", ["red", "blue", "green"])])]
    encoded = encode_examples(backend.tokenizer, examples, Convention())
    rng = np.random.default_rng(0)
    prompts = [rng.normal(size=(3, backend.scorer.prompt_dim)).astype(np.float32), None]
    batch = collate(encoded, prompts, backend.scorer.prompt_dim)
    reference = TorchScorer(backend.model).score(batch)
    got = backend.scorer.score(batch)
    for b, e in enumerate(encoded):
        n = len(e.choice_ids)
        np.testing.assert_allclose(got[b, :n], reference[b, :n], atol=1e-4)


def config_backends() -> tuple[str, ...]:
    from rospr_harness import config

    return tuple(config.BACKENDS)


def BACKENDS_ENTRY(files):  # noqa: N802  the doc's registration line, evaluated as the doc shows it
    import loop_backend  # noqa: F401
    from rospr_harness.backends import BackendModule

    text = (REPO / "docs" / "adding-a-backend.md").read_text()
    [code] = re.findall(r'BACKENDS\["loop"\] = (BackendModule\(.*?\)\))\n', text, re.S)
    import importlib

    from rospr_harness.backends import BACKENDS

    return eval(code, {"BackendModule": BackendModule, "BACKENDS": BACKENDS, "importlib": importlib})
