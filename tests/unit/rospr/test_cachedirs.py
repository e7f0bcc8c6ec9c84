"""rospr/cachedirs.py: every cache lives under one user root (or its own override), never the current
folder."""

from __future__ import annotations

import pytest


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
    from rospr_harness.tasks.fetch import data_cache_dir
    from rospr_export.digests import default_memo

    for var in ("ROSPR_DIGEST_MEMO", "ROSPR_DATA_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("ROSPR_HOME", str(tmp_path))
    assert default_memo() == tmp_path / "digests.json" and data_cache_dir() == tmp_path / "data"
    with pytest.raises(KeyError, match="digests"):
        from rospr.cachedirs import cache_path
        cache_path("exports")
