"""The paper's pipeline offline: T0's training mixture as the sources (every template of the 38 pairs,
tuned on synthesised rows), held-out targets, the five methods; `rospr tune` and `rospr data` from the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rospr.softprompt import PromptBank
from rospr_harness.cli import app
from rospr_harness.config import load_config
from rospr_harness.schema import read_results
from rospr_harness.tasks import group
from rospr_harness.tasks.catalog import dataset_spec
from rospr_harness.tasks.templates import load_templates

METHODS = ["t0", "rospr", "rospr+inter", "rospr+var", "rospr+var+inter"]
ROWS = 8  # synth guarantees every template applies to one of 8 train rows


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory, templates_dir):
    root = tmp_path_factory.mktemp("paper-data")
    (root / "promptsource").mkdir()
    (root / "promptsource" / "templates").symlink_to(templates_dir)
    result = CliRunner().invoke(app, ["data", "synth", "--data-dir", str(root), "--rows", str(ROWS),
                                      "t0_train", "heldout"])
    assert result.exit_code == 0, result.output
    return root


def applicable_templates(data_dir) -> list[tuple[str, str]]:
    """(folder, template) pairs whose template renders a non-empty input and target on at least one
    synthesised train row: counted here with the templates alone, not through the tuning code."""
    pairs = []
    for folder in group("t0_train"):
        dataset, _, subset = folder.partition("/")
        path = data_dir / "rows" / folder / "train.jsonl"
        spec = dataset_spec(folder)  # the rows are in the hub's schema: map them as loading does
        rows = [spec.from_hub(json.loads(line), f"{path}: row {i}")
                for i, line in enumerate(path.read_text().splitlines())]
        for t in load_templates(data_dir / "promptsource" / "templates", dataset, subset or None):
            if any((p := t.apply(r)) and p[0] and len(p) > 1 and p[1] for r in rows):
                pairs.append((folder, t.name))
    return pairs


def test_data_status_says_where_rows_come_from(synth_dir):
    result = CliRunner().invoke(app, ["data", "status", "--data-dir", str(synth_dir), "t0_train", "heldout"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()[1:]
    # the train and eval splits of each source (where the hub has them), the eval split of each target
    assert len(lines) == sum(len(dataset_spec(f).splits) for f in group("t0_train")) + 11
    assert all("\tsynthetic\t" in line for line in lines)  # rows `rospr data synth` wrote say so
    rte = next(line for line in lines if line.startswith("rte\t"))
    assert "aps/super_glue" in rte and "\trte\t" in rte and "super_glue/rte/validation.jsonl" in rte


@pytest.mark.slow
def test_t0_train_sources_tune_and_run_with_heldout_targets(synth_dir, tiny_model_dir, tmp_path):
    expected = applicable_templates(synth_dir)
    bank = tmp_path / "bank"
    result = CliRunner().invoke(app, [
        "tune", "--model", str(tiny_model_dir), "--sources", "t0_train", "--data-dir", str(synth_dir),
        "--out", str(bank), "--set", "steps=2", "--set", f"source_rows={ROWS}", "--set", "prompt_length=4",
        "--set", "batch_size=4", "--set", "parallel=off"])
    assert result.exit_code == 0, result.output
    entries = PromptBank.open(bank, None).entries  # one sealed store entry per prompt
    trained = sorted((p["source"], p["template"]) for p in entries)
    assert trained == sorted(expected)
    assert len(trained) == 313, f"{len(trained)} source prompts trained"  # every template of the 38 pairs

    tree = {
        "model": {"name_or_path": str(tiny_model_dir)},
        "backend": "torch",
        "data": {"data_dir": str(synth_dir)},
        "method": METHODS,
        "tasks": [{"name": "rte", "prompts": ["GPT-3 style", "does it follow that"]},
                  {"name": "copa", "prompts": ["cause_effect"]}],
        "scoring": {"batch_size": 8},
        "rospr": {"sources": "t0_train", "prompt_bank": str(bank), "library": str(tmp_path / "library"),
                  "tune": {"steps": 2, "prompt_length": 4, "batch_size": 4, "source_rows": ROWS, "parallel": "off"},
                  "library_n": ROWS, "queries": 4, "top_n": 5, "n_inter": 3, "var_candidates": 3},
    }
    from rospr_harness.runner import run

    run(load_config(None, [], tree=tree), tmp_path / "run")
    res = read_results(tmp_path / "run" / "results.json")
    assert sorted((u.task, u.prompt, u.method) for u in res.units) == sorted(
        (t, p, m) for t, p in [("rte", "GPT-3 style"), ("rte", "does it follow that"), ("copa", "cause_effect")]
        for m in METHODS)
    sources = set(group("t0_train"))
    for u in res.units:
        assert u.n > 0
        if u.method != "t0":
            chosen = u.retrieval.chosen
            assert chosen and all(pid.split("/")[0] in {s.split("/")[0] for s in sources} for pid in chosen)
            assert all(c.source in sources for c in u.retrieval.candidates)


def test_configs_paper_runs_with_the_retriever_as_a_weights_file(synth_dir, tiny_model_dir, tmp_path):
    """configs/paper.yaml as shipped (its retriever a base plus a weights file), scaled down to the tiny
    model and two source datasets: the weights file is a Lightning-style state dict (``model.`` keys),
    and results.json names its digest."""
    import hashlib

    import torch
    from transformers import AutoModelForSeq2SeqLM

    from rospr_harness.runner import run

    weights = tmp_path / "T0_small.pt"
    state = AutoModelForSeq2SeqLM.from_pretrained(str(tiny_model_dir)).state_dict()
    torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}}, weights)
    config = load_config("configs/paper.yaml", [
        f"model.name_or_path={tiny_model_dir}", f"data.data_dir={synth_dir}",
        f"rospr.retriever.base={tiny_model_dir}", f"rospr.retriever.weights={weights}",
        "tasks=[{name: rte, prompts: [GPT-3 style]}]", "rospr.sources=[glue/mrpc, paws/labeled_final]",
        f"rospr.prompt_bank={tmp_path / 'bank'}", f"rospr.library={tmp_path / 'library'}",
        "rospr.tune.steps=2", f"rospr.tune.source_rows={ROWS}", "rospr.tune.prompt_length=4",
        "rospr.tune.batch_size=4", "rospr.tune.parallel=off", f"rospr.library_n={ROWS}", "rospr.queries=4",
        "ray.enabled=false", "cache.enabled=false"])
    assert config.rospr.retriever.weights == str(weights) and config.rospr.preset == "ours"
    run(config, tmp_path / "run")
    res = read_results(tmp_path / "run" / "results.json")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
    assert res.provenance.retriever["weights"] == digest and res.provenance.retriever["name"] == "T0_small.pt"
    assert json.loads((tmp_path / "library" / "manifest.json").read_text())["retriever"]["weights"] == digest
    assert {u.method for u in res.units} == set(METHODS) and all(u.n > 0 for u in res.units)
    report = (tmp_path / "run" / "report.md").read_text()
    assert (f"retriever `T0_small.pt` (weights {digest}), bank tuned on cpu and library keys embedded on cpu; "
            "preset `ours`") in report
