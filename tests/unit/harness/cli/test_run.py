"""harness/cli/run.py: ``rospr run``'s shortcuts ``--tasks``, ``--limit`` and ``--model`` are exactly the ``--set``
overrides they name, recorded as such; one given with a ``--set`` of its key is refused in one line."""

from __future__ import annotations

import pytest

from helpers import cli
from rospr.errors import SettingError
from rospr_harness.cli.run import shortcut_overrides
from rospr_harness.config import load_config
from rospr_harness.schema import read_results


@pytest.fixture
def config(run_config, tmp_path):
    return run_config.write(tmp_path / "c.yaml", tasks=[{"name": "builtin/animals", "limit": 4}, "builtin/nli"])


def test_shortcuts_are_the_set_overrides_they_name(config):
    assert shortcut_overrides(config, [], None, 5, None) == ["tasks.0.limit=5", "tasks.1.limit=5"]
    assert shortcut_overrides(config, [], "rte,copa", 100, "some/model") == [
        'tasks=[{"name": "rte"}, {"name": "copa"}]', 'model.name_or_path="some/model"',
        "tasks.0.limit=100", "tasks.1.limit=100"]
    # a name YAML would read as something else stays a string; --tasks replaces the config's list
    assert shortcut_overrides(config, [], None, None, "null") == ['model.name_or_path="null"']
    assert shortcut_overrides(config, [], "builtin/topic", 3, None) == ['tasks=[{"name": "builtin/topic"}]',
                                                                         "tasks.0.limit=3"]
    by_hand = load_config(config, ["tasks=[{name: builtin/topic, limit: 3}]", "model.name_or_path=other"])
    short = load_config(config, shortcut_overrides(config, [], "builtin/topic", 3, "other"))
    assert short == by_hand and short.content_hash() == by_hand.content_hash()
    # other --set keys go with them, and count for --limit (applied first)
    assert shortcut_overrides(config, ["tasks.1.prompts=[x]", "model.device=cpu"], None, 2, "m") == [
        'model.name_or_path="m"', "tasks.0.limit=2", "tasks.1.limit=2"]


@pytest.mark.parametrize("given, flags", [
    ("tasks=[rte]", {"tasks": "rte"}), ("tasks.0.prompts=[a]", {"tasks": "rte"}),
    ("tasks.1.limit=3", {"limit": 5}), ("tasks.0={name: x}", {"limit": 5}), ("tasks=[rte]", {"limit": 5}),
    ("model.name_or_path=x", {"model": "y"}), ("model={name_or_path: x}", {"model": "y"})])
def test_a_shortcut_with_a_set_of_its_key_is_refused(config, given, flags):
    with pytest.raises(SettingError, match=r"^--(tasks|limit|model) and --set .*: give one of them$"):
        shortcut_overrides(config, [given], flags.get("tasks"), flags.get("limit"), flags.get("model"))
    r = cli("run", config, "--out", config.parent / "refused", "--set", given,
            *[f"--{k}={v}" for k, v in flags.items()])
    assert r.exit_code != 0 and not (config.parent / "refused").exists()
    assert len(r.output.strip().splitlines()) == 1 and "give one of them" in r.output, r.output
    with pytest.raises(SettingError, match="an empty task name"):
        shortcut_overrides(config, [], "rte,,copa", None, None)


def test_a_run_with_shortcuts_is_the_run_with_their_sets_and_records_them(config, tiny_model_dir, tmp_path):
    r = cli("run", config, "--out", tmp_path / "short", "--tasks", "builtin/animals", "--limit", 2,
            "--model", tiny_model_dir, "--set", "scoring.batch_size=3")
    assert r.exit_code == 0, r.output
    sets = ["scoring.batch_size=3", 'tasks=[{"name": "builtin/animals"}]', f'model.name_or_path="{tiny_model_dir}"',
            "tasks.0.limit=2"]
    r = cli("run", config, "--out", tmp_path / "sets", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.output
    short, long = read_results(tmp_path / "short" / "results.json"), read_results(tmp_path / "sets" / "results.json")
    assert short.provenance.overrides == long.provenance.overrides == sets
    assert short.config == long.config and short.provenance.config_hash == long.provenance.config_hash
    assert [(u.task, u.prompt, u.n, u.accuracy) for u in short.units] == [(u.task, u.prompt, u.n, u.accuracy)
                                                                          for u in long.units]
    assert all(u.n == 2 for u in short.units) and {u.task for u in short.units} == {"builtin/animals"}
