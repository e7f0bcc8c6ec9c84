"""Shared fixtures: the reference data beside the repository and the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ROSPR_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (BIG-bench tasks and promptsource templates); skips when absent."""
    if not (SHARED_DATA / "bigbench").is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def templates_dir(shared_data: Path) -> Path:
    return shared_data / "promptsource" / "templates"


@pytest.fixture(scope="session")
def bigbench_dir(shared_data: Path) -> Path:
    return shared_data / "bigbench"


TINY_CORPUS_WORDS = (
    "the a cat dog sat on mat is was happy sad yes no true false neither movie film great terrible "
    "sports politics science food answer question premise hypothesis choice option because so it "
    "good bad loved hated ball vote atom pizza team election energy bread red blue green which"
).split()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny T5 v1.1-style checkpoint built once per test session (seconds)."""
    from harness.tiny_model import build_tiny

    out = tmp_path_factory.mktemp("tiny-t0")
    try:
        from harness.tasks.builtin import corpus

        texts = corpus()
    except ImportError:  # the built-in suite is optional for model tests
        import random

        rng = random.Random(0)
        texts = [" ".join(rng.choice(TINY_CORPUS_WORDS) for _ in range(12)) for _ in range(2000)]
    return build_tiny(out, size="tiny", seed=0, corpus=texts)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_dir):
    from rospr.backbone import load_backbone

    return load_backbone(tiny_model_dir)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (2 CPUs), shared by every test that uses Ray, started
    the way a run starts it (loopback only, no dashboard, no usage statistics: every test's Ray traffic
    stays on 127.0.0.1).

    Starting and stopping Ray once per module costs ~10 s each time and, on a busy 2-core machine,
    a second start in the same process has timed out waiting for its GCS server.
    """
    ray = pytest.importorskip("ray")
    from harness.ray_session import ray_started

    with ray_started(None, num_cpus=2):
        yield ray


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """``datasets`` and ``huggingface_hub`` offline (a hub id fails at once instead of waiting on a
    network this machine does not have), with the datasets cache under ``tmp_path``."""
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    return tmp_path
