"""The dataset catalog (harness/data/datasets.yaml) against t-zero's list, the promptsource files and
hand-written rows."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import jinja2.meta
import pytest
import yaml
from jinja2 import nodes

from rospr_harness.tasks import catalog
from rospr_harness.tasks.base import TaskError
from rospr_harness.tasks.templates import ENV, load_templates_file
from helpers import REPO

DATA = REPO / "tests" / "data"
TABLE = Path(catalog.__file__).parents[1] / "data" / "datasets.yaml"


def _tzero_base_pairs() -> list[str]:
    """(HF_name, subset) of t-zero's t0/datasets.csv rows with do_train = BASE, as folders."""
    with (DATA / "t0_datasets_base.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["do_train"] == "BASE" for r in rows)
    return [r["HF_name"] + (f"/{r['subset']}" if r["subset"] else "") for r in rows]


def test_t0_train_is_tzero_base_mixture_in_order():
    expected = _tzero_base_pairs()
    assert len(expected) == 38
    assert list(catalog.group("t0_train")) == expected


def test_table_loads_with_every_group_member_known():
    folders = catalog.known_datasets()
    assert len(folders) == 47 and len(set(folders)) == 47
    assert set(catalog.group("t0_train")) <= set(folders)
    settings = catalog.heldout_settings()
    assert list(catalog.group("heldout")) == list(settings)
    assert {s.folder for s in settings.values()} == {
        "anli", "super_glue/cb", "super_glue/rte", "super_glue/wsc.fixed", "super_glue/copa",
        "super_glue/wic", "winogrande/winogrande_xl", "story_cloze/2016", "hellaswag",
    }
    assert set(folders) == set(catalog.group("t0_train")) | {s.folder for s in settings.values()}
    assert catalog.groups() == ["t0_train", "heldout"]
    with pytest.raises(TaskError, match="unknown task group 'nope'"):
        catalog.group("nope")


def test_every_entry_has_evidence_and_its_eval_split_exists():
    for folder in catalog.known_datasets():
        spec = catalog.dataset_spec(folder)
        assert spec.evidence.strip(), folder
        assert set(spec.splits) <= {"train", "eval"}, folder
    assert catalog.dataset_spec("story_cloze/2016").manual  # a manual download, said how
    with pytest.raises(TaskError, match="story_cloze/2016.*no 'train' split"):
        catalog.dataset_spec("story_cloze/2016").split("train")
    assert catalog.dataset_spec("super_glue/rte").split("eval") == "validation"
    assert catalog.dataset_spec("not/in_table") is None


def test_load_kwargs_name_config_or_parquet_export_folder():
    rte = catalog.dataset_spec("super_glue/rte")
    assert rte.load_kwargs("validation") == {"path": "aps/super_glue", "split": "validation", "name": "rte"}
    assert (rte.dataset, rte.subset) == ("super_glue", "rte")
    hellaswag = catalog.dataset_spec("hellaswag")
    assert hellaswag.load_kwargs("train") == {"path": "Rowan/hellaswag", "split": "train"}
    assert hellaswag.subset is None
    siqa = catalog.dataset_spec("social_i_qa")
    assert siqa.load_kwargs("train") == {
        "path": "allenai/social_i_qa", "split": "train", "revision": "refs/convert/parquet", "data_dir": "default",
    }


def test_every_folder_has_promptsource_templates(templates_dir):
    missing = [f for f in catalog.known_datasets() if not (templates_dir / f / "templates.yaml").is_file()]
    assert missing == []


# ---- check_row on hand-written rows ------------------------------------------------------------

RTE_ROW = {  # the first validation row of SuperGLUE RTE, as the hub serves it
    "premise": "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
    "according to the Christopher Reeve Foundation.",
    "hypothesis": "Christopher Reeve had an accident.",
    "idx": 0,
    "label": 1,
}

SQUAD_LIKE_ROW = {
    "id": "7ba1e8f4261d3170fcf42e84a81dd749116fae95",
    "title": "Brain",
    "context": "Another approach to brain function is to examine the consequences of damage.",
    "question": "What is examined?",
    "answers": {"text": ["the consequences of damage"], "answer_start": [48]},
    "metadata": {"split": "train", "model_in_the_loop": "Combined"},
}


def test_check_row_accepts_hub_rows_and_extra_fields():
    catalog.dataset_spec("super_glue/rte").check_row(RTE_ROW, "rte row")
    catalog.dataset_spec("super_glue/rte").check_row({**RTE_ROW, "label": -1, "extra": [1]}, "test row")
    catalog.dataset_spec("adversarial_qa/dbidaf").check_row(SQUAD_LIKE_ROW, "aqa row")


@pytest.mark.parametrize(
    "folder, row, field, wanted",
    [
        ("super_glue/rte", {k: v for k, v in RTE_ROW.items() if k != "hypothesis"}, "'hypothesis'", "string"),
        ("super_glue/rte", {**RTE_ROW, "label": True}, "'label'", "class label"),
        ("super_glue/rte", {**RTE_ROW, "label": 2}, "'label'", "class label"),
        ("super_glue/rte", {**RTE_ROW, "premise": 3}, "'premise'", "string"),
        ("hellaswag", None, "'label'", "string"),
        ("adversarial_qa/dbidaf", {**SQUAD_LIKE_ROW, "answers": [{"text": "x", "answer_start": 1}]},
         "'answers'", "a dict of lists"),
        ("adversarial_qa/dbidaf", {**SQUAD_LIKE_ROW, "answers": {"text": ["x"]}}, "'answers.answer_start'",
         "a list of int32"),
        ("adversarial_qa/dbidaf", {**SQUAD_LIKE_ROW, "metadata": {"split": "train"}}, "'metadata.model_in_the_loop'",
         "string"),
        ("dream", None, "'choice'", "a list of string"),
    ],
)
def test_check_row_refuses_naming_where_field_and_type(folder, row, field, wanted):
    spec = catalog.dataset_spec(folder)
    if row is None and folder == "hellaswag":
        row = {"ind": 4, "activity_label": "Removing ice from car", "ctx_a": "Then, the man writes over the snow.",
               "ctx_b": "then", "ctx": "Then, the man writes over the snow. then", "endings": ["a", "b", "c", "d"],
               "source_id": "activitynet~v_-1IBHYS3L-Y", "split": "train", "split_type": "indomain", "label": 3}
    if row is None and folder == "dream":
        row = {"id": 0, "dialogue_id": "5-510", "dialogue": ["M: Hi.", "W: Hello."], "question": "Who?",
               "choice": "A|||B|||C", "answer": "A"}
    with pytest.raises(TaskError) as info:
        spec.check_row(row, "rows.jsonl: row 7")
    message = str(info.value)
    assert "rows.jsonl: row 7" in message and field in message and wanted in message and "e.g." in message


# ---- the table refuses malformed content --------------------------------------------------------


def _table() -> dict:
    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "edit, key",
    [
        (lambda t: t["datasets"]["glue/mrpc"].pop("evidence"), "datasets.glue/mrpc"),
        (lambda t: t["datasets"]["glue/mrpc"]["features"].update(idx="integer"), "datasets.glue/mrpc.features.idx"),
        (lambda t: t["datasets"]["glue/mrpc"]["features"].update(label={"class_label": []}), "features.label.class_label"),
        (lambda t: t["datasets"]["glue/mrpc"].update(splits=["train"]), "datasets.glue/mrpc.splits"),
        (lambda t: t["datasets"]["glue/mrpc"].update(colour="red"), "datasets.glue/mrpc"),
        (lambda t: t["groups"]["t0_train"].append("glue/sst2"), "groups.t0_train"),
        (lambda t: t["heldout"]["rte"].update(dataset="super_glue/boolq"), "heldout.rte.dataset"),
        (lambda t: t.update(version=2), "version"),
    ],
)
def test_malformed_table_is_refused_naming_the_key(edit, key):
    table = copy.deepcopy(_table())
    edit(table)
    with pytest.raises(TaskError) as info:
        catalog.parse_table(table, "datasets.yaml")
    assert key in str(info.value) and "datasets.yaml" in str(info.value)


# ---- the schema covers what the templates read --------------------------------------------------

_LOOP_NAMES = {"answer_choices", "loop"} | set(ENV.globals)


def _const_chain(node: nodes.Node) -> tuple[str, list] | None:
    """``name`` and the constant keys of ``name.a['b'][0]``; None when the base is not a name."""
    keys: list = []
    while isinstance(node, (nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
        elif isinstance(node.arg, nodes.Const):
            keys.append(node.arg.value)
        else:
            keys.append(None)  # a computed key: stop resolving there
        node = node.node
    return (node.name, keys[::-1]) if isinstance(node, nodes.Name) else None


def _resolve(feature, keys: list, path: str) -> str | None:
    """Walk ``keys`` through ``feature``; a message when a key is not in the schema."""
    for key in keys:
        if key is None:
            return None
        if isinstance(feature, str):  # a scalar: a string's characters and methods (str.split, ...)
            if feature == "string" and (isinstance(key, int) or hasattr("", key)):
                continue
            return f"{path}: {key!r} on {feature}"
        if len(feature) == 1 and "list" in feature:
            if isinstance(key, int):
                feature = feature["list"]
                continue
            return None if hasattr([], key) else f"{path}: {key!r} on a list"
        if len(feature) == 1 and "sequence" in feature:
            if key not in feature["sequence"]:
                return f"{path}: {key!r} not among {sorted(feature['sequence'])}"
            feature = {"list": feature["sequence"][key]}
            path += f".{key}"
            continue
        if len(feature) == 1 and "class_label" in feature:
            return f"{path}: {key!r} on a class label"
        if key not in feature:
            return f"{path}: {key!r} not among {sorted(feature)}"
        feature = feature[key]
        path += f".{key}"
    return None


def _schema_problems(folder: str, features, templates_dir: Path) -> list[str]:
    """What the templates of ``folder`` read that ``features`` lacks (a walk of the Jinja AST)."""
    problems = []
    for template in load_templates_file(templates_dir / folder / "templates.yaml"):
        for text in (template.jinja, template.answer_choices or ""):
            ast = ENV.parse(text)
            assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "store"}
            for name in jinja2.meta.find_undeclared_variables(ast) - _LOOP_NAMES - assigned:
                if name not in features:
                    problems.append(f"{folder} / {template.name}: {name!r} not in the schema")
            for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
                chain = _const_chain(node)
                if chain and chain[0] in features:
                    problem = _resolve(features[chain[0]], chain[1], chain[0])
                    if problem:
                        problems.append(f"{folder} / {template.name}: {problem}")
    return sorted(set(problems))


def test_every_template_variable_is_in_the_schema(templates_dir):
    problems = []
    for folder in catalog.known_datasets():
        problems += _schema_problems(folder, catalog.dataset_spec(folder).features, templates_dir)
    assert problems == []


def test_schema_walk_finds_missing_fields_and_keys(templates_dir):
    rte = dict(catalog.dataset_spec("super_glue/rte").features)
    del rte["hypothesis"]
    assert any("'hypothesis' not in the schema" in p for p in _schema_problems("super_glue/rte", rte, templates_dir))
    aqa = dict(catalog.dataset_spec("adversarial_qa/dbidaf").features)
    aqa["answers"] = {"sequence": {"answer_start": "int32"}}  # no 'text'
    aqa["metadata"] = {"model_in_the_loop": "string"}  # no 'split'
    problems = _schema_problems("adversarial_qa/dbidaf", aqa, templates_dir)
    assert any("answers: 'text' not among" in p for p in problems)
    assert any("metadata: 'split' not among" in p for p in problems)


def test_heldout_prompt_counts_equal_original_task_templates(templates_dir):
    settings = catalog.heldout_settings()
    # T0's evaluation prompts (t-zero evaluation/template_list.py), in the order of the group
    assert [s.n_prompts for s in settings.values()] == [15, 15, 15, 15, 10, 10, 12, 10, 5, 5, 4]
    for setting in settings.values():
        templates = load_templates_file(templates_dir / setting.folder / "templates.yaml")
        assert sum(t.original_task for t in templates) == setting.n_prompts, setting.name
        assert setting.split in catalog.dataset_spec(setting.folder).splits.values() or setting.folder == "anli"
    assert [settings[f"anli_r{r}"].split for r in (1, 2, 3)] == ["dev_r1", "dev_r2", "dev_r3"]


# ---- hub_schema: the hub's column names and class order mapped to what the templates read -----

# The export's ClassLabel names (huggingface/datasets datasets/trec/dataset_infos.json, version
# 2.0.0), written out here as the independent reference for the rows below.
_TREC_EXPORT = json.loads((DATA / "trec_export_classes.json").read_text(encoding="utf-8"))
TREC_EXPORT_COARSE = _TREC_EXPORT["coarse_label"]
TREC_EXPORT_FINE = _TREC_EXPORT["fine_label"]


def _export_row(text: str, fine: str) -> dict:
    """A trec row as the hub's parquet export serves it: columns coarse_label / fine_label, indices
    into the export's class names."""
    return {"text": text, "coarse_label": TREC_EXPORT_COARSE.index(fine.split(":")[0]),
            "fine_label": TREC_EXPORT_FINE.index(fine)}


def _render(templates_dir, name: str, row: dict):
    templates = {t.name: t for t in load_templates_file(templates_dir / "trec" / "templates.yaml")}
    return templates[name].render(row, row_name="trec row")


@pytest.mark.parametrize(
    "fine, template, answer",
    [
        ("HUM:ind", "fine_grained_HUM", "individual"),  # label_mapping {5:0, 4:1, 6:2, 12:3}
        ("HUM:ind", "what_category_best_describe", "Person"),
        ("HUM:desc", "fine_grained_HUM", "description"),  # shares the 47-class 'desc' with DESC:desc
        ("LOC:country", "fine_grained_LOC", "country"),
        ("LOC:other", "fine_grained_LOC", "other location"),
        ("NUM:money", "fine_grained_NUM", "price"),
        ("DESC:reason", "fine_grained_DESC", "reason"),
        ("ABBR:exp", "fine_grained_ABBR", "expression abbreviated"),
        ("ENTY:plant", "fine_grained_open", "Plant"),
        ("LOC:city", "pick_the_best_descriptor", "Location"),
    ],
)
def test_trec_export_row_renders_the_answer_the_templates_mean(templates_dir, fine, template, answer):
    spec = catalog.dataset_spec("trec")
    row = spec.from_hub(_export_row("Who was the first person to walk on the moon?", fine), "export row")
    spec.check_row(row, "export row")
    assert set(row) == {"text", "label_coarse", "label_fine"}
    assert _render(templates_dir, template, row).target == answer


def test_trec_without_the_mapping_the_same_row_trains_on_a_wrong_target(templates_dir):
    raw = _export_row("Who was the first person to walk on the moon?", "HUM:ind")
    as_is = {"text": raw["text"], "label_coarse": raw["coarse_label"], "label_fine": raw["fine_label"]}
    rendered = _render(templates_dir, "fine_grained_open", as_is)  # answer_choices[label_fine]
    assert rendered.target != "Individual"


def test_from_hub_keeps_template_schema_rows_and_unlabelled_rows():
    spec = catalog.dataset_spec("trec")
    ours = {"text": "Q?", "label_coarse": 3, "label_fine": 4}
    assert spec.from_hub(ours, "row") == ours  # already in the template's names and order
    assert spec.from_hub({"text": "Q?", "coarse_label": -1, "fine_label": -1}, "row") == {
        "text": "Q?", "label_coarse": -1, "label_fine": -1}
    with pytest.raises(TaskError, match=r"rows\.jsonl: row 3: field 'fine_label' is 50"):
        spec.from_hub({"text": "Q?", "coarse_label": 0, "fine_label": 50}, "rows.jsonl: row 3")
    rte = catalog.dataset_spec("super_glue/rte")
    assert rte.hub_schema is None and rte.from_hub(RTE_ROW, "row") == RTE_ROW


def test_to_hub_inverts_from_hub_for_every_template_class():
    spec = catalog.dataset_spec("trec")
    fine_names = spec.features["label_fine"]["class_label"]
    for coarse in range(6):
        for fine in range(len(fine_names)):
            row = {"text": "Q?", "label_coarse": coarse, "label_fine": fine}
            hub = spec.to_hub(row)
            assert set(hub) == {"text", "coarse_label", "fine_label"}
            assert TREC_EXPORT_FINE[hub["fine_label"]].split(":")[1] == fine_names[fine]
            assert spec.from_hub(hub, "row") == row


@pytest.mark.parametrize(
    "hub_schema, key",
    [
        ({"relabel": {}}, "datasets.trec.hub_schema"),
        ({"rename": {"coarse_label": "label_nope"}}, "datasets.trec.hub_schema.rename"),
        ({"rename": {"coarse_label": "label_coarse"}, "relabel": {"text": ["a"]}}, "hub_schema.relabel.text"),
        ({"rename": {"coarse_label": "label_coarse"}, "relabel": {"label_fine": ["abb"]}},
         "hub_schema.relabel.label_fine"),
        ({"rename": {"coarse_label": "label_coarse"}, "relabel": {"label_coarse": ["ABBR", "NOPE"]}},
         "hub_schema.relabel.label_coarse"),
    ],
)
def test_malformed_hub_schema_is_refused_naming_the_key(hub_schema, key):
    table = copy.deepcopy(_table())
    table["datasets"]["trec"]["hub_schema"] = hub_schema
    with pytest.raises(TaskError) as info:
        catalog.parse_table(table, "datasets.yaml")
    assert key in str(info.value) and "datasets.yaml" in str(info.value)
