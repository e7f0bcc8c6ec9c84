"""`rospr plan`: its counts against what a real run of the same config then computes, and the second
plan after the run against the run's reuse (bank, library, export, unit cache)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rospr_harness.cli import app
from rospr_harness.config import load_config
from rospr_harness.runner import run as run_config

SOURCES = ["glue/mrpc", "paws/labeled_final"]
TASKS = ('tasks=[{name: rte, prompts: ["GPT-3 style", "does it follow that"]}, '
         '{name: copa, prompts: ["cause_effect"]}]')


@pytest.fixture()
def paper_setup(tmp_path, templates_dir, tiny_model_dir, monkeypatch):
    """configs/paper.yaml on the tiny model and synthesised rows, every cache under tmp_path."""
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    for var in ("ROSPR_UNIT_CACHE", "ROSPR_ONNX_CACHE", "ROSPR_DIGEST_MEMO"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    (data / "promptsource").mkdir(parents=True)
    (data / "promptsource" / "templates").symlink_to(templates_dir)
    synth = CliRunner().invoke(app, ["data", "synth", "--data-dir", str(data), "--rows", "8", *SOURCES, "rte", "copa"])
    assert synth.exit_code == 0, synth.output
    overrides = [f"model.name_or_path={tiny_model_dir}", f"data.data_dir={data}", "rospr.tune.steps=2",
                 "rospr.tune.source_rows=8", "rospr.tune.prompt_length=4", "rospr.tune.batch_size=4",
                 "rospr.tune.parallel=off", "rospr.library_n=4", TASKS, f"rospr.sources=[{', '.join(SOURCES)}]",
                 f"rospr.prompt_bank={tmp_path / 'bank'}", f"rospr.library={tmp_path / 'library'}",
                 "ray.enabled=false"]
    return overrides, tmp_path


def plan_json(overrides: list[str]) -> dict:
    args = ["plan", "configs/paper.yaml", "--json", "--tflops", "100"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_plan_counts_equal_the_run_and_the_second_plan_sees_its_reuse(paper_setup):
    overrides, tmp = paper_setup
    before = plan_json(overrides)
    assert not (tmp / "bank").exists() and not (tmp / "library").exists()
    assert not (tmp / "home" / "units").exists() and not (tmp / "home" / "onnx").exists()  # nothing written

    config = load_config("configs/paper.yaml", overrides)
    res = run_config(config, tmp / "run")

    # units, examples, answer choices: the run's records
    planned = {(u["task"], u["prompt"], u["method"]): u for u in before["units"]}
    assert set(planned) == {(u.task, u.prompt, u.method) for u in res.units}
    assert len(planned) == before["totals"]["units"] == 3 * 5
    choices = 0
    for u in res.units:
        records = [json.loads(line) for line in (tmp / "run" / u.records).read_text().splitlines()]
        p = planned[(u.task, u.prompt, u.method)]
        assert p["examples"] == u.n == len(records)
        assert p["choices"] == sum(len(r["choices"]) for r in records)
        choices += p["choices"]
    assert before["totals"]["examples"] == sum(u.n for u in res.units)
    assert before["totals"]["choices"] == choices

    # tuning jobs: exactly the prompts the run trained into the empty bank
    bank = json.loads((tmp / "bank" / "manifest.json").read_text())
    assert sorted(before["tuning"]["to_train"]) == sorted(p["id"] for p in bank["prompts"])
    assert before["tuning"]["reused"] == [] and before["tuning"]["jobs"] == len(bank["prompts"])
    assert before["stages"]["tuning"]["backward"] > 0
    # the library the run built, and its retrieval: queries per target as the run logged them
    library = json.loads((tmp / "library" / "manifest.json").read_text())
    assert before["retrieval"]["library_keys"] == library["n_keys"]
    logged = {(u.task, u.prompt): len(u.retrieval.queries) for u in res.units if u.retrieval}
    assert before["retrieval"]["queries"] == sum(logged.values())
    var_used = sum(min(config.rospr.var_candidates, u.retrieval.n_candidates)
                   for u in res.units if u.method == "rospr+var")
    assert var_used <= before["retrieval"]["var_candidates_max"]
    assert res.execution.computed == before["totals"]["units_to_compute"] == 15

    after = plan_json(overrides)
    assert sorted(after["tuning"]["reused"]) == sorted(before["tuning"]["to_train"])
    assert after["tuning"]["to_train"] == []
    assert after["retrieval"]["library_status"] == "reused" and after["retrieval"]["library_keys"] == 0
    assert after["onnx_export"].startswith("reused ")
    assert all(u["cached"] is True for u in after["units"])
    assert after["totals"]["units_cached"] == 15 and after["totals"]["flops"] == 0
    again = run_config(config, tmp / "run2")
    assert again.execution.cached == after["totals"]["units_cached"]


def test_plan_refuses_a_bad_throughput_and_an_unreadable_model(tmp_path):
    result = CliRunner().invoke(app, ["plan", "configs/demo.yaml", "--tflops", "0"])
    assert result.exit_code == 2 and "--tflops 0" in result.output
    result = CliRunner().invoke(app, ["plan", "configs/demo.yaml", "--set", f"model.name_or_path={tmp_path}",
                                      "--tflops", "1"])
    assert result.exit_code == 2 and "model.name_or_path=" in result.output and "config.json" in result.output


def test_the_backbone_identity_without_weights_is_the_loaded_ones(tiny_model_dir):
    from rospr_harness.runner.estimate import weightless_identity
    from rospr.backbone import load_backbone

    # the bank's train keys hold this identity: a plan must key jobs as the run does
    assert weightless_identity(str(tiny_model_dir)) == load_backbone(tiny_model_dir)[2].as_dict()
