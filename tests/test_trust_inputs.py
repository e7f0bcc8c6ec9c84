"""Issue 10, item 7: input validation where it was loose.

- BIG-bench ``target_scores`` must be finite numbers; anything else is refused naming the file and
  the field. The grading rule for unusual scores (bigbench.py's docstring) is checked against hand
  computations: examples whose grade does not depend on the prediction, and one whose grade is read
  off the model's own scores in the records by hand.
- A config listing a task twice (same entry repeated, or with other limits / prompts) is refused
  with the key path, never one entry silently dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.config import ConfigError, load_config
from harness.tasks.base import TaskError
from harness.tasks.bigbench import BigBenchTask


def write_task(root: Path, examples: list, name: str = "mytask") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.json").write_text(json.dumps({"name": name, "examples": examples}))
    return folder / "task.json"


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
    folder = tmp_path / "mytask"
    folder.mkdir()
    # written as text: NaN and Infinity are not JSON, but Python's reader accepts them
    (folder / "task.json").write_text(
        '{"name": "mytask", "examples": [{"input": "ok?", "target_scores": {"a": 1, "b": 0}}, '
        f'{{"input": "q", "target_scores": {BAD_SCORES[case]}}}]}}')
    with pytest.raises(TaskError) as info:
        BigBenchTask("mytask", location=str(tmp_path)).load()
    msg = str(info.value)
    assert str(folder / "task.json") in msg and "examples[1].target_scores['a']" in msg and "finite number" in msg


@pytest.mark.parametrize("scores", ["{}", "[1, 0]", '"a"', "1"])
def test_target_scores_that_are_not_a_nonempty_object_are_refused(tmp_path, scores):
    folder = tmp_path / "mytask"
    folder.mkdir()
    (folder / "task.json").write_text(f'{{"examples": [{{"input": "q", "target_scores": {scores}}}]}}')
    with pytest.raises(TaskError) as info:
        BigBenchTask("mytask", location=str(tmp_path)).load()
    assert "examples[0].target_scores" in str(info.value) and "non-empty object" in str(info.value)


def test_bad_target_score_through_the_cli_is_one_line(tmp_path, tiny_model_dir):
    task_json = write_task(tmp_path / "bb", [{"input": "q", "target_scores": {"a": True, "b": False}}])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name_or_path": str(tiny_model_dir)}, "backend": "torch",
                                   "data": {"bigbench": str(tmp_path / "bb")}, "tasks": ["bigbench/mytask"]}))
    res = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and str(task_json) in lines[0] and "target_scores['a']" in lines[0], res.output


# -- the grading rule for unusual scores, by hand ---------------------------------------------------

# Grades that do not depend on what the model predicts (all scores of an example equal).
FIXED = [
    ({"a": 0, "b": 0}, 0.0),                    # all zero: counts, earns 0
    ({"a": 1, "b": 1.0}, 1.0),                  # several maxima (int and float alike)
    ({"a": -1, "b": -1}, -1.0),                 # negative: a negative grade, no clipping
    ({"a": 0.25, "b": 0.25, "c": 0.25}, 0.25),  # fractional
    ({"a": 2, "b": 2}, 2.0),                    # above 1: no normalisation
]
FREE = {"x": 1, "y": 0.5, "z": -0.5}  # the grade is the predicted choice's score


def test_several_maxima_name_the_first_in_file_order(tmp_path):
    write_task(tmp_path, [{"input": "q", "target_scores": {"b": 0, "a": 1, "c": 1}}])
    ex = BigBenchTask("mytask", location=str(tmp_path)).load().examples[0]
    assert ex.choices == ("b", "a", "c") and ex.target_text == "a" and ex.gold() == 1
    assert [ex.score_of(i) for i in range(3)] == [0.0, 1.0, 1.0]


def test_unusual_scores_are_graded_as_written_down(tmp_path, tiny_model_dir):
    from harness.runner import run

    examples = [{"input": f"question {i}", "target_scores": s} for i, (s, _) in enumerate(FIXED)]
    examples.append({"input": "which one", "target_scores": FREE})
    write_task(tmp_path / "bb", examples)
    cfg = load_config(None, tree={"model": {"name_or_path": str(tiny_model_dir)}, "backend": "torch",
                                  "data": {"bigbench": str(tmp_path / "bb")}, "tasks": ["bigbench/mytask"]})
    res = run(cfg, tmp_path / "run")
    (unit,) = res.units
    records = [json.loads(line) for line in (tmp_path / "run" / unit.records).read_text().splitlines()]
    assert len(records) == 6
    for rec, (_, grade) in zip(records, FIXED):
        assert rec["score"] == grade
    free = records[-1]
    # by hand from the model's own scores: argmax, the first on a tie, then that choice's target score
    best = max(free["scores"])
    predicted = free["scores"].index(best)
    assert free["prediction"] == predicted
    hand_free = list(FREE.values())[predicted]
    assert free["score"] == hand_free
    hand_mean = (0.0 + 1.0 - 1.0 + 0.25 + 2.0 + hand_free) / 6
    assert unit.accuracy == pytest.approx(hand_mean, abs=1e-12)
    assert res.overall["t0"] == pytest.approx(hand_mean, abs=1e-12)


# -- a task listed twice ------------------------------------------------------------------------------

MODEL = {"name_or_path": "build/tiny-t0"}


@pytest.mark.parametrize("tasks, path", [
    (["builtin/animals", "builtin/nli", "builtin/animals"], "tasks.2"),
    ([{"name": "builtin/animals", "limit": 5}, {"name": "builtin/animals", "limit": 9}], "tasks.1"),
    ([{"name": "builtin/animals", "prompts": ["animal_check"]},
      {"name": "builtin/animals", "prompts": ["mentions_animal"]}], "tasks.1"),
    (["builtin/animals", {"name": "builtin/animals", "split": "test"}], "tasks.1"),
])
def test_a_task_listed_twice_is_refused_with_its_key_path(tasks, path):
    with pytest.raises(ConfigError) as info:
        load_config(None, tree={"model": MODEL, "tasks": tasks})
    msg = str(info.value)
    assert f"{path}: task 'builtin/animals' is already listed at tasks.0" in msg and "list each task once" in msg


def test_a_prompt_listed_twice_in_one_entry_is_refused():
    with pytest.raises(ConfigError) as info:
        load_config(None, tree={"model": MODEL, "tasks": [
            {"name": "builtin/animals", "prompts": ["animal_check", "mentions_animal", "animal_check"]}]})
    assert "tasks.0.prompts: 'animal_check' is listed twice" in str(info.value)


def test_a_task_listed_twice_through_set_is_refused_at_the_cli(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": MODEL, "tasks": ["builtin/animals", "builtin/nli"]}))
    res = CliRunner().invoke(app, ["run", str(cfg), "--set", "tasks.1.name=builtin/animals"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: --set tasks.1.name=builtin/animals: invalid setting (config {cfg})" in res.output
    assert "tasks.1: task 'builtin/animals' is already listed at tasks.0" in res.output


def test_distinct_tasks_are_accepted():
    cfg = load_config(None, tree={"model": MODEL, "tasks": ["builtin/animals", "builtin/nli",
                                                             {"name": "builtin/topic", "prompts": ["a", "b"]}]})
    assert [t.name for t in cfg.tasks] == ["builtin/animals", "builtin/nli", "builtin/topic"]


# -- class 3: a template's work per row is bounded ---------------------------------------------------

BUDGET_CASES = {
    # the example: the sandbox caps a range's size, not the work of nested loops
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    # not tied to it: one loop whose body walks a large list each time (a single call per item)
    "join in a loop": "{% set l = range(100000)|list %}{% for x in l %}{{ l|join(',')|length }}{% endfor %}",
    "doubling a string": "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                         "{% endfor %}{{ ns.s|length }}",
    "a huge width": "{{ 'a'.ljust(10 ** 12) }}",
    "a huge format width": "{{ '{:>999999999999}'.format(1) }}",
    "a huge repetition": "{{ ('x' * 10 ** 12) }}",
}


@pytest.mark.parametrize("case", sorted(BUDGET_CASES))
def test_a_template_past_its_work_budget_is_one_error_naming_template_and_row(case, monkeypatch):
    from harness.tasks import templates
    from harness.tasks.base import TaskError
    from harness.tasks.templates import Template

    monkeypatch.setattr(templates, "RENDER_STEPS", 20_000)  # small, so that the test is quick
    monkeypatch.setattr(templates, "RENDER_SIZE", 100_000)
    t = Template(id="t-9", name=case, jinja=BUDGET_CASES[case] + " ||| a", answer_choices="a ||| b",
                 source="hostile.yaml")
    with pytest.raises(TaskError) as info:
        t.render({"text": "hello"}, truncate=False, row_name="row 5 of hostile/validation")
    msg = str(info.value)
    assert f"'{case}'" in msg and "hostile.yaml" in msg and "row 5 of hostile/validation" in msg
    assert "RENDER_STEPS" in msg


def test_ordinary_templates_render_within_the_budget():
    from harness.tasks.templates import Template

    t = Template(id="t-1", name="ok", jinja="{% for w in text.split() %}{{ loop.index }}:{{ w|upper }} {% endfor %}"
                 "{{ answer_choices|join(', ') }} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes",
                 source="fine.yaml")
    r = t.render({"text": "a long passage " * 500, "label": 1})
    assert r.label == 1 and r.input_text.startswith("1:A 2:LONG")


# work-sized settings have upper bounds (a value past them hangs or exhausts memory, it never helps)
@pytest.mark.parametrize("key", ["onnxruntime.threads", "scoring.threads", "scoring.batch_size", "ray.scorers",
                                 "ray.max_in_flight", "triton.concurrency", "triton.retries", "rospr.queries",
                                 "rospr.top_n", "tasks.0.limit"])
def test_work_sized_settings_have_an_upper_bound(key):
    from harness.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=100000000000"], tree={"model": MODEL, "tasks": ["builtin/animals"]})
    assert f"{key}: Input should be less than or equal to" in str(info.value)
    assert f"--set {key}=100000000000" in str(info.value).splitlines()[0]


@pytest.mark.parametrize("value", ["true", "no", "on"])
def test_a_boolean_is_not_a_number(value):
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match="is a boolean, not a number"):
        load_config(None, [f"tasks.0.limit={value}"], tree={"model": MODEL, "tasks": ["builtin/animals"]})
