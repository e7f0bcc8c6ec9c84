"""Helpers shared by several test files: the configs of a small RoSPr run and of the resume tests' run
and the check that two runs have the same units, the CLI in process and its one error line, a run directory's
checksums, the processes and listening sockets under a pid (from /proc), a served tiny model, an ONNX
graph with one weight flipped, a finished run, the scoring examples, a benchmark refusing without its
dependency, a toy promptsource task, and a loopback server that never answers. ``tests/`` is on
``sys.path`` (pytest puts the folder of ``conftest.py`` there), so ``from helpers import ...`` works in
every test file and in the scripts they run with ``sys.path`` pointing here."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

# A hang guard for a whole process that starts Ray (a cluster, actors, tuning), not a duration check: on
# 2 cores loaded by CPU burners and another suite, the logical-GPU tuning run took over 300 s.
WHOLE_PROCESS_TIMEOUT_S = 900


# -- a config of two built-in tasks ---------------------------------------------------------------------
TWO_TASKS = {"tasks": [{"name": "builtin/sentiment", "limit": 4},
                       {"name": "builtin/topic", "limit": 4, "prompts": ["topic_label", "section"]}]}


def two_task_config(*overrides: str, **tree):
    """The config of ``TWO_TASKS`` with ``--set`` style ``overrides`` and top-level ``tree`` keys."""
    from rospr_harness.config import load_config

    return load_config(None, list(overrides), tree={**TWO_TASKS, **tree})


# -- a small RoSPr run ----------------------------------------------------------------------------------


def rospr_tree(model_dir, root, methods, limit: int, batch_size: int, var_candidates: int, **extra) -> dict:
    """A demo-like run, reduced: three (task, prompt) targets of two tasks, ``methods``, a bank of a few
    quickly tuned prompts and its library under ``root``; ``extra`` top-level keys are added. The
    same tree as ``run_config.tree(**rospr_settings(...), **extra)``."""
    return {"model": {"name_or_path": str(model_dir)}, **rospr_settings(root, methods, limit, batch_size, var_candidates),
            **extra}


def rospr_settings(root, methods, limit: int, batch_size: int, var_candidates: int) -> dict:
    """The ``run_config`` overrides of ``rospr_tree``'s run."""
    return {
        "method": list(methods),
        "tasks": [{"name": "builtin/sentiment", "limit": limit, "prompts": ["review_sentiment", "sentiment_label"]},
                  {"name": "builtin/nli", "limit": limit, "prompts": ["given_that"]}],
        "scoring": {"batch_size": batch_size},
        "rospr": {"sources": ["builtin/sentiment", "builtin/nli", "builtin/animals"],
                  "prompt_bank": str(root / "bank"), "library": str(root / "library"),
                  "tune": {"steps": 3, "prompt_length": 4, "batch_size": 8, "source_rows": 24, "parallel": "off"},
                  "library_n": 16, "queries": 6, "top_n": 5, "n_inter": 2, "var_candidates": var_candidates},
    }


RESUME_TASKS = ["builtin/sentiment", "builtin/topic", "builtin/animals", "builtin/nli", "builtin/fruit_choice"]


def resume_settings(root, limit: int = 48) -> dict:
    """The ``run_config`` overrides of the resume tests' run: t0 and rospr on five built-in tasks
    (``limit`` rows each, batches of 8), a bank of a few quickly tuned prompts and its library under
    ``root``."""
    return {
        "method": ["t0", "rospr"],
        "tasks": [{"name": t, "limit": limit} for t in RESUME_TASKS],
        "scoring": {"batch_size": 8},
        "rospr": {"sources": ["builtin/sentiment", "builtin/nli", "builtin/animals"],
                  "prompt_bank": str(root / "bank"), "library": str(root / "library"),
                  "tune": {"steps": 3, "prompt_length": 4, "batch_size": 8, "source_rows": 24, "parallel": "off"},
                  "library_n": 16, "queries": 6, "top_n": 5},
    }


def same_units(run_dir: Path, ref_dir: Path) -> None:
    """Exactly the reference's units and records (the same executor: the same bytes)."""
    from rospr_harness.schema import read_records, read_results

    got, ref = read_results(run_dir / "results.json"), read_results(ref_dir / "results.json")
    assert [(u.task, u.prompt, u.method) for u in got.units] == [(u.task, u.prompt, u.method) for u in ref.units]
    for g, r in zip(got.units, ref.units):
        assert (g.n, g.accuracy, g.sha256) == (r.n, r.accuracy, r.sha256), (g.task, g.prompt, g.method)
        assert read_records(run_dir / g.records) == read_records(ref_dir / r.records)
    assert got.overall == ref.overall and got.tasks == ref.tasks


# -- the CLI ------------------------------------------------------------------------------------------


def cli(*args):
    """``rospr <args>`` in process (``rospr_harness.cli.app``); the typer result."""
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_line(result, *needles: str, bug: bool = False) -> str:
    """The one ``error:`` line of a failed command, after checking exit code 2, no traceback, and
    that a refusal of ours is not called a bug ("an unexpected error"; ``bug``: the case is one)."""
    out = result.output
    assert result.exit_code == 2, (result.exit_code, out, result.exception)
    assert "Traceback" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, out
    assert ("an unexpected error" in lines[0]) == bug, lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def one_line_error(result, *needles: str) -> None:
    """Exit code 2, no traceback, an ``error:`` line, and each needle somewhere in the output (rich may
    wrap the line)."""
    text = result.output
    assert result.exit_code == 2 and "Traceback" not in text, text
    assert any(ln.startswith("error:") for ln in text.splitlines()), text
    joined = " ".join(text.split())
    for n in needles:
        assert n in joined, (n, text)


# -- a finished run -----------------------------------------------------------------------------------


def finished_run(run_config, root: Path, tasks: list) -> tuple[Path, object]:
    """A run of the tiny model on ``tasks`` (batch size 4, one onnxruntime thread, the export cache in
    ``root/onnx``) into ``root/golden``: (its config file ``root/run.yaml``, its ``ResultsFile``)."""
    from rospr_harness.config import load_config
    from rospr_harness.runner import run

    tree = run_config.tree(tasks=tasks, scoring={"batch_size": 4},
                           onnxruntime={"cache_dir": str(root / "onnx"), "threads": 1})
    config = root / "run.yaml"
    config.write_text(json.dumps(tree))
    return config, run(load_config(config), root / "golden")


# -- the scored examples of the backend tests ---------------------------------------------------------


def scoring_examples() -> list:
    """Six inputs of 1 to 4 answer choices, short and long, one choice far longer than its input."""
    from rospr.data import Example

    return [
        Example("t", "p", 0, "Is the cat happy? yes or no", ("yes", "no")),
        Example("t", "p", 1, "The movie was great. Sentiment:", ("positive", "negative", "neutral")),
        Example("t", "p", 2, "Which is food? A: ball B: pizza C: vote", ("A", "B", "C")),
        Example("t", "p", 3, "premise: the dog sat on the mat. hypothesis: a dog sat. true, false or neither?",
                ("true", "false", "neither")),
        Example("t", "p", 4, "short", ("a much longer answer choice with many words", "b")),
        Example("t", "p", 5, "Team won the election because of the energy of bread",
                ("sports", "politics", "science", "food")),
    ]


# -- a benchmark without its optional dependency ----------------------------------------------------


def refuses_without(module: str, bench, command: str, match: str, monkeypatch, tmp_path) -> None:
    """With ``module`` not importable, ``bench.main`` refuses (``ValueError`` matching ``match``) before
    timing anything, ``rospr-bench <command>`` exits 2, and nothing is written under ``tmp_path``."""
    import importlib.util

    import pytest

    from rospr_bench import entry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == module else real(n, *a))
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("timed something before refusing"))
    with pytest.raises(ValueError, match=match):
        bench.main(["--out", str(tmp_path)])
    assert entry.main([command, "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())


# -- run directories ----------------------------------------------------------------------------------


def snapshot(run_dir: Path, links: bool = False) -> dict[str, str]:
    """sha256 of every file of a run directory (the lock file aside: it says who holds the run);
    ``links``: a symbolic link is recorded as ``link:<its target>`` instead of what it points to."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        rel = str(p.relative_to(run_dir))
        if p.name == ".lock":
            continue
        if links and p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# -- an environment with the default cache places ---------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# every variable that would move a cache away from $HOME's default (the test wants the defaults)
CACHE_VARS = ("ROSPR_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "ROSPR_ONNX_CACHE", "ROSPR_UNIT_CACHE",
              "ROSPR_DIGEST_MEMO", "ROSPR_DATA_CACHE", "MPLCONFIGDIR", "TORCHINDUCTOR_CACHE_DIR", "HF_HOME",
              "ORT_DISABLE_TELEMETRY", "ROSPR_SERVE_STATE")


def isolated_env(root: Path) -> dict:
    """The environment less ``CACHE_VARS``, with ``$HOME`` and ``$TMPDIR`` under ``root``, offline."""
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS}
    env.update(HOME=str(root / "home"), TMPDIR=str(root / "tmp"), PYTHONPATH=str(REPO),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env



def written_since(marker: Path, roots: list[Path]) -> list[Path]:
    """Every file and folder under ``roots`` created or changed after ``marker`` (``find -newer``)."""
    since = marker.stat().st_mtime
    out = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                p = Path(folder) / name
                try:
                    if p.lstat().st_mtime > since:
                        out.append(p)
                except FileNotFoundError:
                    continue
    return out


# -- processes and sockets, from /proc ----------------------------------------------------------------


def dead_pid() -> int:
    """The pid of a process that has exited (until the kernel reuses it)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc/<p>/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def stop_ray_node(proc) -> None:
    """Stop a ``ray start --block`` by its pid (SIGTERM stops its node's processes), then by pid whatever
    of it is left (only ours: never ``ray stop``, which ends every Ray of the machine)."""
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def proc_address(hex_addr: str) -> str:
    """A /proc/net/tcp address (little-endian words of hex) as text: 127.0.0.1, ::, ::ffff:127.0.0.1."""
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening_sockets(pids: list[int]) -> list[dict]:
    """The TCP sockets in LISTEN state (st 0A) that the processes ``pids`` hold: pid, address, port."""
    listen: dict[str, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A":
                addr, port = f[1].split(":")
                listen[f[9]] = (proc_address(addr), int(port, 16))
    out = []
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = fd.readlink().name if hasattr(fd, "readlink") else Path(fd).resolve().name
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = target[len("socket:["):-1]
                if inode in listen:
                    out.append({"pid": pid, "address": listen[inode][0], "port": listen[inode][1]})
    return out


# -- a served model -----------------------------------------------------------------------------------


def served_repo(model_dir: Path, tmp_path_factory) -> Path:
    """A `rospr export` build folder of the tiny model (scorer and retriever), once per test session."""
    from rospr_export.export import export_models
    from rospr_export.repository import write_repository

    out = tmp_path_factory.getbasetemp() / "trust-served-repo"
    if not (out / "twin").is_dir():
        export_models(model_dir, out / "onnx", retriever=model_dir)
        write_repository(out / "onnx", out)
    return out


# -- a damaged export ---------------------------------------------------------------------------------


def flip_a_weight(graph: Path) -> None:
    """XOR the exponent byte of the first value of the LM head's weight (a [d_model, vocab] MatMul) in
    the ONNX file ``graph``, in place: same size, scores changed."""
    import onnx

    model = onnx.load(str(graph))
    head = max((t for t in model.graph.initializer if len(t.dims) == 2 and t.dims[1] > t.dims[0]),
               key=lambda t: len(t.raw_data))
    data = graph.read_bytes()
    at = data.find(head.raw_data[:256])
    assert at > 0 and data.count(head.raw_data[:256]) == 1
    with open(graph, "r+b") as fh:
        fh.seek(at + 3)  # little-endian float32: byte 3 holds the sign and the top of the exponent
        byte = fh.read(1)[0]
        fh.seek(at + 3)
        fh.write(bytes([byte ^ 0x40]))


# -- a toy promptsource task --------------------------------------------------------------------------

TOY_TEMPLATE = """  {id}: !Template
    answer_choices: {choices}
    id: {id}
    jinja: '{{{{text}}}} Which one? ||| {{{{ answer_choices[label] }}}}'
    metadata: !TemplateMetadata
      choices_in_prompt: false
      metrics: [Accuracy]
      original_task: true
    name: {name}
    reference: ''
"""
# (a, b, label): rows 1 and 4 offer the same text twice
TOY_ROWS = [("red", "blue", 0), ("green", "green", 0), ("cat", "dog", 1), ("sun", "moon", 1), ("up", "up", 1),
            ("tea", "milk", 0)]


def toy_task(root: Path, templates: list[tuple[str, str]]) -> dict:
    """A promptsource task ``toy`` with the given (name, answer_choices) templates and ``TOY_ROWS``; its
    data config."""
    (root / "tpl" / "toy").mkdir(parents=True)
    body = "".join(TOY_TEMPLATE.format(id=f"t{i}", name=name, choices=choices)
                   for i, (name, choices) in enumerate(templates))
    (root / "tpl" / "toy" / "templates.yaml").write_text("dataset: toy\ntemplates:\n" + body)
    (root / "rows" / "toy").mkdir(parents=True)
    (root / "rows" / "toy" / "validation.jsonl").write_text(
        "".join(json.dumps({"text": f"{a} or {b}", "a": a, "b": b, "label": y}) + "\n" for a, b, y in TOY_ROWS))
    return {"templates_dir": str(root / "tpl"), "rows_dir": str(root / "rows")}


# -- a BIG-bench task --------------------------------------------------------------------------------


def bigbench_task(root: Path, name: str, data) -> Path:
    """``<root>/<name>/task.json`` holding ``data`` (text as given, anything else as JSON); its path."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "task.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


# -- a loopback server that never answers -------------------------------------------------------------


class Listener:
    """A loopback server that accepts and then never answers (``silent``), or answers one byte at a
    time (``trickle``: an HTTP response whose body would take minutes)."""

    def __init__(self, mode: str) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.mode, self.conns, self.stop = mode, [], threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.mode == "trickle":
                threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn) -> None:
        try:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"{" * 100000:
                if self.stop.is_set():
                    return
                conn.send(bytes([byte]))
                time.sleep(0.02)
        except OSError:
            pass

    def close(self) -> None:
        self.stop.set()
        for c in self.conns:
            c.close()
        self.sock.close()
