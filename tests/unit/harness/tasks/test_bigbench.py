"""BIG-bench JSON tasks: formatting, subtasks, sources, scoring and errors on task.json files the tests
write themselves (in ``tmp_path``, worded here), and counts, choices and a few renderings against the
real upstream files (``bigbench_dir``: those run where the BIG-bench data is on the machine).

Every expected input text below is written out by hand from the format rule of
``rospr_harness.tasks.bigbench`` (its module docstring)::

    task_prefix + example_input_prefix + input
        [+ choice_prefix + choice_prefix.join(choices)   if append_choices_to_input]
        + example_output_prefix

with the defaults ``""``, ``"\\nQ: "``, ``"\\nA: "``, ``"\\n  choice: "`` and ``true``.
"""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

import rospr_harness.tasks.bigbench as bigbench_module
from rospr_harness.tasks import DataSettings, TaskError, get_task
from rospr_harness.tasks.bigbench import KNOWN_SUBTASKS, T0_TASKS, BigBenchTask, list_bigbench
from helpers import Listener, cli, error_line, one_line_error

T0_BIGBENCH = [
    "code_line_description", "conceptual_combinations", "hindu_knowledge", "known_unknowns",
    "language_identification", "logic_grid_puzzle", "logical_deduction", "misconceptions",
    "movie_dialog_same_or_different", "novel_concepts", "strategyqa",
    "formal_fallacies_syllogisms_negation", "vitaminc_fact_verification", "winowhy",
]


def write_task(root: Path, name: str, data: dict | str, subtasks: dict[str, dict | str] | None = None) -> Path:
    """Write ``<root>/<name>/task.json`` holding ``data`` (a string as given, anything else as JSON in
    UTF-8 with its non-ASCII characters as they are) and, for each of ``subtasks``, the sub-folder
    ``<root>/<name>/<subtask>/task.json``; returns the path of the first.

    ``name`` is never one of the 14 paper tasks: a file at one of their paths must hold the benchmark's
    own bytes (``harness/data/manifests``), so written tasks take names of their own."""

    def put(folder: Path, content: dict | str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "task.json"
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=1)
        path.write_text(text, encoding="utf-8")
        return path

    path = put(root / name, data)
    for subtask, content in (subtasks or {}).items():
        put(root / name / subtask, content)
    return path


def first(root: Path, name: str):
    """The first example of ``bigbench/<name>`` read from the folder ``root``."""
    return get_task(f"bigbench/{name}", DataSettings(bigbench=str(root))).load("bigbench", limit=1).examples[0]


def load(root: Path | str, name: str, limit: int | None = None):
    """``bigbench/<name>`` read from ``root`` (a folder or a URL), all its examples (or ``limit``)."""
    return get_task(f"bigbench/{name}", DataSettings(bigbench=str(root))).load("bigbench", limit=limit)


def test_the_fourteen_tasks_are_known():
    assert sorted(T0_TASKS) == sorted(T0_BIGBENCH)


# ---- formatting, on written files -------------------------------------------------------------


def test_format_defaults_with_bool_true(tmp_path):
    # append_choices_to_input true (a JSON bool), no prefixes: the defaults
    path = write_task(tmp_path, "city_birds", {"name": "city_birds", "append_choices_to_input": True, "examples": [
        {"input": "Which bird nests on the ledges of tall buildings?",
         "target_scores": {"The rock pigeon": 1, "The puffin": 0}}]})
    assert '"append_choices_to_input": true' in path.read_text(encoding="utf-8")
    ex = first(tmp_path, "city_birds")
    assert ex.input_text == (
        "\nQ: Which bird nests on the ledges of tall buildings?"
        "\n  choice: The rock pigeon\n  choice: The puffin\nA: "
    )
    assert ex.choices == ("The rock pigeon", "The puffin")
    assert ex.target_scores == (1.0, 0.0) and ex.target_text == "The rock pigeon" and ex.label is None


def test_format_append_missing_means_true(tmp_path):
    # no append_choices_to_input key at all
    path = write_task(tmp_path, "roots", {"examples": [
        {"input": "Which of these is not a root vegetable?",
         "target_scores": {"carrot": 0, "beetroot": 0, "lettuce": 1, "parsnip": 0}}]})
    assert "append_choices_to_input" not in path.read_text(encoding="utf-8")
    ex = first(tmp_path, "roots")
    assert ex.input_text == (
        "\nQ: Which of these is not a root vegetable?"
        "\n  choice: carrot\n  choice: beetroot\n  choice: lettuce\n  choice: parsnip\nA: "
    )
    assert ex.score_of(2) == 1.0 and ex.score_of(0) == 0.0


def test_format_append_as_string_false(tmp_path):
    # "append_choices_to_input": "false" (a string)
    write_task(tmp_path, "jars", {"append_choices_to_input": "false", "examples": [
        {"input": "Three jars stand in a row; the jam jar is in the middle. Which jar is on the far left?",
         "target_scores": {"the honey jar": 1, "the jam jar": 0, "the pickle jar": 0}}]})
    raw = json.loads((tmp_path / "jars" / "task.json").read_text(encoding="utf-8"))
    assert raw["append_choices_to_input"] == "false"
    ex = first(tmp_path, "jars")
    assert ex.input_text == (
        "\nQ: Three jars stand in a row; the jam jar is in the middle. Which jar is on the far left?\nA: "
    )
    assert "choice:" not in ex.input_text
    assert ex.choices == ("the honey jar", "the jam jar", "the pickle jar")  # still scored on every choice


# (fields of the task.json, the example's input, its target_scores, the input text written out by hand)
PREFIX_CASES = {
    # a task prefix, empty input and output prefixes, no choices appended
    "task_prefix_only": (
        {"task_prefix": "Each puzzle names three mugs on a shelf, in a fixed order.\n\n",
         "example_input_prefix": "", "example_output_prefix": "", "append_choices_to_input": False},
        "A blue mug stands left of a white mug. ",
        {"The blue mug is leftmost.": 1, "The white mug is leftmost.": 0},
        "Each puzzle names three mugs on a shelf, in a fixed order.\n\nA blue mug stands left of a white mug. ",
    ),
    # a task prefix before the default input and output prefixes
    "task_prefix_and_defaults": (
        {"task_prefix": "Answer T if the claim holds and F if it does not.", "append_choices_to_input": False},
        "Goldfish forget everything after a few seconds.",
        {"T": 0, "F": 1},
        "Answer T if the claim holds and F if it does not.\nQ: Goldfish forget everything after a few seconds.\nA: ",
    ),
    # custom input and output prefixes around the default choice prefix
    "input_and_output_prefixes": (
        {"task_prefix": "Name the language of the line\n", "example_input_prefix": "Line: ",
         "example_output_prefix": "\nLanguage: ", "append_choices_to_input": True},
        "Egun on denoi",
        {"Basque": 1, "Welsh": 0},
        "Name the language of the line\nLine: Egun on denoi\n  choice: Basque\n  choice: Welsh\nLanguage: ",
    ),
    # a custom choice prefix: before the first choice and between each two
    "choice_prefix": (
        {"choice_prefix": " | "},
        "Pick the prime",
        {"4": 0, "7": 1, "9": 0},
        "\nQ: Pick the prime | 4 | 7 | 9\nA: ",
    ),
    # all four prefixes at once
    "all_four": (
        {"task_prefix": "[T]", "example_input_prefix": "[in]", "example_output_prefix": "[out]",
         "choice_prefix": "[c]"},
        "odd one out",
        {"owl": 0, "cat": 1, "bat": 0},
        "[T][in]odd one out[c]owl[c]cat[c]bat[out]",
    ),
    # null fields mean the defaults, as absent ones do
    "null_means_default": (
        {"task_prefix": None, "example_input_prefix": None, "example_output_prefix": None, "choice_prefix": None,
         "append_choices_to_input": None},
        "Is ice colder than steam?",
        {"yes": 1, "no": 0},
        "\nQ: Is ice colder than steam?\n  choice: yes\n  choice: no\nA: ",
    ),
}


@pytest.mark.parametrize("case", list(PREFIX_CASES))
def test_format_task_prefix_and_custom_prefixes(tmp_path, case):
    fields, text, scores, expected = PREFIX_CASES[case]
    write_task(tmp_path, "prefixed", {**fields, "examples": [{"input": text, "target_scores": scores},
                                                            {"input": text, "target_scores": scores}]})
    unit = load(tmp_path, "prefixed")
    assert [ex.input_text for ex in unit.examples] == [expected, expected]  # every example, not only the first
    assert unit.examples[0].choices == tuple(scores)


def test_novel_concepts_multiple_correct(tmp_path):
    # several target scores of 1 (as novel_concepts has): each of them is a right answer
    write_task(tmp_path, "common_thread", {
        "task_prefix": "Find what the listed things have in common.\n", "example_input_prefix": "",
        "append_choices_to_input": False, "examples": [
            {"input": "What do these share? 1) kettles 2) geysers 3) volcanoes",
             "target_scores": {"They are all found in kitchens.": 0, "They all release steam.": 1,
                               "They all let off steam.": 1, "They are all made of metal.": 0}}]})
    ex = first(tmp_path, "common_thread")
    assert ex.input_text == (
        "Find what the listed things have in common.\nWhat do these share? 1) kettles 2) geysers 3) volcanoes\nA: "
    )
    release = ex.choices.index("They all release steam.")
    let_off = ex.choices.index("They all let off steam.")
    kitchens = ex.choices.index("They are all found in kitchens.")
    assert (kitchens, release, let_off) == (0, 1, 2)  # file order
    assert ex.score_of(release) == 1.0 and ex.score_of(let_off) == 1.0 and ex.score_of(kitchens) == 0.0
    assert ex.score_of(3) == 0.0
    assert ex.gold() == release and ex.target_text == "They all release steam."  # first maximal score


def test_several_correct_targets_are_graded_as_multiple_choice_grade(tmp_path):
    # BIG-bench's multiple_choice_grade: an example earns the target score of the predicted choice; the
    # task's grade is the mean over its examples
    write_task(tmp_path, "shared", {"examples": [
        {"input": "a fruit", "target_scores": {"apple": 1, "pear": 1, "brick": 0}},
        {"input": "a colour", "target_scores": {"stone": 0, "red": 1, "blue": 1, "green": 1}},
        {"input": "a metal", "target_scores": {"tin": 1, "iron": 1, "wood": 0}},
        {"input": "half right", "target_scores": {"close": 0.5, "right": 1, "wrong": 0}},
    ]})
    unit = load(tmp_path, "shared")
    assert [ex.target_scores for ex in unit.examples] == [
        (1.0, 1.0, 0.0), (0.0, 1.0, 1.0, 1.0), (1.0, 1.0, 0.0), (0.5, 1.0, 0.0)]
    assert [ex.gold() for ex in unit.examples] == [0, 1, 0, 1]
    predictions = [1, 3, 2, 0]  # pear (1), green (1), wood (0), close (0.5)
    grades = [ex.score_of(p) for ex, p in zip(unit.examples, predictions)]
    assert grades == [1.0, 1.0, 0.0, 0.5]
    assert sum(grades) / len(grades) == 0.625  # (1 + 1 + 0 + 0.5) / 4
    assert [ex.score_of(ex.gold()) for ex in unit.examples] == [1.0, 1.0, 1.0, 1.0]
    assert unit.examples[1].credit([1, 2, 3]) == 1.0  # a prediction tied between right answers is right


def test_unicode_in_inputs_choices_and_prefixes(tmp_path):
    data = {"task_prefix": "Wähle das Getränk — bitte.\n", "example_input_prefix": "\n問: ",
            "example_output_prefix": "\n答: ", "choice_prefix": "\n  • ", "examples": [
                {"input": "Was trinkt man im Café? ☕",
                 "target_scores": {"Kaffee ☕": 1, "Tee 🍵": 0, "Ñandú": 0}}]}
    expected = ("Wähle das Getränk — bitte.\n\n問: Was trinkt man im Café? ☕"
                "\n  • Kaffee ☕\n  • Tee 🍵\n  • Ñandú\n答: ")
    write_task(tmp_path, "raw_utf8", data)  # the characters themselves, in UTF-8
    write_task(tmp_path, "escaped", json.dumps(data))  # \u escapes (\ud83c\udf75 for the tea)
    assert "\\u" in (tmp_path / "escaped" / "task.json").read_text(encoding="utf-8")
    assert "Ñandú" in (tmp_path / "raw_utf8" / "task.json").read_text(encoding="utf-8")
    for name in ("raw_utf8", "escaped"):
        ex = first(tmp_path, name)
        assert ex.input_text == expected
        assert ex.choices == ("Kaffee ☕", "Tee 🍵", "Ñandú") and ex.target_text == "Kaffee ☕"


def test_empty_inputs(tmp_path):
    scores = {"yes": 1, "no": 0}
    write_task(tmp_path, "blank", {"examples": [{"input": "", "target_scores": scores}]})
    write_task(tmp_path, "blank_no_choices", {"append_choices_to_input": False,
                                              "examples": [{"input": "", "target_scores": scores}]})
    write_task(tmp_path, "blank_no_prefixes", {"example_input_prefix": "", "example_output_prefix": "",
                                               "append_choices_to_input": "False",
                                               "examples": [{"input": "", "target_scores": scores}]})
    assert first(tmp_path, "blank").input_text == "\nQ: \n  choice: yes\n  choice: no\nA: "
    assert first(tmp_path, "blank_no_choices").input_text == "\nQ: \nA: "
    ex = first(tmp_path, "blank_no_prefixes")
    assert ex.input_text == "" and ex.choices == ("yes", "no") and ex.gold() == 0
    # an input that is missing (not empty) is refused
    path = write_task(tmp_path, "no_input", {"examples": [{"target_scores": scores}]})
    with pytest.raises(TaskError) as err:
        load(tmp_path, "no_input")
    assert str(path) in str(err.value) and "examples[0].input" in str(err.value)


# ---- subtasks, on written files ---------------------------------------------------------------


def shelf(tag: str, n: int) -> dict:
    """A subtask's task.json: its own task prefix and ``n`` examples ``<tag> 0`` ... ``<tag> n-1``."""
    return {"task_prefix": f"[{tag}]", "append_choices_to_input": False,
            "examples": [{"input": f"{tag} {i}", "target_scores": {"left": 1, "right": 0}} for i in range(n)]}


def test_subtask_alone(tmp_path):
    # a parent without examples and without a subtasks list: its sub-folders, in name order
    write_task(tmp_path, "arrange", {"name": "arrange", "description": "parent"},
               {"seven_things": shelf("seven", 2), "five_things": shelf("five", 3), "three_things": shelf("three", 1)})
    (tmp_path / "arrange" / "notes").mkdir()  # a sub-folder without a task.json is no subtask
    settings = DataSettings(bigbench=str(tmp_path))
    unit = get_task("bigbench/arrange/five_things", settings).load("bigbench")
    assert len(unit.examples) == 3
    assert unit.task == "bigbench/arrange/five_things"
    assert [ex.input_text for ex in unit.examples] == ["[five]\nQ: five 0\nA: ", "[five]\nQ: five 1\nA: ",
                                                       "[five]\nQ: five 2\nA: "]
    assert [ex.meta["subtask"] for ex in unit.examples] == ["five_things"] * 3
    assert [ex.index for ex in unit.examples] == [0, 1, 2]
    assert unit.source == str(tmp_path / "arrange" / "five_things" / "task.json")

    whole = get_task("bigbench/arrange", settings).load("bigbench", limit=4)
    subs = [ex.meta["subtask"] for ex in whole.examples]
    assert subs[:3] == ["five_things"] * 3 and subs[3:] == ["seven_things"]
    assert [ex.index for ex in whole.examples] == list(range(4))

    union = get_task("bigbench/arrange", settings).load("bigbench")
    assert [ex.input_text for ex in union.examples] == [
        "[five]\nQ: five 0\nA: ", "[five]\nQ: five 1\nA: ", "[five]\nQ: five 2\nA: ",
        "[seven]\nQ: seven 0\nA: ", "[seven]\nQ: seven 1\nA: ", "[three]\nQ: three 0\nA: "]  # each its own format
    assert [ex.meta["subtask"] for ex in union.examples] == (
        ["five_things"] * 3 + ["seven_things"] * 2 + ["three_things"])
    assert [ex.meta["source_index"] for ex in union.examples] == [0, 1, 2, 0, 1, 0]
    assert [ex.index for ex in union.examples] == list(range(6))
    assert union.task == "bigbench/arrange"
    assert list_bigbench(settings) == ["bigbench/arrange", "bigbench/arrange/five_things",
                                       "bigbench/arrange/seven_things", "bigbench/arrange/three_things"]


def test_a_task_with_examples_ignores_its_sub_folders(tmp_path):
    write_task(tmp_path, "own", {"examples": [{"input": "mine", "target_scores": {"a": 1, "b": 0}}]},
               {"extra": shelf("extra", 2)})
    unit = load(tmp_path, "own")
    assert [ex.input_text for ex in unit.examples] == ["\nQ: mine\n  choice: a\n  choice: b\nA: "]
    assert unit.examples[0].meta["subtask"] is None
    assert [ex.input_text for ex in load(tmp_path, "own/extra").examples] == ["[extra]\nQ: extra 0\nA: ",
                                                                            "[extra]\nQ: extra 1\nA: "]


def test_a_parent_with_neither_examples_nor_subtasks_is_refused(tmp_path):
    path = write_task(tmp_path, "hollow", {"name": "hollow"})
    with pytest.raises(TaskError) as err:
        load(tmp_path, "hollow")
    assert str(path) in str(err.value) and "no subtask folders" in str(err.value)
    with pytest.raises(TaskError, match=r"unknown task 'bigbench/hollow/missing'"):
        load(tmp_path, "hollow/missing")  # get_task looks before it reads
    with pytest.raises(TaskError) as err:
        BigBenchTask("hollow", "missing", location=str(tmp_path)).load()
    assert str(tmp_path / "hollow" / "missing" / "task.json") in str(err.value) and "not found" in str(err.value)


EXAMPLES = [
    {"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0}},
    {"input": "name a colour", "target": "red"},  # generative only: skipped
]


@pytest.mark.parametrize(
    "value, appended",
    [(True, True), ("true", True), ("True", True), (" TRUE ", True),
     (False, False), ("false", False), ("False", False), (None, True)],  # None: no key at all
)
def test_append_choices_normalised(tmp_path, value, appended):
    data = {"examples": EXAMPLES}
    if value is not None:
        data["append_choices_to_input"] = value
    path = write_task(tmp_path, "toy", data)
    assert json.loads(path.read_text(encoding="utf-8")).get("append_choices_to_input") == value  # as written
    unit = BigBenchTask("toy", location=str(tmp_path)).load()
    assert unit.skipped == 1 and len(unit.examples) == 1
    expected = "\nQ: 2 + 2 =\n  choice: 4\n  choice: 5\nA: " if appended else "\nQ: 2 + 2 =\nA: "
    assert unit.examples[0].input_text == expected


@pytest.mark.parametrize("value", ["yes", "1", "", 1, 0, ["true"], {"v": True}])
def test_append_choices_bad_value(tmp_path, value):
    path = write_task(tmp_path, "toy", {"examples": EXAMPLES, "append_choices_to_input": value})
    with pytest.raises(TaskError) as err:
        BigBenchTask("toy", location=str(tmp_path)).load()
    assert str(path) in str(err.value) and "append_choices_to_input" in str(err.value)


def test_malformed_task_json(tmp_path):
    settings = DataSettings(bigbench=str(tmp_path))
    path = write_task(tmp_path, "broken", '{"examples": [')
    with pytest.raises(TaskError) as err:
        get_task("bigbench/broken", settings).load("bigbench")
    assert str(path) in str(err.value) and "JSON" in str(err.value)

    path = write_task(tmp_path, "listy", {"examples": [{"input": "q", "target_scores": ["a", "b"]}]})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/listy", settings).load("bigbench")
    assert str(path) in str(err.value) and "examples[0].target_scores" in str(err.value)

    path = write_task(tmp_path, "wordy", {"examples": [{"input": "q", "target_scores": {"a": "one"}}]})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/wordy", settings).load("bigbench")
    assert str(path) in str(err.value) and "target_scores['a']" in str(err.value)

    path = write_task(tmp_path, "empty", {"name": "empty"})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/empty", settings).load("bigbench")
    assert str(path) in str(err.value) and "examples" in str(err.value)

    path = write_task(tmp_path, "prefix", {"examples": EXAMPLES, "choice_prefix": 3})
    with pytest.raises(TaskError) as err:
        get_task("bigbench/prefix", settings).load("bigbench")
    assert str(path) in str(err.value) and "choice_prefix" in str(err.value)


def test_subtasks_list_and_unknown_prompt(tmp_path):
    write_task(tmp_path, "parent", {"name": "parent", "subtasks": ["b_sub", "a_sub"]})
    write_task(tmp_path, "parent/a_sub", {"examples": [EXAMPLES[0]], "task_prefix": "A:"})
    write_task(tmp_path, "parent/b_sub", {"examples": [EXAMPLES[0], EXAMPLES[0]]})
    task = get_task("bigbench/parent", DataSettings(bigbench=str(tmp_path)))
    unit = task.load("bigbench")
    assert [ex.meta["subtask"] for ex in unit.examples] == ["b_sub", "b_sub", "a_sub"]  # list order
    assert unit.examples[2].input_text.startswith("A:\nQ: ")
    assert [ex.input_text for ex in unit.examples] == [
        "\nQ: 2 + 2 =\n  choice: 4\n  choice: 5\nA: ", "\nQ: 2 + 2 =\n  choice: 4\n  choice: 5\nA: ",
        "A:\nQ: 2 + 2 =\n  choice: 4\n  choice: 5\nA: "]
    with pytest.raises(TaskError) as err:
        task.load("default")
    assert "bigbench/parent" in str(err.value) and "'bigbench'" in str(err.value)


def test_subtasks_list_holds_folder_names_and_inline_tasks(tmp_path):
    # the list wins over the sub-folders: "unlisted" is not read
    write_task(tmp_path, "mixed", {"subtasks": [
        {"name": "mixed:inline_one", "example_output_prefix": "\n=> ",
         "examples": [{"input": "½ + ½", "target_scores": {"1": 1, "¼": 0}}]},
        "on_disk",
    ]}, {"on_disk": {"choice_prefix": "\n- ", "examples": [{"input": "pick", "target_scores": {"x": 0, "y": 1}}]},
         "unlisted": shelf("unlisted", 1)})
    unit = load(tmp_path, "mixed")
    assert [ex.meta["subtask"] for ex in unit.examples] == ["inline_one", "on_disk"]
    assert [ex.input_text for ex in unit.examples] == ["\nQ: ½ + ½\n  choice: 1\n  choice: ¼\n=> ",
                                                       "\nQ: pick\n- x\n- y\nA: "]
    assert unit.examples[0].meta["source"].endswith("(subtasks[0])")
    for bad in ([], "on_disk", [3]):
        path = write_task(tmp_path, "badlist", {"subtasks": bad})
        with pytest.raises(TaskError) as err:
            load(tmp_path, "badlist")
        assert str(path) in str(err.value) and "subtasks" in str(err.value)


# ---- sources: a file:// URL and a loopback HTTP server ------------------------------------------


STACKED = ("five_things", "seven_things", "three_things")


@pytest.fixture
def known_stacked(monkeypatch):
    """``stacked`` among the tasks whose subtasks are known (as ``logical_deduction`` is): a URL source
    cannot list folders, so a parent without examples or a subtasks list reads these."""
    monkeypatch.setitem(bigbench_module.KNOWN_SUBTASKS, "stacked", STACKED)


def url_tree(root: Path) -> Path:
    """Written tasks for the URL sources: ``stacked`` (a parent with neither examples nor a subtasks
    list, its sub-folders those known, ``known_stacked``), ``listed`` (a subtasks list), ``bare``
    (neither, and not known: a URL cannot list its folders) and ``plain`` (examples of its own)."""
    subs = {name: {"task_prefix": f"<{name}>", "example_input_prefix": " ", "example_output_prefix": " =",
                   "choice_prefix": " / ",
                   "examples": [{"input": f"order {i} in {name}", "target_scores": {"first": 1, "last": 0}}
                                for i in range(2)]}
            for name in ("three_things", "seven_things", "five_things")}
    write_task(root, "stacked", {"name": "stacked"}, subs)
    write_task(root, "listed", {"subtasks": ["zeta", "alpha"]},
               {"alpha": shelf("alpha", 1), "zeta": shelf("zeta", 2)})
    write_task(root, "bare", {"name": "bare"}, {"hidden": shelf("hidden", 1)})
    write_task(root, "plain", {"examples": [{"input": "Où est la gare ?", "target_scores": {"ici": 0, "là-bas": 1}}]})
    return root


def check_url_source(base: str, root: Path) -> None:
    """What ``url_tree`` reads as from the URL ``base`` (serving ``root``)."""
    assert KNOWN_SUBTASKS["stacked"] == STACKED
    unit = load(base, "stacked")
    assert [ex.meta["subtask"] for ex in unit.examples] == [
        "five_things", "five_things", "seven_things", "seven_things", "three_things", "three_things"]
    assert [ex.input_text for ex in unit.examples[:3]] == [
        "<five_things> order 0 in five_things / first / last =",
        "<five_things> order 1 in five_things / first / last =",
        "<seven_things> order 0 in seven_things / first / last ="]
    assert [ex.index for ex in unit.examples] == list(range(6))
    assert unit.source.startswith(base)
    assert unit.examples[0].meta["source"] == f"{base}/stacked/five_things/task.json"

    alone = load(base, "stacked/seven_things")
    assert [ex.input_text for ex in alone.examples] == ["<seven_things> order 0 in seven_things / first / last =",
                                                        "<seven_things> order 1 in seven_things / first / last ="]
    listed = load(base, "listed")
    assert [ex.input_text for ex in listed.examples] == ["[zeta]\nQ: zeta 0\nA: ", "[zeta]\nQ: zeta 1\nA: ",
                                                         "[alpha]\nQ: alpha 0\nA: "]
    plain = load(base, "plain")
    assert [ex.input_text for ex in plain.examples] == ["\nQ: Où est la gare ?\n  choice: ici\n  choice: là-bas\nA: "]
    assert plain.examples[0].gold() == 1

    with pytest.raises(TaskError) as err:
        load(base, "bare")
    assert "cannot be listed over a URL" in str(err.value) and "bigbench/bare/<subtask>" in str(err.value)
    assert [ex.input_text for ex in load(base, "bare/hidden").examples] == ["[hidden]\nQ: hidden 0\nA: "]
    with pytest.raises(TaskError) as err:
        load(base, "no_such_task")
    assert "no_such_task/task.json" in str(err.value)
    # the folder itself reads the same (but lists its sub-folders)
    assert [ex.input_text for ex in load(root, "stacked").examples] == [ex.input_text for ex in unit.examples]
    assert [ex.input_text for ex in load(root, "bare").examples] == ["[hidden]\nQ: hidden 0\nA: "]


def test_url_source_via_file_url(tmp_path, known_stacked):
    """The urllib path, on a file:// URL: parents without examples use the known subtasks."""
    root = url_tree(tmp_path / "bb")
    base = root.resolve().as_uri()
    assert base.startswith("file://")
    check_url_source(base, root)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request lines on stderr
        pass


@pytest.fixture
def http_root(tmp_path):
    """A loopback HTTP server (a thread) serving ``tmp_path / "site"``: (its base URL, that folder)."""
    site = tmp_path / "site"
    site.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_url_source_via_loopback_http(http_root, known_stacked):
    base, site = http_root
    root = url_tree(site / "tasks")
    check_url_source(f"{base}/tasks", root)
    with pytest.raises(TaskError) as err:  # a 404
        load(f"{base}/tasks", "listed/gone")
    assert f"{base}/tasks/listed/gone/task.json" in str(err.value) and "404" in str(err.value)
    write_task(site / "tasks", "garbled", '{"examples": ')
    with pytest.raises(TaskError) as err:
        load(f"{base}/tasks", "garbled")
    assert f"{base}/tasks/garbled/task.json" in str(err.value) and "JSON" in str(err.value)


def test_a_key_given_twice_in_task_json_is_refused(tmp_path):
    settings = DataSettings(bigbench=str(tmp_path))
    # "4" scored twice: json.loads would keep 0 and grade every answer "4" wrong
    text = '{"examples": [{"input": "2 + 2 =", "target_scores": {"4": 1, "5": 0}},\n' \
           '{"input": "3 + 1 =", "target_scores": {"4": 1, "5": 0, "4": 0}}]}'
    path = write_task(tmp_path, "twice", text)
    with pytest.raises(TaskError) as err:
        get_task("bigbench/twice", settings).load("bigbench")
    msg = str(err.value)
    assert str(path) in msg and "'4'" in msg and "$.examples[1].target_scores" in msg and "\n" not in msg
    path = write_task(tmp_path, "top", '{"examples": [], "name": "a", "examples": []}')
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
    path = write_task(tmp_path, "mytask",
                      '{"name": "mytask", "examples": [{"input": "ok?", "target_scores": {"a": 1, "b": 0}}, '
                      f'{{"input": "q", "target_scores": {BAD_SCORES[case]}}}]}}')
    with pytest.raises(TaskError) as info:
        BigBenchTask("mytask", location=str(tmp_path)).load()
    msg = str(info.value)
    assert str(path) in msg and "examples[1].target_scores['a']" in msg and "finite number" in msg


@pytest.mark.parametrize("scores", ["{}", "[1, 0]", '"a"', "1"])
def test_target_scores_that_are_not_a_nonempty_object_are_refused(tmp_path, scores):
    write_task(tmp_path, "mytask", f'{{"examples": [{{"input": "q", "target_scores": {scores}}}]}}')
    with pytest.raises(TaskError) as info:
        BigBenchTask("mytask", location=str(tmp_path)).load()
    assert "examples[0].target_scores" in str(info.value) and "non-empty object" in str(info.value)


def test_bad_target_score_through_the_cli_is_one_line(tmp_path, run_config):
    task_json = write_task(tmp_path / "bb", "mytask", {"name": "mytask", "examples": [
        {"input": "q", "target_scores": {"a": True, "b": False}}]})
    cfg = run_config.write(tmp_path / "c.yaml", backend="torch", data={"bigbench": str(tmp_path / "bb")},
                           tasks=["bigbench/mytask"])
    error_line(cli("run", cfg, "--out", tmp_path / "r"), str(task_json), "target_scores['a']")


@pytest.mark.parametrize("score", ["1e308", "-1e308", "1" + "0" * 400, "1e7", "NaN"])
def test_target_scores_whose_mean_would_overflow_are_refused_at_load(run_config, tmp_path, score):
    path = write_task(tmp_path / "bb", "huge", '{"examples": [{"input": "q", "target_scores": {"a": 1, "b": 0}}, '
                      f'{{"input": "r", "target_scores": {{"a": 0, "b": {score}}}}}]}}')
    cfg = run_config.write(tmp_path / "c.yaml", data={"bigbench": str(tmp_path / "bb")}, tasks=["bigbench/huge"])
    r = cli("run", cfg, "--out", tmp_path / "run")
    one_line_error(r, str(path), "examples[1].target_scores['b']", "fix the task file")
    assert not (tmp_path / "run").exists()


def test_several_maxima_name_the_first_in_file_order(tmp_path):
    write_task(tmp_path, "mytask", {"name": "mytask", "examples": [
        {"input": "q", "target_scores": {"b": 0, "a": 1, "c": 1}}]})
    ex = BigBenchTask("mytask", location=str(tmp_path)).load().examples[0]
    assert ex.choices == ("b", "a", "c") and ex.target_text == "a" and ex.gold() == 1
    assert [ex.score_of(i) for i in range(3)] == [0.0, 1.0, 1.0]


# ---- the real upstream files (bigbench_dir: where the BIG-bench data is on the machine) ------------


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


def test_real_subtask_alone(bigbench_dir):
    settings = DataSettings(bigbench=str(bigbench_dir))
    raw = json.loads((bigbench_dir / "logical_deduction" / "five_objects" / "task.json").read_text())
    unit = get_task("bigbench/logical_deduction/five_objects", settings).load("bigbench")
    assert len(unit.examples) == len(raw["examples"]) == 500
    assert unit.task == "bigbench/logical_deduction/five_objects"
    whole = get_task("bigbench/logical_deduction", settings).load("bigbench", limit=700)
    subs = [ex.meta["subtask"] for ex in whole.examples]
    assert subs[:500] == ["five_objects"] * 500 and subs[500:] == ["seven_objects"] * 200
    assert [ex.index for ex in whole.examples] == list(range(700))


def test_real_files_render_as_upstream_wrote_them(bigbench_dir):
    """Spot checks of the format rule on the real files, one per kind of format they use."""
    # known_unknowns: append_choices_to_input true (a JSON bool), no prefixes: the defaults
    ex = first(bigbench_dir, "known_unknowns")
    assert ex.input_text == (
        "\nQ: How often did Abraham Lincoln cut his toenails?"
        "\n  choice: Every Saturday night\n  choice: Unknown\nA: "
    )
    assert ex.choices == ("Every Saturday night", "Unknown")

    # hindu_knowledge: no append_choices_to_input key at all
    ex = first(bigbench_dir, "hindu_knowledge")
    assert ex.input_text == (
        "\nQ: Which of the following Hindu deities do not belong to the group of three supreme "
        "divinities known as the Trimurti?"
        "\n  choice: Vishnu\n  choice: Shiva\n  choice: Indra\n  choice: Brahma\nA: "
    )
    assert ex.score_of(2) == 1.0 and ex.score_of(0) == 0.0

    # logic_grid_puzzle: "append_choices_to_input": "false" (a string)
    raw = json.loads((bigbench_dir / "logic_grid_puzzle" / "task.json").read_text())
    assert raw["append_choices_to_input"] == "false"
    ex = first(bigbench_dir, "logic_grid_puzzle")
    assert ex.input_text == "\nQ: " + raw["examples"][0]["input"] + "\nA: "
    assert "choice:" not in ex.input_text

    # task prefixes and custom input/output prefixes
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


def test_real_novel_concepts_multiple_correct(bigbench_dir):
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


def test_real_url_source_via_file_url(bigbench_dir):
    """The urllib path on the real files: conceptual_combinations' parent has no examples, the known
    subtasks stand in for its folders."""
    settings = DataSettings(bigbench=bigbench_dir.resolve().as_uri())
    unit = get_task("bigbench/conceptual_combinations", settings).load("bigbench")
    raw = raw_examples(bigbench_dir, "conceptual_combinations")
    assert len(unit.examples) == len(raw)
    assert [ex.meta["subtask"] for ex in unit.examples] == [sub for sub, _ in raw]
    assert unit.source.startswith("file://")
    with pytest.raises(TaskError) as err:
        get_task("bigbench/no_such_task", settings).load("bigbench")
    assert "no_such_task/task.json" in str(err.value)


# -- a task read from a URL: the read has a total deadline ------------------------------------------


@pytest.fixture(params=["silent", "trickle"])
def listener(request):
    server = Listener(request.param)
    yield server
    server.close()


def test_a_bigbench_url_that_never_finishes_answering_is_cut_at_its_deadline(listener, monkeypatch, caplog):
    import logging

    monkeypatch.setenv("ROSPR_NET_TIMEOUT", "0.5")
    caplog.set_level(logging.INFO, logger="rospr_harness.tasks.fetch")
    with pytest.raises(TaskError) as info:
        BigBenchTask("emoji_movie", location=f"http://127.0.0.1:{listener.port}/tasks").parts()
    msg = str(info.value)
    assert f"127.0.0.1:{listener.port}/tasks/emoji_movie/task.json" in msg
    assert "timed out after 0.5 s" in msg and "ROSPR_NET_TIMEOUT" in msg
    assert any("waiting up to 0.5 s" in r.getMessage() for r in caplog.records)  # the wait is visible


def test_read_url_refuses_a_deadline_setting_that_is_not_a_positive_number(monkeypatch):
    from rospr_harness.tasks.fetch import read_url

    for bad in ("0", "-1", "nan", "soon", "inf"):
        monkeypatch.setenv("ROSPR_NET_TIMEOUT", bad)
        with pytest.raises(TaskError, match="ROSPR_NET_TIMEOUT"):
            read_url("http://127.0.0.1:9/")


@pytest.mark.parametrize("empty", ["", " ", "\n\t "])
def test_class_4_no_figure_hides_what_happened_an_empty_answer_choice_is_refused(run_config, tmp_path, empty):
    """class 4: no figure hides what happened. A choice with no text (``"": 1``) would be scored as its EOS
    alone and win on the model's wish to stop (100%, exit 0): refused at load, in one line naming the file,
    the example and the choice, before anything is written; in any position, as the correct one or not."""
    path = write_task(tmp_path / "bb", "blank_choice", {"examples": [
        {"input": "q", "target_scores": {"a": 1, "b": 0}},
        {"input": "r", "target_scores": {"a": 0, empty: 1}}]})
    with pytest.raises(TaskError) as info:
        BigBenchTask("blank_choice", location=str(tmp_path / "bb")).load()
    assert str(path) in str(info.value) and "examples[1].target_scores" in str(info.value)
    assert f"empty answer choice {empty!r}" in str(info.value)
    cfg = run_config.write(tmp_path / "c.yaml", data={"bigbench": str(tmp_path / "bb")}, tasks=["bigbench/blank_choice"])
    r = cli("run", cfg, "--out", tmp_path / "run")
    one_line_error(r, str(path), "examples[1].target_scores", "empty answer choice")
    assert not (tmp_path / "run").exists()
