"""promptsource datasets as tasks: groups, every template as a training prompt, rows through the real
``datasets.load_dataset`` on hub-layout parquet folders, local rows for datasets the catalog lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rospr_harness.tasks import DataSettings, PromptsourceTask, TaskError, expand, get_task, group, list_tasks
from rospr_harness.tasks.catalog import dataset_spec, heldout_settings
from rospr_harness.tasks.promptsource import T0_TASK_BLACKLIST, t0_task_name
from rospr_harness.tasks.rows import locate

pytest.importorskip("datasets")


def test_groups_and_expansion():
    assert len(group("heldout")) == 11 and "story_cloze" in group("heldout")
    assert len(group("t0_train")) == 38 and "cos_e/v1.11" in group("t0_train")
    assert len(group("bigbench")) == 14 and "bigbench/strategyqa" in group("bigbench")
    assert expand(["rte", "bigbench/winowhy"]) == ["rte", "bigbench/winowhy"]
    assert expand("heldout") == group("heldout")
    with pytest.raises(TaskError, match="'rte' is listed twice"):
        expand(["heldout", "rte"])
    with pytest.raises(TaskError, match="unknown task group"):
        group("t0_eval")


def test_every_promptsource_folder_is_a_task(templates_dir):
    settings = DataSettings(templates_dir=templates_dir)
    names = list_tasks(settings)
    folders = sorted(str(p.parent.relative_to(templates_dir)) for p in templates_dir.glob("**/templates.yaml"))
    assert len(folders) == 279 and set(folders) <= set(names)
    task = get_task("adversarial_qa/dbidaf", settings)
    assert isinstance(task, PromptsourceTask) and task.folder == "adversarial_qa/dbidaf"
    with pytest.raises(TaskError, match="group of tasks"):
        get_task("t0_train", settings)
    with pytest.raises(TaskError, match="unknown task 'ag_newz'.*ag_news"):
        get_task("ag_newz", settings)


def test_training_prompts_are_every_template_scoring_prompts_have_choices(templates_dir):
    settings = DataSettings(templates_dir=templates_dir)
    total = scorable = 0
    for folder in group("t0_train"):
        task = get_task(folder, settings)
        templates = task.all_templates()
        assert task.training_prompts() == [t.name for t in templates
                                           if t0_task_name(folder, t.name) not in T0_TASK_BLACKLIST]
        assert task.prompts() == [t.name for t in templates if t.answer_choices is not None]
        total += len(task.training_prompts())
        scorable += len(task.prompts())
    # promptsource 0.2.3: 313 templates for the 38 training pairs, none in t-zero's blacklist; 168 with choices
    assert (total, scorable) == (313, 168)


def test_t0_task_name_matches_t_zero_convention():
    assert t0_task_name("gigaword", "summarize_") == "gigaword_summarize_"
    assert t0_task_name("wiki_hop/masked", "Choose Best Object Candidate") == "wiki_hop_masked_Choose_Best_Object_Candidate"
    assert t0_task_name("cos_e/v1.11", "question_option_description_text") == "cos_e_v1.11_question_option_description_text"


def test_generation_template_gives_training_examples(templates_dir, tmp_path):
    """xsum has no answer choices: its examples carry the target text, to tune on, and no choices."""
    row = {"document": "The council approved the new park on Monday after a long debate.",
           "summary": "Council approves new park.", "id": "1"}
    path = tmp_path / "xsum" / "train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    task = get_task("xsum", DataSettings(templates_dir=templates_dir, rows_dir=tmp_path))
    assert task.prompts() == []
    with pytest.raises(TaskError, match="no answer_choices, so it cannot be scored"):
        task.load(task.training_prompts()[0], split="train")
    unit = task.load(task.training_prompts()[0], split="train", training=True)
    (ex,) = unit.examples
    assert ex.choices == () and ex.target_text == "Council approves new park."
    assert row["document"] in ex.input_text


def test_target_outside_the_choices_trains_but_is_not_scored(templates_dir, tmp_path):
    """imdb's 'Negation template for positive and negative' targets 'negative review.' (label 1) while its
    choices are 'negative'/'positive' (a promptsource 0.2.3 fault): evaluation skips such rows and
    counts them; tuning keeps the target text to learn."""
    path = tmp_path / "imdb" / "train.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"text": "A wonderful film.", "label": 1}) + "\n", encoding="utf-8")
    task = get_task("imdb", DataSettings(templates_dir=templates_dir, rows_dir=tmp_path))
    prompt = "Negation template for positive and negative"
    unit = task.load(prompt, split="train")
    assert unit.examples == [] and unit.skipped == 1
    (ex,) = task.load(prompt, split="train", training=True).examples
    assert ex.label is None and ex.target_text == "negative review." and ex.choices == ("negative", "positive")


def test_uncatalogued_dataset_reads_local_rows_checked_against_its_templates(templates_dir, tmp_path):
    assert dataset_spec("tweet_eval/emotion") is None
    folder = tmp_path / "tweet_eval" / "emotion"
    folder.mkdir(parents=True)
    (folder / "validation.jsonl").write_text(json.dumps({"text": "I am so happy today", "label": 1}) + "\n",
                                             encoding="utf-8")
    task = get_task("tweet_eval/emotion", DataSettings(templates_dir=templates_dir, rows_dir=tmp_path))
    assert task.default_split() == "validation"
    for prompt in task.prompts():
        (ex,) = task.load(prompt).examples
        assert ex.label == 1 and "I am so happy today" in ex.input_text
    (folder / "validation.jsonl").write_text(json.dumps({"tweet": "x", "label": 1}) + "\n", encoding="utf-8")
    with pytest.raises(TaskError) as err:
        get_task("tweet_eval/emotion", DataSettings(templates_dir=templates_dir, rows_dir=tmp_path)).rows()
    assert "row 0" in str(err.value) and "'text'" in str(err.value) and "validation.jsonl" in str(err.value)


# ------------------------------------------------------------------------------------------------
# The real hub path: datasets.load_dataset on folders laid out like the hub repositories
# ------------------------------------------------------------------------------------------------


def hub_features(features):
    """The catalog's compact notation as ``datasets.Features`` (written independently of the code)."""
    import datasets

    def one(f):
        if isinstance(f, str):
            return datasets.Value(f)
        if "class_label" in f:
            return datasets.ClassLabel(names=list(f["class_label"]))
        if "list" in f:
            return datasets.List(one(f["list"]))
        if "sequence" in f:
            return datasets.Sequence({k: one(v) for k, v in f["sequence"].items()})
        return {k: one(v) for k, v in f.items()}

    return datasets.Features({k: one(v) for k, v in features.items()})


def write_hub_repo(hub_dir: Path, folder: str, splits: dict[str, list[dict]]) -> Path:
    """``<hub_dir>/<hub_id>/``: parquet shards per (config, split) and a README whose ``configs``
    metadata maps them, as the parquet repositories on the hub are laid out."""
    import datasets

    spec = dataset_spec(folder)
    repo = hub_dir / spec.hub_id
    config = spec.config or "default"
    lines = ["---", "configs:", f"- config_name: {config}", "  data_files:"]
    for split, rows in splits.items():
        shard = repo / config / f"{split}-00000-of-00001.parquet"
        shard.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(rows, features=hub_features(spec.features)).to_parquet(str(shard))
        lines += [f"  - split: {split}", f"    path: {config}/{split}-*"]
    (repo / "README.md").write_text("\n".join(lines + ["---", ""]), encoding="utf-8")
    return repo


@pytest.mark.parametrize("name", [n for n in sorted(heldout_settings()) if n != "story_cloze"])
def test_heldout_loads_through_load_dataset_from_a_hub_layout_folder(name, templates_dir, tmp_path, offline_hub):
    from rospr_harness.tasks.synth import synth_rows

    setting = heldout_settings()[name]
    spec = dataset_spec(setting.folder)
    rows = synth_rows(spec, setting.split, 6, seed=1)
    write_hub_repo(tmp_path / "hub", setting.folder, {setting.split: rows})
    settings = DataSettings(templates_dir=templates_dir, hub_dir=tmp_path / "hub", rows_dir=tmp_path / "none")
    task = get_task(name, settings)
    assert locate(spec, setting.folder, setting.split, settings).kind == "hub_dir"
    loaded, source = task.rows()
    assert source.startswith("hf:") and setting.split in source
    assert loaded == [{k: r[k] for k in loaded[0]} for r in rows]  # the rows written, back through parquet
    for prompt in task.prompts():
        unit = task.load(prompt)
        assert len(unit.examples) + unit.skipped == len(rows)
        assert all(ex.label is not None for ex in unit.examples)


def test_hub_failure_names_dataset_id_and_fallback(templates_dir, tmp_path, offline_hub):
    task = get_task("rte", DataSettings(templates_dir=templates_dir, rows_dir=tmp_path))
    with pytest.raises(TaskError) as err:
        task.rows()
    message = str(err.value)
    assert "'super_glue/rte'" in message and dataset_spec("super_glue/rte").hub_id in message
    assert "<rows_dir>/super_glue/rte/validation.jsonl" in message and "rospr data status" in message
