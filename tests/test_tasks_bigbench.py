"""BIG-bench JSON tasks: counts and choices against the raw files, formatting, scoring, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rospr_harness.tasks import DataSettings, TaskError, get_task
from rospr_harness.tasks.bigbench import T0_TASKS, BigBenchTask
from helpers import Listener, bigbench_task, cli, error_line, one_line_error

T0_BIGBENCH = [
    "code_line_description", "conceptual_combinations", "hindu_knowledge", "known_unknowns",
    "language_identification", "logic_grid_puzzle", "logical_deduction", "misconceptions",
    "movie_dialog_same_or_different", "novel_concepts", "strategyqa",
    "formal_fallacies_syllogisms_negation", "vitaminc_fact_verification", "winowhy",
]


def raw_examples(bigbench_dir: Path, task: str) -> list[tuple[str | None, dict]]:
    """(subtask, example) pairs read straight from the files: the task's own examples, else its
    sub-folders' in name order."""
    data = json.loads((bigbench_dir / task / "task.json").read_text(encoding="utf-8"))
    if data.get("examples"):
        return [(None, e) for e in data["examples"]]
    out = []
    for sub in sorted(p for p in (bigbench_dir / task).iterdir() if (p / "task.json").is_file()):
        sub_data = json.loads((sub / "task.json").read_text(encoding="utf-8"))
        out.extend((sub.name, e) for e in sub_data["examples"])
    return out


def test_the_fourteen_tasks_are_known():
    assert sorted(T0_TASKS) == sorted(T0_BIGBENCH)


@pytest.mark.parametrize("task", T0_BIGBENCH)
def test_counts_and_choices_match_raw_json(task, bigbench_dir):
    raw = raw_examples(bigbench_dir, task)
    unit = get_task(f"bigbench/{task}", DataSettings(bigbench=str(bigbench_dir))).load("bigbench")
    with_scores = [(sub, e) for sub, e in raw if "target_scores" in e]
    assert len(unit.examples) == len(with_scores)
    assert unit.skipped == len(raw) - len(with_scores)
    assert str(bigbench_dir / task) in unit.source
    for ex, (sub, e) in zip(unit.examples, with_scores):
        assert list(ex.choices) == list(e["target_scores"].keys())
        assert list(ex.target_scores) == [float(v) for v in e["target_scores"].values()]
        assert e["input"] in ex.input_text
        assert ex.meta["subtask"] == sub
        assert ex.label is None


def test_subtask_alone(bigbench_dir):
    settings = DataSettings(bigbench=str(bigbench_dir))
    raw = json.loads((bigbench_dir / "logical_deduction" / "five_objects" / "task.json").read_text())
    unit = get_task("bigbench/logical_deduction/five_objects", settings).load("bigbench")
    assert len(unit.examples) == len(raw["examples"]) == 500
    assert unit.task == "bigbench/logical_deduction/five_objects"
    whole = get_task("bigbench/logical_deduction", settings).load("bigbench", limit=700)
    subs = [ex.meta["subtask"] for ex in whole.examples]
    assert subs[:500] == ["five_objects"] * 500 and subs[500:] == ["seven_objects"] * 200
    assert [ex.index for ex in whole.examples] == list(range(700))


def first(bigbench_dir: Path, name: str):
    return get_task(f"bigbench/{name}", DataSettings(bigbench=str(bigbench_dir))).load("bigbench", limit=1).examples[0]


def test_format_defaults_with_bool_true(bigbench_dir):
    # known_unknowns: append_choices_to_input true (a JSON bool), no prefixes: the defaults
    ex = first(bigbench_dir, "known_unknowns")
    assert ex.input_text == (
        "\nQ: How often did Abraham Lincoln cut his toenails?"
        "\n  choice: Every Saturday night\n  choice: Unknown\nA: "
    )
    assert ex.choices == ("Every Saturday night", "Unknown")


def test_format_append_missing_means_true(bigbench_dir):
    # hindu_knowledge: no append_choices_to_input key at all
    ex = first(bigbench_dir, "hindu_knowledge")
    assert ex.input_text == (
        "\nQ: Which of the following Hindu deities do not belong to the group of three supreme "
        "divinities known as the Trimurti?"
        "\n  choice: Vishnu\n  choice: Shiva\n  choice: Indra\n  choice: Brahma\nA: "
    )
    assert ex.score_of(2) == 1.0 and ex.score_of(0) == 0.0


def test_format_append_as_string_false(bigbench_dir):
    # logic_grid_puzzle: "append_choices_to_input": "false" (a string)
    raw = json.loads((bigbench_dir / "logic_grid_puzzle" / "task.json").read_text())
    assert raw["append_choices_to_input"] == "false"
    ex = first(bigbench_dir, "logic_grid_puzzle")
    assert ex.input_text == "\nQ: " + raw["examples"][0]["input"] + "\nA: "
    assert "choice:" not in ex.input_text


def test_format_task_prefix_and_custom_prefixes(bigbench_dir):
    ex = first(bigbench_dir, "logical_deduction/three_objects")
    assert ex.input_text == (
        "The following paragraphs each describe a set of three objects arranged in a fixed order. "
        "The statements are logically consistent within each paragraph.\n\n"
        "On a shelf, there are three books: a black book, an orange book, and a blue book. The blue "
        "book is to the right of the orange book. The orange book is to the right of the black book. "
    )
    ex = first(bigbench_dir, "misconceptions")
    assert ex.input_text == (
        "Is the following statement true or false? Output T for true and F for false."
        "\nQ: Twinkies are edible for decades or longer.\nA: "
    )
    ex = first(bigbench_dir, "language_identification")
    assert ex.input_text.startswith(
        "Given a sentence, select the correct language among the choices\nSentence: Ihtin orhor nohe"
    )
    assert ex.input_text.endswith("\n  choice: Chiquihuitlan Mazatec\n  choice: Oksapmin\nLanguage: ")


def test_novel_concepts_multiple_correct(bigbench_dir):
    ex = first(bigbench_dir, "novel_concepts")
    assert ex.input_text == (
        "Let's do some find-the-common-concept problems. In these problems, your goal is to identify "
        "the underlying concept or theme that relates the things listed. Make sure to answer "
        "carefully.\nWhat do the following have in common? 1) rock climbing 2) elevators "
        "3) helicopters\nA: "
    )
    vertical = ex.choices.index("They all involve vertical movement.")
    up = ex.choices.index("They all involve going up.")
    rocks = ex.choices.index("They all involve rocks.")
    assert ex.score_of(vertical) == 1.0 and ex.score_of(up) == 1.0 and ex.score_of(rocks) == 0.0
    assert ex.gold() == vertical  # first maximal score


# ---- tasks written into tmp_path --------------------------------------------------------------


EXAMPLES = [
    {"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0}},
    {"input": "name a colour", "target": "red"},  # generative only: skipped
]


@pytest.mark.parametrize(
    "value, appended", [("true", True), ("True", True), ("False", False), (False, False), (None, True)]
)
def test_append_choices_normalised(tmp_path, value, appended):
    data = {"examples": EXAMPLES}
    if value is not None:
        data["append_choices_to_input"] = value
    bigbench_task(tmp_path, "toy", data)
    unit = BigBenchTask("toy", location=str(tmp_path)).load()
    assert unit.skipped == 1 and len(unit.examples) == 1
    expected = "\nQ: 2 + 2 =" + ("\n  choice: 4\n  choice: 5" if appended else "") + "\nA: "
    assert unit.examples[0].input_text == expected


def test_append_choices_bad_value(tmp_path):
    path = bigbench_task(tmp_path, "toy", {"examples": EXAMPLES, "append_choices_to_input": "yes"})
    with pytest.raises(TaskError) as err:
        BigBenchTask("toy", location=str(tmp_path)).load()
    assert str(path) in str(err.value) and "append_choices_to_input" in str(err.value)


def test_malformed_task_json(tmp_path):
    settings = DataSettings(bigbench=str(tmp_path))
    path = bigbench_task(tmp_path, "broken", '{"examples": [')
    with pytest.raises(TaskError) as err:
        get_task("bigbench/broken", settings).load("bigbench")
    assert str(path) in str(err.value) and "JSON" in str(err.value)

    path = bigbench_task(tmp_path, "listy", {"examples": [{"input": "q", "target_scores": ["a", "b"]}]})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/listy", settings).load("bigbench")
    assert str(path) in str(err.value) and "examples[0].target_scores" in str(err.value)

    path = bigbench_task(tmp_path, "wordy", {"examples": [{"input": "q", "target_scores": {"a": "one"}}]})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/wordy", settings).load("bigbench")
    assert str(path) in str(err.value) and "target_scores['a']" in str(err.value)

    path = bigbench_task(tmp_path, "empty", {"name": "empty"})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/empty", settings).load("bigbench")
    assert str(path) in str(err.value) and "examples" in str(err.value)

    path = bigbench_task(tmp_path, "prefix", {"examples": EXAMPLES, "choice_prefix": 3})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/prefix", settings).load("bigbench")
    assert str(path) in str(err.value) and "choice_prefix" in str(err.value)


def test_subtasks_list_and_unknown_prompt(tmp_path):
    bigbench_task(tmp_path, "parent", {"name": "parent", "subtasks": ["b_sub", "a_sub"]})
    bigbench_task(tmp_path, "parent/a_sub", {"examples": [EXAMPLES[0]], "task_prefix": "A:"})
    bigbench_task(tmp_path, "parent/b_sub", {"examples": [EXAMPLES[0], EXAMPLES[0]]})
    task = get_task("bigbench/parent", DataSettings(bigbench=str(tmp_path)))
    unit = task.load("bigbench")
    assert [ex.meta["subtask"] for ex in unit.examples] == ["b_sub", "b_sub", "a_sub"]  # list order
    assert unit.examples[2].input_text.startswith("A:\nQ: ")
    with pytest.raises(TaskError) as err:
        task.load("default")
    assert "bigbench/parent" in str(err.value) and "'bigbench'" in str(err.value)


def test_url_source_via_file_url(bigbench_dir):
    """The urllib path, on a file:// URL: parents without examples use the known subtasks."""
    settings = DataSettings(bigbench=bigbench_dir.resolve().as_uri())
    unit = get_task("bigbench/conceptual_combinations", settings).load("bigbench")
    raw = raw_examples(bigbench_dir, "conceptual_combinations")
    assert len(unit.examples) == len(raw)
    assert [ex.meta["subtask"] for ex in unit.examples] == [sub for sub, _ in raw]
    assert unit.source.startswith("file://")
    with pytest.raises(TaskError) as err:
        get_task("bigbench/no_such_task", settings).load("bigbench")
    assert "no_such_task/task.json" in str(err.value)


def test_a_key_given_twice_in_task_json_is_refused(tmp_path):
    settings = DataSettings(bigbench=str(tmp_path))
    # "4" scored twice: json.loads would keep 0 and grade every answer "4" wrong
    text = '{"examples": [{"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0}},\n' \
           '{"input": "3 + 1 =", "target_scores": {"4": 1, "5": 0, "4": 0}}]}'
    path = bigbench_task(tmp_path, "twice", text)
    with pytest.raises(TaskError) as err:
        get_task("bigbench/twice", settings).load("bigbench")
    msg = str(err.value)
    assert str(path) in msg and "'4'" in msg and "$.examples[1].target_scores" in msg and "\n" not in msg
    path = bigbench_task(tmp_path, "top", '{"examples": [], "name": "a", "examples": []}')
    with pytest.raises(TaskError, match=r"key 'examples' appears more than once in \$ "):
        get_task("bigbench/top", settings).load("bigbench")


# -- target_scores must be finite numbers -----------------------------------------------------------

BAD_SCORES = {
    "bool": '{"a": true, "b": false}',
    "string": '{"a": "1", "b": 0}',
    "null": '{"a": null, "b": 1}',
    "list": '{"a": [1], "b": 0}',
    "object": '{"a": {"v": 1}, "b": 0}',
    "nan": '{"a": NaN, "b": 1}',
    "infinity": '{"a": Infinity, "b": 0}',
    "minus_infinity": '{"a": -Infinity, "b": 0}',
}


@pytest.mark.parametrize("case", sorted(BAD_SCORES))
def test_target_scores_that_are_not_finite_numbers_are_refused(tmp_path, case):
    # written as text: NaN and Infinity are not JSON, but Python's reader accepts them
    path = bigbench_task(tmp_path, "mytask",
                         '{"name": "mytask", "examples": [{"input": "ok?", "target_scores": {"a": 1, "b": 0}}, '
                         f'{{"input": "q", "target_scores": {BAD_SCORES[case]}}}]}}')
    with pytest.raises(TaskError) as info:
        BigBenchTask("mytask", location=str(tmp_path)).load()
    msg = str(info.value)
    assert str(path) in msg and "examples[1].target_scores['a']" in msg and "finite number" in msg


@pytest.mark.parametrize("scores", ["{}", "[1, 0]", '"a"', "1"])
def test_target_scores_that_are_not_a_nonempty_object_are_refused(tmp_path, scores):
    bigbench_task(tmp_path, "mytask", f'{{"examples": [{{"input": "q", "target_scores": {scores}}}]}}')
    with pytest.raises(TaskError) as info:
        BigBenchTask("mytask", location=str(tmp_path)).load()
    assert "examples[0].target_scores" in str(info.value) and "non-empty object" in str(info.value)


def test_bad_target_score_through_the_cli_is_one_line(tmp_path, run_config):
    task_json = bigbench_task(tmp_path / "bb", "mytask", {"name": "mytask", "examples": [
        {"input": "q", "target_scores": {"a": True, "b": False}}]})
    cfg = run_config.write(tmp_path / "c.yaml", backend="torch", data={"bigbench": str(tmp_path / "bb")},
                           tasks=["bigbench/mytask"])
    error_line(cli("run", cfg, "--out", tmp_path / "r"), str(task_json), "target_scores['a']")


@pytest.mark.parametrize("score", ["1e308", "-1e308", "1" + "0" * 400, "1e7", "NaN"])
def test_target_scores_whose_mean_would_overflow_are_refused_at_load(run_config, tmp_path, score):
    path = bigbench_task(tmp_path / "bb", "huge", '{"examples": [{"input": "q", "target_scores": {"a": 1, "b": 0}}, '
                         f'{{"input": "r", "target_scores": {{"a": 0, "b": {score}}}}}]}}')
    cfg = run_config.write(tmp_path / "c.yaml", data={"bigbench": str(tmp_path / "bb")}, tasks=["bigbench/huge"])
    r = cli("run", cfg, "--out", tmp_path / "run")
    one_line_error(r, str(path), "examples[1].target_scores['b']", "fix the task file")
    assert not (tmp_path / "run").exists()


def test_several_maxima_name_the_first_in_file_order(tmp_path):
    bigbench_task(tmp_path, "mytask", {"name": "mytask", "examples": [
        {"input": "q", "target_scores": {"b": 0, "a": 1, "c": 1}}]})
    ex = BigBenchTask("mytask", location=str(tmp_path)).load().examples[0]
    assert ex.choices == ("b", "a", "c") and ex.target_text == "a" and ex.gold() == 1
    assert [ex.score_of(i) for i in range(3)] == [0.0, 1.0, 1.0]


# -- a task read from a URL: the read has a total deadline ------------------------------------------


@pytest.fixture(params=["silent", "trickle"])
def listener(request):
    server = Listener(request.param)
    yield server
    server.close()


def test_a_bigbench_url_that_never_finishes_answering_is_cut_at_its_deadline(listener, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("ROSPR_NET_TIMEOUT", "0.5")
    caplog.set_level(logging.INFO, logger="rospr_harness.datatools.fetch")
    with pytest.raises(TaskError) as info:
        BigBenchTask("emoji_movie", location=f"http://127.0.0.1:{listener.port}/tasks").parts()
    msg = str(info.value)
    assert f"127.0.0.1:{listener.port}/tasks/emoji_movie/task.json" in msg
    assert "timed out after 0.5 s" in msg and "ROSPR_NET_TIMEOUT" in msg
    assert any("waiting up to 0.5 s" in r.getMessage() for r in caplog.records)  # the wait is visible


def test_read_url_refuses_a_deadline_setting_that_is_not_a_positive_number(monkeypatch):
    from rospr_harness.datatools.fetch import read_url

    for bad in ("0", "-1", "nan", "soon", "inf"):
        monkeypatch.setenv("ROSPR_NET_TIMEOUT", bad)
        with pytest.raises(TaskError, match="ROSPR_NET_TIMEOUT"):
            read_url("http://127.0.0.1:9/")
