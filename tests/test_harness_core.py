"""The harness core against hand-written references: config validation (settings defined once, the
method parsed once), the unit-cache key's composition, and a run's plan and run directory."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from rospr_harness.cache import CACHE_FORMAT, CACHE_VERSION, cache_root, key_parts, unit_key
from rospr_harness.config import ConfigError, load_config
from rospr_harness.results import UnitResult
from rospr_harness.runner.plan import plan_run
from rospr_harness.runner.rundir import ResumeError, check_resumable, open_run
from rospr.scoring import Convention
from rospr.selection import T0, Method

TREE = {"tasks": [{"name": "builtin/sentiment", "limit": 4}, {"name": "builtin/topic", "limit": 4,
                                                                 "prompts": ["topic_label", "section"]}]}


def cfg(*overrides: str, **tree):
    return load_config(None, list(overrides), tree={**TREE, **tree})


# -- config -----------------------------------------------------------------------------------------
def test_settings_defaults_are_the_papers():
    c = cfg()
    # docs/method.md: P=100, Adafactor lr 0.3 (Lester et al.); T0 convention; exact inner product
    assert (c.rospr.tune.prompt_length, c.rospr.tune.optimizer, c.rospr.tune.lr) == (100, "adafactor", 0.3)
    assert (c.scoring.input_eos, c.scoring.choice_eos, c.scoring.length_normalize) == (False, True, False)
    assert c.rospr.index.type == "flat" and c.method == [T0]
    # the config section hands the method its own settings object, field for field
    assert c.scoring.convention() == Convention(input_eos=False, choice_eos=True, length_normalize=False,
                                                max_input_tokens=1024, max_choice_tokens=256)
    tuned = cfg("rospr.tune.steps=7", "rospr.tune.threads=2").rospr.tune.settings()
    assert (tuned.steps, tuned.threads, tuned.batch_size) == (7, 2, 32)


@pytest.mark.parametrize("override, words", [
    ("rospr.tune.steps=0", ["rospr.tune", "tune.steps must be >= 1"]),
    ("rospr.tune.optimizer=sgd", ["rospr.tune.optimizer"]),
    ("scoring.max_input_tokens=0", ["scoring", "max_input_tokens"]),
    ("rospr.index.hnsw_m=1", ["rospr.index", "hnsw_m"]),
    ("rospr.index.nlsit=4", ["rospr.index.nlsit", "unknown key", "'nlist'"]),
    ("scoring.batch_size=0", ["scoring.batch_size"]),
    ("method=[t0, rospr+magic]", ["method.1", "'rospr+magic' is not one of"]),
    ("method=[rospr, rospr]", ["method", "listed twice"]),
])
def test_bad_values_are_refused_naming_the_key(override, words):
    with pytest.raises(ConfigError) as err:
        cfg(override)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_methods_are_values_and_dump_as_their_names():
    c = cfg("method=[rospr+var+inter, t0]")
    assert c.method == [Method(var=True, inter=True), Method(retrieve=False)]
    assert c.model_dump(mode="json")["method"] == ["rospr+var+inter", "t0"]


# -- the unit-cache key -------------------------------------------------------------------------------
def test_cache_key_is_composed_as_documented():
    scorer = {"backend": "onnxruntime", "identity": {"name": "m"}, "weights": None}
    rospr = {"library": "L", "bank": "B", "queries": 32}
    conv = Convention()
    by_hand = {"model": scorer, "task": "rte", "prompt": "p", "data": "D",
               "convention": {"input_eos": False, "choice_eos": True, "length_normalize": False,
                              "max_input_tokens": 1024, "max_choice_tokens": 256},
               "method": "rospr+var", "rospr": rospr}
    parts = key_parts(scorer, "rte", "p", "D", conv, Method(var=True), rospr)
    assert parts == by_hand
    text = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION, **by_hand}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    assert unit_key(parts) == hashlib.sha256(text.encode("utf-8")).hexdigest()
    # t0 carries no retrieval part (and does not need one); a RoSPr method without it is refused
    t0 = key_parts(scorer, "rte", "p", "D", conv, T0, None)
    assert "rospr" not in t0 and t0["method"] == "t0"
    with pytest.raises(ValueError, match="rospr_part"):
        key_parts(scorer, "rte", "p", "D", conv, Method(), None)
    assert asdict(conv) == by_hand["convention"]


def test_cache_roots(monkeypatch, tmp_path):
    monkeypatch.delenv("ROSPR_UNIT_CACHE", raising=False)
    monkeypatch.setenv("ROSPR_ONNX_CACHE", str(tmp_path / "onnx"))
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    assert cache_root("units") == tmp_path / "home" / "units"
    assert cache_root("onnx") == tmp_path / "onnx"
    assert cache_root("units", tmp_path / "u") == tmp_path / "u"
    with pytest.raises(KeyError, match="units or onnx"):
        cache_root("data")


@pytest.mark.parametrize("kind, env, name", [("data", "ROSPR_DATA_CACHE", "data"), ("onnx", "ROSPR_ONNX_CACHE", "onnx"),
                                             ("units", "ROSPR_UNIT_CACHE", "units"),
                                             ("digests", "ROSPR_DIGEST_MEMO", "digests.json")])
def test_every_cache_lives_under_one_user_root_never_the_current_folder(kind, env, name, monkeypatch, tmp_path):
    from rospr.cachedirs import cache_home, cache_path

    for var in ("ROSPR_HOME", "XDG_CACHE_HOME", env):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert cache_home() == tmp_path / "user" / ".cache" / "rospr"
    assert cache_path(kind) == tmp_path / "user" / ".cache" / "rospr" / name
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path(kind) == tmp_path / "xdg" / "rospr" / name
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    assert cache_path(kind) == tmp_path / "home" / name
    monkeypatch.setenv(env, str(tmp_path / "own"))  # the per-kind override wins over the root
    assert cache_path(kind) == tmp_path / "own"
    assert cache_path(kind, tmp_path / "explicit") == tmp_path / "explicit"  # and a config key over both
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(env)
    assert cache_path(kind).is_absolute()


def test_default_locations_of_the_memo_and_the_data_cache_follow_the_root(monkeypatch, tmp_path):
    from rospr_harness.datatools.fetch import data_cache_dir
    from rospr_export.digests import default_memo

    for var in ("ROSPR_DIGEST_MEMO", "ROSPR_DATA_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path))
    assert default_memo() == tmp_path / "digests.json" and data_cache_dir() == tmp_path / "data"
    with pytest.raises(KeyError, match="digests"):
        from rospr.cachedirs import cache_path
        cache_path("exports")


# -- the plan and the run directory ---------------------------------------------------------------
def test_plan_lists_targets_and_what_is_left(tmp_path):
    plan = plan_run(cfg("method=[t0, rospr]"))
    targets = [(s.task_name, s.prompt) for s in plan.specs]
    assert targets == [("builtin/sentiment", "review_sentiment"), ("builtin/sentiment", "how_did_they_feel"),
                       ("builtin/sentiment", "sentiment_label"), ("builtin/topic", "topic_label"),
                       ("builtin/topic", "section")]
    assert plan.retrieves and not plan_run(cfg()).retrieves
    done = {("builtin/sentiment", "how_did_they_feel", "t0"), ("builtin/topic", "section", "rospr")}
    todo = plan.todo(done)
    assert todo[1] == [Method()] and todo[4] == [T0] and todo[0] == [T0, Method()]
    unit = lambda t, p, m: UnitResult(task=t, prompt=p, method=m, n=0, accuracy=None, skipped=0, truncated=0,  # noqa: E731
                                      records="", content_hash="", wall_s=0.0)
    # results.json lists units by method (config order), then by target (plan order)
    assert plan.order(unit("builtin/topic", "section", "t0")) == (0, 4)
    assert plan.order(unit("builtin/sentiment", "review_sentiment", "rospr")) == (1, 0)
    assert plan.order(unit("gone", "x", "rospr+inter")) == (2, 5)


def test_run_directory_opens_fresh_and_refuses_to_resume_nothing(tmp_path):
    c = cfg()
    with pytest.raises(ResumeError, match="holds no run to resume"):
        check_resumable(tmp_path / "none")
    rundir, kept = open_run(tmp_path / "fresh", c, plan_run(c).order, resume=False)
    assert kept == 0 and rundir.root == tmp_path / "fresh" and not rundir.staged and rundir.units == {}
