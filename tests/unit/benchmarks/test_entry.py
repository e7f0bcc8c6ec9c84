"""`rospr bench` / `rospr-bench`: the model flag reaches each benchmark under its own name, missing peers
and missing BIG-bench are refused before any timing, and every result records the machine's load."""

from __future__ import annotations

import inspect
import json
import re

import pytest
from helpers import refuses_without

from rospr_bench import bench_peers, common, entry, workload


@pytest.mark.parametrize("name", sorted(entry.BENCHMARKS))
def test_model_flag_is_one_the_benchmark_defines(name):
    module = inspect.getmodule(entry.BENCHMARKS[name])
    source = inspect.getsource(module)
    if name not in entry.MODEL_FLAGS:
        assert name == "retrieval"  # its --sizes are library sizes, not a model
        with pytest.raises(ValueError, match="has no model choice"):
            entry.model_args(name, "small")
        return
    flag, value = entry.model_args(name, "small")
    assert value == "small"
    assert f'add_argument("{flag}"' in source, f"{name} has no {flag} flag"


def test_cli_passes_the_model_flag(monkeypatch):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    seen = {}
    monkeypatch.setattr(entry, "run", lambda name, args: seen.update(name=name, args=args))
    result = CliRunner().invoke(app, ["bench", "fullrun", "--model", "small", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "fullrun", "args": ["--limit", "3", "--model", "small"]}
    result = CliRunner().invoke(app, ["bench", "retrieval", "--model", "small"])
    assert result.exit_code == 2 and "has no model choice" in result.output


def test_rospr_bench_help_names_every_benchmark():
    from rospr_harness.cli.bench import bench

    listed = inspect.signature(bench).parameters["name"].default.help  # the harness cannot import the list
    assert sorted(n.strip() for n in listed.split("|")) == sorted(entry.BENCHMARKS)


def test_peers_refuse_at_once_without_lm_eval(monkeypatch, tmp_path):
    refuses_without("lm_eval", bench_peers, "peers", r"needs lm_eval( and accelerate)?: pip install -e '\.\[bench\]'",
                    monkeypatch, tmp_path)


def test_long_workload_without_bigbench_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path))  # no bigbench/ there
    from rospr_harness.tasks import fetch

    monkeypatch.setattr(fetch, "cached", lambda what, cache_dir=None: None)
    assert workload._settings().bigbench is None
    with pytest.raises(ValueError, match="rospr data fetch bigbench"):
        workload.long_examples(tokenizer=None)


def test_fetched_bigbench_is_used_without_a_data_folder(monkeypatch, tmp_path):
    (tmp_path / "benchmark_tasks").mkdir()
    monkeypatch.setenv("ROSPR_DATA_DIR", str(tmp_path / "nothing"))
    from rospr_harness.tasks import fetch

    monkeypatch.setattr(fetch, "cached", lambda what, cache_dir=None: tmp_path / "benchmark_tasks")
    assert workload._settings().bigbench == str(tmp_path / "benchmark_tasks")


def test_results_record_the_load(tmp_path):
    path = common.write_result("x", {"a": 1}, tmp_path)
    m = json.loads(path.read_text())["machine"]
    assert len(m["load_average_at_start"]) == 3 and len(m["load_average_at_end"]) == 3
    assert all(v >= 0 for v in m["load_average_at_start"] + m["load_average_at_end"])


COUNT_FLAGS = [(name, flag, bad) for name in sorted(entry.BENCHMARKS)
               for flag, kind in re.findall(r'add_argument\("(--[a-z-]+)", type=(positive_int|non_negative_int|'
                                            r'positive_float|non_negative_float)',
                                            inspect.getsource(inspect.getmodule(entry.BENCHMARKS[name])))
               for bad in (["0", "-1", "x"] if kind.startswith("positive") else ["-1", "x"])]


@pytest.mark.parametrize("name,flag,bad", COUNT_FLAGS)
def test_a_count_of_zero_or_less_is_refused_before_any_work(name, flag, bad, capsys):
    with pytest.raises(SystemExit) as exc:
        entry.BENCHMARKS[name]([flag, bad])
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_every_numeric_flag_is_checked():
    assert len({(n, f) for n, f, _ in COUNT_FLAGS}) >= 25
    for name in entry.BENCHMARKS:
        source = inspect.getsource(inspect.getmodule(entry.BENCHMARKS[name]))
        assert not re.search(r"add_argument\([^)]*type=(int|float)\b", source), name


def test_summarize_help_writes_nothing_and_the_readme_matches_the_results(capsys):
    """``summarize --help`` prints its usage (it used to rewrite the README); the committed figures
    block is what ``summarize`` makes of the committed results (``--check``)."""
    from rospr_bench import summarize

    before = summarize.README.read_bytes()
    with pytest.raises(SystemExit) as exit_:
        summarize.main(["--help"])
    assert exit_.value.code == 0 and "--check" in capsys.readouterr().out
    assert summarize.main(["--check"]) == 0
    assert summarize.README.read_bytes() == before
