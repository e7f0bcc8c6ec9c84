"""`rospr plan`: its refusals and the identity it keys tuning jobs by. Its counts against what a real run
of the same config then computes, and the second plan after the run against the run's reuse (two whole
runs of configs/paper.yaml), are tests/e2e/test_plan_command_run.py, which uses this module's fixture."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rospr_harness.cli import app

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
                 "rospr.retriever=null", "ray.enabled=false"]  # the backbone's encoder: no T0_small.pt here
    return overrides, tmp_path


def plan_json(overrides: list[str]) -> dict:
    args = ["plan", "configs/paper.yaml", "--json", "--tflops", "100"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


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
