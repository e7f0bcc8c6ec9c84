"""rospr_harness.ray_session.ray_choice: what ray.enabled=auto chooses, by hand."""

from __future__ import annotations

import pytest

from rospr_harness.config import RayConfig, load_config
from rospr_harness.ray_session import AUTO_MIN_CPUS, AUTO_MIN_UNITS, ray_choice


@pytest.fixture(autouse=True)
def no_ray_env(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_ID", raising=False)


def test_true_and_false_decide():
    assert ray_choice(RayConfig(enabled=True), 0, cpus=1, gpus=0)[0] is True
    assert ray_choice(RayConfig(enabled=False), 10**6, cpus=64, gpus=8)[0] is False


def test_auto_chooses_ray_for_a_cluster_gpus_or_a_large_run_on_many_cores(monkeypatch):
    auto = RayConfig(enabled="auto")
    small, why = ray_choice(auto, 100, cpus=2, gpus=0)
    assert small is False and "in process" in why and "2 cores" in why
    assert ray_choice(auto, AUTO_MIN_UNITS, cpus=AUTO_MIN_CPUS, gpus=0)[0] is True
    assert ray_choice(auto, AUTO_MIN_UNITS - 1, cpus=64, gpus=0)[0] is False
    assert ray_choice(auto, 10**4, cpus=AUTO_MIN_CPUS - 1, gpus=0)[0] is False
    assert ray_choice(auto, 1, cpus=2, gpus=2)[0] is True and ray_choice(auto, 1, cpus=2, gpus=1)[0] is False
    assert ray_choice(RayConfig(enabled="auto", num_gpus_per_scorer=1), 1, cpus=2, gpus=1)[0] is True
    assert ray_choice(RayConfig(enabled="auto", address="auto"), 1, cpus=2, gpus=0) == (
        True, "ray.enabled=auto: Ray, a cluster is named (ray.address)")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6390")
    assert ray_choice(auto, 1, cpus=2, gpus=0)[0] is True


def test_the_shipped_configs_choose_auto():
    for name in ("demo", "full", "paper"):
        assert load_config(f"configs/{name}.yaml").ray.enabled == "auto", name
    assert load_config(None, tree={"model": {"name_or_path": "m"}, "tasks": ["rte"]}).ray.enabled is False  # in process


def test_an_address_with_ray_disabled_is_refused_but_auto_is_not():
    with pytest.raises(ValueError, match="ray.enabled is false"):
        RayConfig(enabled=False, address="auto")
    assert RayConfig(enabled="auto", address="auto").address == "auto"
