"""The task registry: names, families, unknown names and prompts."""

from __future__ import annotations

import pytest

from rospr_harness.tasks import DataSettings, Task, TaskError, get_task, list_tasks

HELDOUT = ["anli_r1", "anli_r2", "anli_r3", "cb", "rte", "wsc", "copa", "wic", "winogrande",
           "story_cloze", "hellaswag"]


def test_list_tasks_from_a_data_root(data_root, bigbench_dir):
    names = list_tasks(DataSettings.from_env(data_root))
    assert names[: len(HELDOUT)] == HELDOUT
    on_disk = sorted(p.name for p in bigbench_dir.iterdir() if (p / "task.json").is_file())
    assert [n for n in names if n.startswith("bigbench/") and n.count("/") == 1] == [f"bigbench/{t}" for t in on_disk]
    assert "bigbench/logical_deduction/three_objects" in names
    assert "bigbench/conceptual_combinations/homonyms" in names


def test_url_source_lists_the_t0_tasks():
    names = list_tasks(DataSettings(bigbench="https://example.invalid/tasks"))
    assert len([n for n in names if n.startswith("bigbench/") and n.count("/") == 1]) == 14
    # the two tasks made of subtasks, with their folders (6 and 3)
    assert len([n for n in names if n.startswith("bigbench/conceptual_combinations/")]) == 6
    assert len([n for n in names if n.startswith("bigbench/logical_deduction/")]) == 3


@pytest.mark.parametrize("name", [*HELDOUT, "bigbench/winowhy", "builtin/topic"])
def test_tasks_implement_the_protocol(name, data_root):
    task = get_task(name, DataSettings.from_env(data_root))
    assert isinstance(task, Task) and task.name == name


def test_the_protocol_says_what_trains_and_where_rows_come_from(data_root, tmp_path):
    settings = DataSettings.from_env(data_root)
    wsc, animals = (get_task(n, settings) for n in ("super_glue/wsc.fixed", "builtin/animals"))
    own = tmp_path / "bigbench" / "own_task" / "task.json"  # a BIG-bench task of our own (no download needed)
    own.parent.mkdir(parents=True)
    own.write_text('{"examples": [{"input": "Is ice cold?", "target_scores": {"yes": 1, "no": 0}}]}')
    winowhy = get_task("bigbench/own_task", DataSettings(bigbench=str(tmp_path / "bigbench")))
    marks = wsc.prompt_marks()
    # the listing is every template (file order); the scored prompts are those with choices
    assert [p for p, m in marks.items() if "training only" not in m] == wsc.prompts()
    assert set(wsc.training_prompts()) == set(marks) and any("original" in m for m in marks.values())
    assert animals.training_prompts() == animals.prompts() and set(animals.prompt_marks().values()) == {()}
    assert winowhy.training_prompts() == ["bigbench"] and winowhy.prompt_marks() == {"bigbench": ()}
    assert (wsc.folder, animals.folder, winowhy.folder) == ("super_glue/wsc.fixed", None, None)
    assert [(s.role, s.kind) for s in animals.split_status()] == [("eval", "builtin")]
    assert [(s.task, s.split, s.kind, s.ok) for s in winowhy.split_status()] == [
        ("bigbench/own_task", "examples", "folder", True)]
    assert [s.role for s in get_task("rte", settings).split_status()] == ["eval"]  # a held-out setting is a target


def test_unknown_task_lists_close_matches_and_families(data_root):
    settings = DataSettings.from_env(data_root)
    with pytest.raises(TaskError) as err:
        get_task("bigbench/novel_concept", settings)
    msg = str(err.value)
    assert "bigbench/novel_concepts" in msg and "builtin/<name>" in msg and "bigbench/<task>" in msg
    with pytest.raises(TaskError) as err:
        get_task("rtee", settings)
    assert "'rte'" in str(err.value)
    with pytest.raises(TaskError) as err:
        get_task("builtin/topics", settings)
    assert "builtin/topic" in str(err.value)


def test_unknown_prompt_lists_available(templates_dir, bigbench_dir):
    settings = DataSettings(templates_dir=templates_dir, bigbench=str(bigbench_dir))
    with pytest.raises(TaskError) as err:
        get_task("cb", settings).load("no such prompt")
    msg = str(err.value)
    assert "no such prompt" in msg and "GPT-3 style" in msg
    assert str(templates_dir / "super_glue" / "cb" / "templates.yaml") in msg
    with pytest.raises(TaskError) as err:
        get_task("builtin/nli", settings).load("nope")
    assert "true_false_neither" in str(err.value)
    with pytest.raises(TaskError) as err:
        get_task("bigbench/winowhy", settings).load("nope")
    assert "'bigbench'" in str(err.value)
