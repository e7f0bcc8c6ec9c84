"""harness/config.py: a config lists each task and each prompt once, work-sized settings have upper
bounds, and a boolean is never taken for a number; each refusal names the key path (and the ``--set``
that gave it)."""

from __future__ import annotations

import pytest

from rospr_harness.config import ConfigError, load_config
from helpers import cli
from helpers import two_task_config
from rospr.scoring import Convention
from rospr.selection import T0, Method


@pytest.mark.parametrize("tasks, path", [
    (["builtin/animals", "builtin/nli", "builtin/animals"], "tasks.2"),
    ([{"name": "builtin/animals", "limit": 5}, {"name": "builtin/animals", "limit": 9}], "tasks.1"),
    ([{"name": "builtin/animals", "prompts": ["animal_check"]},
      {"name": "builtin/animals", "prompts": ["mentions_animal"]}], "tasks.1"),
    (["builtin/animals", {"name": "builtin/animals", "split": "test"}], "tasks.1"),
])
def test_a_task_listed_twice_is_refused_with_its_key_path(run_config, tasks, path):
    with pytest.raises(ConfigError) as info:
        run_config(tasks=tasks)
    msg = str(info.value)
    assert f"{path}: task 'builtin/animals' is already listed at tasks.0" in msg and "list each task once" in msg


def test_a_prompt_listed_twice_in_one_entry_is_refused(run_config):
    with pytest.raises(ConfigError) as info:
        run_config(tasks=[{"name": "builtin/animals", "prompts": ["animal_check", "mentions_animal", "animal_check"]}])
    assert "tasks.0.prompts: 'animal_check' is listed twice" in str(info.value)


def test_a_task_listed_twice_through_set_is_refused_at_the_cli(run_config, tmp_path):
    cfg = run_config.write(tmp_path / "c.yaml", tasks=["builtin/animals", "builtin/nli"])
    res = cli("run", cfg, "--set", "tasks.1.name=builtin/animals")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: --set tasks.1.name=builtin/animals: invalid setting (config {cfg})" in res.output
    assert "tasks.1: task 'builtin/animals' is already listed at tasks.0" in res.output


def test_distinct_tasks_are_accepted(run_config):
    cfg = run_config(tasks=["builtin/animals", "builtin/nli", {"name": "builtin/topic", "prompts": ["a", "b"]}])
    assert [t.name for t in cfg.tasks] == ["builtin/animals", "builtin/nli", "builtin/topic"]


# work-sized settings have upper bounds (a value past them hangs or exhausts memory, it never helps)
@pytest.mark.parametrize("key", ["onnxruntime.threads", "scoring.threads", "scoring.batch_size", "ray.scorers",
                                 "ray.max_in_flight", "triton.concurrency", "triton.retries", "rospr.queries",
                                 "rospr.top_n", "tasks.0.limit"])
def test_work_sized_settings_have_an_upper_bound(run_config, key):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=100000000000"], tree=run_config.tree())
    assert f"{key}: Input should be less than or equal to" in str(info.value)
    assert f"--set {key}=100000000000" in str(info.value).splitlines()[0]


@pytest.mark.parametrize("value", ["true", "no", "on"])
def test_a_boolean_is_not_a_number(run_config, value):
    with pytest.raises(ConfigError, match="is a boolean, not a number"):
        load_config(None, [f"tasks.0.limit={value}"], tree=run_config.tree())


# -- settings defined once, the method parsed once ----------------------------------------------------
def test_settings_defaults_are_the_papers():
    c = two_task_config()
    # docs/method.md: P=100, Adafactor lr 0.3 (Lester et al.); T0 convention; exact inner product
    assert (c.rospr.tune.prompt_length, c.rospr.tune.optimizer, c.rospr.tune.lr) == (100, "adafactor", 0.3)
    assert (c.scoring.input_eos, c.scoring.choice_eos, c.scoring.length_normalize) == (False, True, False)
    assert c.rospr.index.type == "flat" and c.method == [T0]
    # the config section hands the method its own settings object, field for field
    assert c.scoring.convention() == Convention(input_eos=False, choice_eos=True, length_normalize=False,
                                                max_input_tokens=1024, max_choice_tokens=256)
    tuned = two_task_config("rospr.tune.steps=7", "rospr.tune.threads=2").rospr.tune.settings()
    assert (tuned.steps, tuned.threads, tuned.batch_size) == (7, 2, 32)


@pytest.mark.parametrize("override, words", [
    ("rospr.tune.steps=0", ["rospr.tune", "tune.steps must be >= 1"]),
    ("rospr.tune.optimizer=sgd", ["rospr.tune.optimizer"]),
    ("scoring.max_input_tokens=0", ["scoring", "max_input_tokens"]),
    ("rospr.index.hnsw_m=1", ["rospr.index", "hnsw_m"]),
    ("rospr.index.nlsit=4", ["rospr.index.nlsit", "unknown key", "'nlist'"]),
    ("scoring.batch_size=0", ["scoring.batch_size"]),
    ("method=[t0, rospr+magic]", ["method.1", "'rospr+magic' is not one of"]),
    ("method=[rospr, rospr]", ["method", "listed twice"]),
])
def test_bad_values_are_refused_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        two_task_config(override)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_methods_are_values_and_dump_as_their_names():
    c = two_task_config("method=[rospr+var+inter, t0]")
    assert c.method == [Method(var=True, inter=True), Method(retrieve=False)]
    assert c.model_dump(mode="json")["method"] == ["rospr+var+inter", "t0"]


@pytest.mark.parametrize("given, line", [
    (["lr=-1"], "  lr: rospr.tune.lr must be a finite number"),
    (["steps=5", "lr=0"], "  lr: "),
])
def test_class7_a_check_of_the_tune_settings_together_names_its_set_not_the_top_level(given, line):
    """class 7 (issue 32): a tuning setting refused by the settings' own check (no location of its own)
    is blamed on the --set that gave it, never on "(top level)"."""
    from rospr_harness.cli.bank import _tune_settings

    with pytest.raises(ConfigError) as info:
        _tune_settings(given)
    said = str(info.value)
    assert "(top level)" not in said and line in said, said
    assert said.splitlines()[0].startswith("--set lr=") and "(from --set lr=" in said
