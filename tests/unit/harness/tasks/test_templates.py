"""promptsource template reading and rendering, on files written into tmp_path."""

from __future__ import annotations

import pytest
import yaml

from rospr_harness.tasks import TaskError
from rospr.parsing import BudgetLoader
from rospr_harness.tasks.templates import Template, TemplateLoader, load_templates, load_templates_file
from helpers import cli, one_line_error, toy_task

HEADER = "dataset: toy\ntemplates:\n"


def template_yaml(tid: str, name: str, jinja: str, choices: str | None, original: bool = True) -> str:
    return (
        f"  {tid}: !Template\n"
        f"    answer_choices: {yaml.safe_dump(choices).splitlines()[0] if choices is not None else 'null'}\n"
        f"    id: {tid}\n"
        f"    jinja: {yaml.safe_dump(jinja, width=10_000).splitlines()[0] if chr(10) not in jinja else repr(jinja)}\n"
        "    metadata: !TemplateMetadata\n"
        "      choices_in_prompt: true\n"
        "      metrics:\n"
        "      - Accuracy\n"
        f"      original_task: {'true' if original else 'false'}\n"
        f"    name: {name}\n"
        "    reference: ''\n"
    )


def write(tmp_path, body: str, dataset: str = "toy", subset: str | None = None):
    folder = tmp_path / dataset / (subset or "")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "templates.yaml"
    path.write_text(HEADER + body, encoding="utf-8")
    return path


def test_reads_tags_with_a_safe_loader(tmp_path):
    assert issubclass(TemplateLoader, BudgetLoader)
    path = write(
        tmp_path,
        template_yaml("a1", "first", "{{premise}} ||| {{answer_choices[label]}}", "Yes ||| No")
        + template_yaml("b2", "second", "{{premise}}?", None, original=False),
        subset="sub",
    )
    templates = load_templates(tmp_path, "toy", "sub")
    assert [t.name for t in templates] == ["first", "second"]
    first = templates[0]
    assert (first.id, first.answer_choices, first.original_task, first.metrics) == (
        "a1", "Yes ||| No", True, ("Accuracy",))
    assert first.choices_in_prompt and first.source == str(path)
    assert templates[1].answer_choices is None and not templates[1].original_task


def test_python_object_tags_are_refused(tmp_path):
    path = tmp_path / "evil" / "templates.yaml"
    path.parent.mkdir()
    path.write_text("templates: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")
    with pytest.raises(TaskError) as err:
        load_templates_file(path)
    assert str(path) in str(err.value)


def test_missing_file_names_expected_path(tmp_path):
    with pytest.raises(TaskError) as err:
        load_templates(tmp_path, "nope", "sub")
    assert str(tmp_path / "nope" / "sub" / "templates.yaml") in str(err.value)


def test_render_like_promptsource():
    t = Template(id="x", name="t", jinja="{{premise}} Right? ||| {{ answer_choices[label] }}",
                 answer_choices="{{c1}} ||| {{c2}} ", source="mem.yaml")
    row = {"premise": "A ||| B", "c1": " yes ", "c2": "no", "label": 1}
    r = t.render(row)
    # "|||" inside a row's field is protected; parts and choices are stripped
    assert r.input_text == "A ||| B Right?" and r.target == "no"
    assert r.choices == ("yes", "no") and r.label == 1
    ex = t.example(row, task="toy", index=7)
    assert (ex.input_text, ex.choices, ex.label, ex.target_text, ex.index) == ("A ||| B Right?", ("yes", "no"), 1, "no", 7)
    # promptsource truncates every variable to 2048 characters (+5 leeway) with "..."
    long = t.render(dict(row, premise="w " * 2000))
    assert long.input_text.endswith("... Right?") and len(long.input_text) < 2100


def test_empty_input_means_does_not_apply():
    t = Template(id="x", name="t", jinja="{% if q == 'effect' %}{{p}} ||| {{answer_choices[label]}}{% endif %}",
                 answer_choices="a ||| b")
    assert t.render({"q": "cause", "p": "x", "label": 0}) is None
    assert t.example({"q": "cause", "p": "x", "label": 0}, task="toy", index=0) is None
    assert t.render({"q": "effect", "p": "x", "label": 0}).input_text == "x"


def test_unlabelled_row_has_no_label():
    t = Template(id="x", name="t", jinja="{{p}} ||| {% if label != -1 %}{{answer_choices[label]}}{% endif %}",
                 answer_choices="a ||| b")
    ex = t.example({"p": "x", "label": -1}, task="toy", index=0)
    assert ex.label is None and ex.target_text is None and ex.choices == ("a", "b")


def test_choice_filter_is_deterministic_per_row():
    t = Template(id="x", name="t", jinja="{{ ['one', 'two', 'three', 'four'] | choice }} {{p}}")
    seen = {t.render({"p": str(i)}).input_text.split()[0] for i in range(40)}
    assert seen == {"one", "two", "three", "four"}  # it does vary across rows ...
    assert all(t.render({"p": str(i)}) == t.render({"p": str(i)}) for i in range(40))  # ... not runs


def test_most_frequent_filter():
    t = Template(id="x", name="t", jinja="{{ xs | most_frequent | join(',') }}")
    assert t.render({"xs": ["b", "a", "b", "a", "c"]}).input_text == "b,a"


def test_jinja_syntax_error_names_file_and_template(tmp_path):
    path = write(tmp_path, template_yaml("a1", "broken one", "{{ premise ||| {{ answer_choices[label] }}", "Yes ||| No"))
    (t,) = load_templates(tmp_path, "toy")
    with pytest.raises(TaskError) as err:
        t.render({"premise": "p", "label": 0})
    msg = str(err.value)
    assert str(path) in msg and "broken one" in msg and "jinja" in msg


def test_undefined_field_names_file_template_and_field(tmp_path):
    path = write(tmp_path, template_yaml("a1", "needs hypothesis", "{{ premise }} {{ hypothesis }} ||| x", "x ||| y"))
    (t,) = load_templates(tmp_path, "toy")
    with pytest.raises(TaskError) as err:
        t.render({"premise": "p"}, row_name="row 3 of rows.jsonl")
    msg = str(err.value)
    assert str(path) in msg and "needs hypothesis" in msg and "hypothesis" in msg and "row 3 of rows.jsonl" in msg


def test_no_answer_choices_refused_for_rank_classification(tmp_path):
    path = write(tmp_path, template_yaml("a1", "open ended", "{{ premise }} ||| {{ label }}", None))
    (t,) = load_templates(tmp_path, "toy")
    with pytest.raises(TaskError) as err:
        t.example({"premise": "p", "label": 0}, task="toy", index=0)
    assert str(path) in str(err.value) and "open ended" in str(err.value) and "answer_choices" in str(err.value)


def test_target_not_among_choices_names_row(tmp_path):
    path = write(tmp_path, template_yaml("a1", "mismatch", "{{ premise }} ||| maybe", "Yes ||| No"))
    (t,) = load_templates(tmp_path, "toy")
    with pytest.raises(TaskError) as err:
        t.example({"premise": "p"}, task="toy", index=4)
    msg = str(err.value)
    assert str(path) in msg and "mismatch" in msg and "row 4" in msg and "'maybe'" in msg


def test_reserved_field_refused():
    t = Template(id="x", name="t", jinja="{{p}} ||| a", answer_choices="a ||| b")
    with pytest.raises(TaskError, match="answer_choices"):
        t.render({"p": "x", "answer_choices": "oops"})


def test_sandbox_blocks_unsafe_attributes():
    t = Template(id="x", name="t", jinja="{{ p.__class__.__mro__ }}")
    with pytest.raises(TaskError):
        t.render({"p": "x"})


def test_any_exception_while_a_template_renders_names_template_row_and_cause():
    # a division by zero in the template's own code: neither a Jinja error nor a schema problem
    t = Template(id="t-1", name="ratio", jinja="{{ a / b }} ||| x", answer_choices="x ||| y", source="mine.yaml")
    with pytest.raises(TaskError) as info:
        t.render({"a": 1, "b": 0}, truncate=False, row_name="row 7 of mine/validation")
    msg = str(info.value)
    assert "'ratio'" in msg and "row 7 of mine/validation" in msg and "ZeroDivisionError" in msg and "mine.yaml" in msg


def test_two_templates_of_one_name_are_refused_naming_both(run_config, tmp_path):
    data = toy_task(tmp_path, [("twice", "no ||| yes"), ("twice", "yes ||| no")])
    cfg = run_config.write(tmp_path / "c.yaml", data=data, tasks=["toy"])
    r = cli("run", cfg, "--out", tmp_path / "run")
    one_line_error(r, "templates.yaml", "templates.t1.name", "templates.t0", "rename one")
    assert not (tmp_path / "run").exists()


# -- a template's work per row is bounded ------------------------------------------------------------

BUDGET_CASES = {
    # the sandbox caps a range's size, not the work of nested loops
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
    # one loop whose body walks a large list each time (a single call per item)
    "join in a loop": "{% set l = range(100000)|list %}{% for x in l %}{{ l|join(',')|length }}{% endfor %}",
    "doubling a string": "{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
                         "{% endfor %}{{ ns.s|length }}",
    "a huge width": "{{ 'a'.ljust(10 ** 12) }}",
    "a huge format width": "{{ '{:>999999999999}'.format(1) }}",
    "a huge repetition": "{{ ('x' * 10 ** 12) }}",
}


@pytest.mark.parametrize("case", sorted(BUDGET_CASES))
def test_a_template_past_its_work_budget_is_one_error_naming_template_and_row(case, monkeypatch):
    from rospr_harness.tasks import templates

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
    t = Template(id="t-1", name="ok", jinja="{% for w in text.split() %}{{ loop.index }}:{{ w|upper }} {% endfor %}"
                 "{{ answer_choices|join(', ') }} ||| {{ answer_choices[label] }}", answer_choices="no ||| yes",
                 source="fine.yaml")
    r = t.render({"text": "a long passage " * 500, "label": 1})
    assert r.label == 1 and r.input_text.startswith("1:A 2:LONG")


@pytest.mark.parametrize("row", [{"p": "x", "a": "yes", "b": "", "label": 1}, {"p": "x", "a": "", "b": "no", "label": 0}])
def test_class7_an_empty_answer_choice_is_named_as_such_not_as_no_label(row):
    """class 7 (issue 32): a target that is an answer choice which rendered empty is a label, and the
    row is refused for its empty choice, not reported later as "has no label"."""
    t = Template(id="x", name="t", jinja="{{p}} ||| {{answer_choices[label]}}", answer_choices="{{a}} ||| {{b}}")
    with pytest.raises(TaskError, match=rf"the target of row 3 is answer choice {row['label']}, which rendered "
                                        r"empty .*an empty choice cannot be scored"):
        t.render(row, row_name="row 3")
    unlabelled = Template(id="x", name="t", jinja="{{p}} ||| {% if label != -1 %}{{answer_choices[label]}}{% endif %}",
                          answer_choices="a ||| b")
    assert unlabelled.render({"p": "x", "label": -1}).label is None  # no target and no empty choice: unlabelled
