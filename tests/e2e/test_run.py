"""The run end to end on the tiny model: run directory, schema, report, config errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rospr_harness.cli import app
from rospr_harness.config import ConfigError, load_config
from rospr_harness.schema import SCHEMA_VERSION, read_records, read_results
from rospr_harness.runner import run

TASKS = [{"name": "builtin/sentiment", "limit": 12}, {"name": "builtin/topic", "limit": 10, "prompts": ["topic_label", "section"]}]


@pytest.fixture(scope="module")
def demo_run(run_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = run_config(tasks=TASKS, scoring={"batch_size": 5})
    return cfg, run(cfg, out), out


def test_run_directory(demo_run):
    cfg, res, out = demo_run
    assert (out / "results.json").is_file() and (out / "report.md").is_file()
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    disk = read_results(out / "results.json")
    assert disk.schema_version == SCHEMA_VERSION
    prov = disk.provenance
    # the config's digest, computed here by hand: sha256 of its canonical JSON, 16 hex digits
    by_hand = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    assert prov.config_hash == by_hand and prov.seed == 0 and prov.wall_s > 0
    assert prov.model["d_model"] == 128 and "torch" in prov.package_versions
    # 3 sentiment prompts + 2 topic prompts, one method
    assert [(u.task, u.prompt) for u in disk.units][:3] == [("builtin/sentiment", p) for p in
                                                             ("review_sentiment", "how_did_they_feel", "sentiment_label")]
    assert len(disk.units) == 5


def test_records_agree_with_unit_accuracy(demo_run):
    _, res, out = demo_run
    for unit in res.units:
        recs = read_records(out / unit.records)
        assert len(recs) == unit.n
        for r in recs:
            assert len(r.scores) == len(r.choices)
            assert r.prediction == int(np.argmax(r.scores))
            assert r.score == float(r.prediction == r.gold)
        assert unit.accuracy == pytest.approx(sum(r.score for r in recs) / len(recs))


def test_summary_mean_and_median(demo_run):
    _, res, out = demo_run
    topic = [u.accuracy for u in res.units if u.task == "builtin/topic"]
    sent = [u.accuracy for u in res.units if u.task == "builtin/sentiment"]
    summary = {s.task: s for s in res.tasks}
    assert summary["builtin/topic"].mean == pytest.approx((topic[0] + topic[1]) / 2)
    assert summary["builtin/sentiment"].median == pytest.approx(sorted(sent)[1])
    assert res.overall["t0"] == pytest.approx((summary["builtin/topic"].mean + summary["builtin/sentiment"].mean) / 2)
    report = (out / "report.md").read_text()
    assert "| builtin/topic | section |" in report and "## Per task" in report
    assert f"{100 * res.overall['t0']:.1f}" in report


def test_cli_run_and_typo(run_config, tmp_path):
    cfg = run_config.write(tmp_path / "c.yaml", tasks=[{"name": "builtin/animals", "limit": 4}])
    runner = CliRunner()
    ok = runner.invoke(app, ["run", str(cfg), "--out", str(tmp_path / "r"), "--set", "scoring.batch_size=3"])
    assert ok.exit_code == 0, ok.output
    assert len(read_results(tmp_path / "r" / "results.json").units) == 3
    bad = runner.invoke(app, ["run", str(cfg), "--set", "scoring.batchsize=3"])
    assert bad.exit_code == 2
    assert "scoring.batchsize" in bad.output and "batch_size" in bad.output and "c.yaml" in bad.output


@pytest.mark.parametrize(
    "tree, fragment",
    [
        ({"tasks": ["builtin/animals"], "modle": {}}, "modle: unknown key; did you mean 'model'"),
        ({"tasks": [{"name": "x", "limit": 0}]}, "tasks.0.limit"),
        ({"tasks": []}, "tasks"),
        ({"tasks": ["x"], "method": "nope"}, "method"),
        ({"tasks": ["x"], "scoring": {"batch_size": "many"}}, "scoring.batch_size"),
    ],
)
def test_config_errors_name_the_key(tree, fragment, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(tree))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_unknown_task_is_refused_before_scoring(run_config, tmp_path):
    from rospr_harness.tasks.base import TaskError

    cfg = run_config(tasks=["builtin/sentimnt"])
    with pytest.raises(TaskError, match="builtin/sentiment"):
        run(cfg, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_tiny_checkpoint_loads_with_auto_classes(tiny_model_dir):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert cfg.feed_forward_proj == "gated-gelu" and cfg.tie_word_embeddings is False
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    assert tok.unk_token_id not in tok("The Quick brown fox, 42 times!", add_special_tokens=False).input_ids
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 1e7
