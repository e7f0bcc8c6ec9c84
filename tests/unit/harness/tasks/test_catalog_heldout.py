"""Held-out T0 settings: evaluation prompt lists, rendering on hub-schema rows, local rows, StoryCloze's CSV."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rospr_harness.tasks import DataSettings, TaskError, get_task
from rospr_harness.tasks.catalog import heldout_settings

HELDOUT = heldout_settings()

# The prompt counts of T0's evaluation (T0 paper / model card), checked against the files below.
EXPECTED_PROMPTS = {
    "anli_r1": 15, "anli_r2": 15, "anli_r3": 15, "cb": 15, "rte": 10, "wsc": 10, "copa": 12,
    "wic": 10, "winogrande": 5, "story_cloze": 5, "hellaswag": 4,
}
TEMPLATE_FILES = {
    "anli_r1": "anli", "anli_r2": "anli", "anli_r3": "anli", "cb": "super_glue/cb",
    "rte": "super_glue/rte", "wsc": "super_glue/wsc.fixed", "copa": "super_glue/copa",
    "wic": "super_glue/wic", "winogrande": "winogrande/winogrande_xl",
    "story_cloze": "story_cloze/2016", "hellaswag": "hellaswag",
}

# One or two hand-made rows per dataset, in the hub schema, and the gold choice index by hand.
ANLI_ROW = {
    "uid": "0fd0abfb-659e-4453-b196-c3a64d2d8267",
    "premise": "The Parma trolleybus system forms part of the public transport network of the city "
    "of Parma. In operation since 1953, the system presently comprises four urban routes.",
    "hypothesis": "The trolleybus system has over 2 urban routes",
    "label": 0,
    "reason": "",
}
ROWS: dict[str, list[dict]] = {
    "anli_r1": [ANLI_ROW],
    "anli_r2": [dict(ANLI_ROW, label=2)],
    "anli_r3": [dict(ANLI_ROW, label=1)],
    "cb": [{
        "premise": "It was a complex language. Not written down but handed down. One might say it "
        "was peeled down.",
        "hypothesis": "the language was peeled down",
        "idx": 0,
        "label": 0,
    }],
    "rte": [{
        "premise": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer "
        "at age 44, according to the Christopher Reeve Foundation.",
        "hypothesis": "Christopher Reeve had an accident.",
        "idx": 0,
        "label": 1,
    }],
    "wsc": [{
        "text": "Mark told Pete many lies about himself, which Pete included in his book. He should "
        "have been more skeptical.",
        "span1_index": 0,
        "span2_index": 13,
        "span1_text": "Mark",
        "span2_text": "He",
        "idx": 0,
        "label": 0,
    }],
    "copa": [
        {"premise": "My body cast a shadow over the grass.", "choice1": "The sun was rising.",
         "choice2": "The grass was cut.", "question": "cause", "idx": 0, "label": 0},
        {"premise": "The elderly woman suffered a stroke.", "choice1": "The woman's daughter came "
         "over to clean her house.", "choice2": "The woman's daughter moved in to take care of her.",
         "question": "effect", "idx": 1, "label": 1},
    ],
    "wic": [{
        "word": "place",
        "sentence1": "Do you want to come over to my place later?",
        "sentence2": "A political system with no place for the less prominent groups.",
        "start1": 31, "start2": 27, "end1": 36, "end2": 32,
        "idx": 0,
        "label": 0,
    }],
    "winogrande": [{
        "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
        "option1": "Sarah",
        "option2": "Maria",
        "answer": "1",
    }],
    "story_cloze": [{
        "story_id": "138d5bfb-05cc-41e3-bf2c-fa85ebad14e2",
        "input_sentence_1": "Rick grew up in a troubled household.",
        "input_sentence_2": "He never found good support in family, and turned to gangs.",
        "input_sentence_3": "It wasn't long before Rick got shot in a robbery.",
        "input_sentence_4": "The incident caused him to turn a new leaf.",
        "sentence_quiz1": "He is happy now.",
        "sentence_quiz2": "He joined a gang.",
        "answer_right_ending": 1,
    }],
    "hellaswag": [{
        "ind": 24,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        "source_id": "activitynet~v_-JhWjGDPHMY",
        "split": "val",
        "split_type": "indomain",
        "label": "3",
    }],
}


def gold_index(task: str, row: dict) -> int:
    """The gold choice index, by hand, from the dataset's label field."""
    if task == "winogrande":
        return int(row["answer"]) - 1
    if task == "story_cloze":
        return row["answer_right_ending"] - 1
    return int(row["label"])


def write_rows(root: Path, task: str, rows: list[dict], fmt: str = "jsonl") -> Path:
    spec = HELDOUT[task]
    folder = root / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.split}.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def heldout_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("heldout")
    for task, rows in ROWS.items():
        write_rows(root, task, rows)
    return root


def test_names_and_splits():
    assert sorted(HELDOUT) == sorted(EXPECTED_PROMPTS)
    assert [HELDOUT[f"anli_r{i}"].split for i in (1, 2, 3)] == ["dev_r1", "dev_r2", "dev_r3"]
    assert {name: HELDOUT[name].folder for name in TEMPLATE_FILES} == TEMPLATE_FILES
    assert {name: HELDOUT[name].n_prompts for name in EXPECTED_PROMPTS} == EXPECTED_PROMPTS


@pytest.mark.parametrize("task", sorted(EXPECTED_PROMPTS))
def test_prompt_lists_match_files(task, templates_dir):
    """Prompts = the names of the templates marked ``original_task: true``, in file order."""
    text = (templates_dir / TEMPLATE_FILES[task] / "templates.yaml").read_text(encoding="utf-8")
    assert text.count("original_task: true") == EXPECTED_PROMPTS[task]
    prompts = get_task(task, DataSettings(templates_dir=templates_dir)).prompts()
    assert len(prompts) == EXPECTED_PROMPTS[task]
    assert len(set(prompts)) == len(prompts)
    # file order: each prompt's "name:" line appears after the previous one's
    positions = []
    for name in prompts:
        quoted = [f"name: {name}\n", f"name: '{name}'\n", f"name: {json.dumps(name)}\n"]
        hits = [text.find(q) for q in quoted if q in text]
        if not hits:  # names written with escapes (e.g. \u2026) in the YAML
            escaped = json.dumps(name)[1:-1]
            hits = [m.start() for m in re.finditer(re.escape(f'name: "{escaped}"'), text)]
        assert hits, name
        positions.append(min(hits))
    assert positions == sorted(positions)


@pytest.mark.parametrize("task", sorted(EXPECTED_PROMPTS))
def test_every_evaluation_template_renders(task, templates_dir, heldout_root):
    settings = DataSettings(templates_dir=templates_dir, rows_dir=heldout_root)
    t = get_task(task, settings)
    rows = ROWS[task]
    for prompt in t.prompts():
        unit = t.load(prompt)
        assert unit.examples, f"{task}/{prompt} applies to none of the hand-made rows"
        assert unit.skipped + len(unit.examples) == len(rows)
        for ex in unit.examples:
            row = rows[ex.index]
            assert ex.input_text.strip() and "|||" not in ex.input_text
            assert len(ex.choices) >= 2
            assert ex.label == gold_index(task, row), (prompt, ex)
            assert ex.target_text == ex.choices[ex.label]
            if task == "copa":
                assert ex.choices == (row["choice1"], row["choice2"])
            if task == "story_cloze":
                assert ex.choices == (row["sentence_quiz1"], row["sentence_quiz2"])
            if task == "hellaswag" and prompt != "if_begins_how_continues":
                assert ex.choices == tuple(e.strip() for e in row["endings"])
            if task == "winogrande":
                assert ex.choices == (row["option1"], row["option2"])


def test_known_rendering_rte(templates_dir, heldout_root):
    """One prompt rendered by hand from the file's Jinja text."""
    t = get_task("rte", DataSettings(templates_dir=templates_dir, rows_dir=heldout_root))
    ex = t.load("GPT-3 style").examples[0]
    row = ROWS["rte"][0]
    assert ex.input_text == f"{row['premise']}\nQuestion: {row['hypothesis']} True or False?"
    assert ex.choices == ("True", "False") and ex.label == 1 and ex.target_text == "False"


def test_copa_templates_for_one_question_type_skip_the_other(templates_dir, heldout_root):
    t = get_task("copa", DataSettings(templates_dir=templates_dir, rows_dir=heldout_root))
    unit = t.load("\u2026What could happen next, C1 or C2?")  # effect-only template
    assert unit.skipped == 1 and [ex.index for ex in unit.examples] == [1]


def test_hellaswag_randomized_prompt_is_deterministic(templates_dir, heldout_root):
    t = get_task("hellaswag", DataSettings(templates_dir=templates_dir, rows_dir=heldout_root))
    a = t.load("Randomized prompts template").examples[0].input_text
    b = get_task("hellaswag", DataSettings(templates_dir=templates_dir, rows_dir=heldout_root)).load(
        "Randomized prompts template").examples[0].input_text
    assert a == b
    openings = ["Can you pick the correct ending for the sentence: ",
                "The task is to generate the ending for the sentence: ", "How does this sentence end? ",
                "From the list of endings described below, what ending makes the most sense for the sentence "]
    assert any(a.startswith(o.strip()) for o in openings)


def test_local_rows_jsonl_and_json(templates_dir, tmp_path):
    rows = [dict(ROWS["rte"][0], idx=i, label=i % 2) for i in range(5)]
    path = write_rows(tmp_path, "rte", rows)
    settings = DataSettings(templates_dir=templates_dir, rows_dir=tmp_path)
    unit = get_task("rte", settings).load("can we infer", limit=3)
    assert [ex.label for ex in unit.examples] == [0, 1, 0]
    assert [ex.index for ex in unit.examples] == [0, 1, 2]
    assert str(path) in unit.source and "super_glue/rte/templates.yaml" in unit.source
    assert len(unit.content_hash) == 64
    # the hash follows the rows used and the template
    assert get_task("rte", settings).load("can we infer", limit=3).content_hash == unit.content_hash
    assert get_task("rte", settings).load("can we infer", limit=4).content_hash != unit.content_hash
    assert get_task("rte", settings).load("must be true", limit=3).content_hash != unit.content_hash

    json_path = write_rows(tmp_path, "anli_r2", [ANLI_ROW, dict(ANLI_ROW, label=2)], fmt="json")
    assert json_path == tmp_path / "anli" / "dev_r2.json"
    unit = get_task("anli_r2", settings).load(get_task("anli_r2", settings).prompts()[0])
    assert [ex.label for ex in unit.examples] == [0, 2]


def test_local_rows_errors(templates_dir, tmp_path, offline_hub):
    settings = DataSettings(templates_dir=templates_dir, rows_dir=tmp_path)
    with pytest.raises(TaskError) as err:  # no local file: the hub is tried, and the way out named
        get_task("cb", settings).load("always/sometimes/never")
    assert "'super_glue/cb'" in str(err.value) and "aps/super_glue" in str(err.value)
    assert "<rows_dir>/super_glue/cb/validation.jsonl" in str(err.value)

    bad = dict(ROWS["cb"][0])
    del bad["hypothesis"]
    path = write_rows(tmp_path, "cb", [ROWS["cb"][0], bad])
    with pytest.raises(TaskError) as err:
        get_task("cb", settings).load("always/sometimes/never")
    assert str(path) in str(err.value) and "row 1" in str(err.value) and "hypothesis" in str(err.value)

    path.write_text('{"premise": "x", "hypothesis": "y", "label": 0}\nnot json\n', encoding="utf-8")
    with pytest.raises(TaskError) as err:
        get_task("cb", settings).load("always/sometimes/never")
    assert str(path) in str(err.value) and "line 2" in str(err.value)

    path.write_text('{"premise": "x", "hypothesis": "y", "label": 0}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(TaskError, match="line 2 is a list, not a JSON object"):
        get_task("cb", settings).load("always/sometimes/never")
    path.write_bytes(b'{"premise": "caf\xe9", "hypothesis": "y", "label": 0}\n')  # Latin-1, not UTF-8
    with pytest.raises(TaskError, match="not UTF-8 text"):
        get_task("cb", settings).load("always/sometimes/never")

    # a field with the wrong type for the hub schema (winogrande's answer is the string "1"/"2")
    path = write_rows(tmp_path, "winogrande", [dict(ROWS["winogrande"][0], answer=1)])
    with pytest.raises(TaskError) as err:
        get_task("winogrande", settings).load("Replace")
    assert str(path) in str(err.value) and "row 0" in str(err.value) and "'answer'" in str(err.value)

    # a label outside the dataset's classes: refused by the hub schema before any rendering
    path = write_rows(tmp_path, "rte", [dict(ROWS["rte"][0], label=5)])
    with pytest.raises(TaskError) as err:
        get_task("rte", settings).load("can we infer")
    assert str(path) in str(err.value) and "row 0" in str(err.value) and "'label' is int 5" in str(err.value)


def test_story_cloze_without_its_manual_download_says_how(templates_dir, tmp_path):
    t = get_task("story_cloze", DataSettings(templates_dir=templates_dir, manual_dir=tmp_path))
    with pytest.raises(TaskError) as err:
        t.load(t.prompts()[0])
    assert "manual download" in str(err.value) and str(tmp_path / "story_cloze" / "2016") in str(err.value)
    assert "<rows_dir>/story_cloze/2016/validation.jsonl" in str(err.value)


STORY_CLOZE_CSV = (
    "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
    "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    "id-1,Rick grew up poor.,He worked hard.,He saved money.,He bought a farm.,He is happy now.,He hates farms.,1\n"
    'id-2,Ann lost her keys.,"She looked, and looked.",She called her son.,He had them.,Ann was angry.,Ann was glad.,2\n'
)


def test_story_cloze_reads_the_official_csv(templates_dir, tmp_path):
    """The manual download as its owners hand it out: CSV columns renamed to the hub schema."""
    folder = tmp_path / "story_cloze" / "2016"
    folder.mkdir(parents=True)
    (folder / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv").write_text(STORY_CLOZE_CSV, encoding="utf-8")
    t = get_task("story_cloze", DataSettings(templates_dir=templates_dir, manual_dir=tmp_path))
    rows, source = t.rows()
    assert source.endswith("cloze_test_ALL_val.csv")
    assert rows[1]["input_sentence_2"] == "She looked, and looked." and rows[1]["answer_right_ending"] == 2
    for prompt in t.prompts():
        unit = t.load(prompt)
        assert [ex.label for ex in unit.examples] == [0, 1]
        assert unit.examples[0].choices == ("He is happy now.", "He hates farms.")
    (folder / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv").write_text(
        STORY_CLOZE_CSV.replace(",1\n", ",3\n"), encoding="utf-8")
    with pytest.raises(TaskError) as err:
        get_task("story_cloze", DataSettings(templates_dir=templates_dir, manual_dir=tmp_path)).rows()
    assert "line 2" in str(err.value) and "AnswerRightEnding" in str(err.value)


def test_missing_templates_file_names_the_path(tmp_path):
    t = get_task("rte", DataSettings(templates_dir=tmp_path))
    with pytest.raises(TaskError) as err:
        t.prompts()
    assert str(tmp_path / "super_glue" / "rte" / "templates.yaml") in str(err.value)
