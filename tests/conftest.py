"""Shared fixtures: the real task data where this machine has it, the tiny model, and caches kept out
of the user's cache folder.

No test downloads anything. The real upstream files (promptsource 0.2.3's templates, BIG-bench 1.0.0's
14 paper tasks) are installed, checked file by file against the committed manifests, into the session's
own data cache from the first local copy found: the machine's data cache (``rospr data fetch``),
``$ROSPR_SHARED_DATA``, or ``../shared/data`` beside the clone (both laid out like it:
``promptsource/templates``, ``bigbench``). Tests that need them skip, with one line naming the command
that gets the data, where there is none. ``$ROSPR_DATA_OFFLINE`` is set: a default that would fetch
refuses instead."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rospr.cachedirs import cache_path
from rospr_harness.tasks import fetch as fetching

REPO = Path(__file__).resolve().parents[1]
# Read before any test touches the environment: the machine's own data cache (what `rospr data fetch`
# filled), and the folders laid out like ../shared/data.
MACHINE_DATA_CACHE = fetching.data_cache_dir()
# the environment rospr exports in where this one cannot run Optimum (transformers 5): made once per
# machine by `rospr export-env` (.ci/run's core environment does), never installed by a test
MACHINE_EXPORT_ENV = cache_path("export-env")
SHARED_DATA = [Path(p) for p in (os.environ.get("ROSPR_SHARED_DATA"), REPO.parent / "shared" / "data") if p]
NEEDS = {
    "templates": "`rospr data fetch templates` (or ROSPR_SHARED_DATA, or ../shared/data beside the clone)",
    "bigbench": "`rospr data fetch bigbench --from PATH` with the 14 paper tasks (or ROSPR_SHARED_DATA, or "
                "../shared/data beside the clone)",
}
REAL_DATA: dict[str, Path | None] = {}  # what -> the session's checked copy, None where the machine has none


def _install_real_data(cache: Path) -> None:
    """Install each data set into the session's data cache from the first local copy that has it whole."""
    for what in fetching.WHATS:
        local = [fetching.LocalSource(p) for p in SHARED_DATA if p.is_dir()]
        entry = fetching.cached(what, MACHINE_DATA_CACHE)
        if entry is not None:
            local.insert(0, fetching.LocalSource(entry.parent))
        REAL_DATA[what] = None
        for source in local:
            try:
                REAL_DATA[what] = fetching.fetch(what, cache, sources=[source])
                break
            except fetching.TaskError:
                continue


@pytest.fixture(scope="session", autouse=True)
def isolated_cache_home(tmp_path_factory):
    """``$ROSPR_HOME`` and ``$ROSPR_DATA_CACHE`` in session folders, so no test writes exports, units,
    digest memos or data into the user's caches, and ``$ROSPR_DATA_OFFLINE`` (subprocesses inherit all
    of them); the real data this machine has goes into the session's data cache first. The export
    environment is the machine's (``$ROSPR_EXPORT_ENV``), used where one was made and never installed
    (``$ROSPR_EXPORT_ENV_OFFLINE``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROSPR_HOME", str(tmp_path_factory.mktemp("rospr-home")))
        cache = tmp_path_factory.mktemp("rospr-data")
        mp.setenv("ROSPR_DATA_CACHE", str(cache))
        mp.setenv("ROSPR_DATA_OFFLINE", "1")
        mp.setenv("ROSPR_EXPORT_ENV", str(MACHINE_EXPORT_ENV))
        mp.setenv("ROSPR_EXPORT_ENV_OFFLINE", "1")
        _install_real_data(cache)
        yield


def real_data(what: str) -> Path:
    """The session's checked copy of the real ``what`` (``templates`` or ``bigbench``); skips the test,
    naming the command that gets it, where this machine has none."""
    folder = REAL_DATA.get(what)
    if folder is None:
        pytest.skip(f"needs the real {what} files: {NEEDS[what]}")
    return folder


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root laid out like ``../shared/data``: ``promptsource/templates`` (skips without it) and,
    where this machine has it, ``bigbench``; links to the session's checked copies."""
    templates = real_data("templates")
    root = tmp_path_factory.mktemp("data-root")
    (root / "promptsource").mkdir()
    (root / "promptsource" / "templates").symlink_to(templates, target_is_directory=True)
    if REAL_DATA.get("bigbench") is not None:
        (root / "bigbench").symlink_to(REAL_DATA["bigbench"], target_is_directory=True)
    return root


@pytest.fixture(scope="session")
def templates_dir(data_root: Path) -> Path:
    """promptsource 0.2.3's ``templates/`` folder (279 ``templates.yaml``); skips where there is none."""
    return data_root / "promptsource" / "templates"


@pytest.fixture(scope="session")
def bigbench_dir() -> Path:
    """bigbench 1.0.0's ``benchmark_tasks/`` of the 14 paper tasks (``<task>[/<subtask>]/task.json``);
    skips where there is none."""
    return real_data("bigbench")


TINY_CORPUS_WORDS = (
    "the a cat dog sat on mat is was happy sad yes no true false neither movie film great terrible "
    "sports politics science food answer question premise hypothesis choice option because so it "
    "good bad loved hated ball vote atom pizza team election energy bread red blue green which"
).split()


def _tiny_build_key() -> str:
    """What the tiny model is a function of: every source file of ``rospr`` and ``rospr_harness`` (the
    builder and the built-in tasks' corpus its tokenizer is trained on) and the versions of the
    libraries that write it. Equal keys give byte-identical checkpoints (the build is deterministic)."""
    import hashlib
    from importlib import metadata

    h = hashlib.sha256()
    for dist in ("torch", "transformers", "tokenizers", "sentencepiece", "safetensors"):
        try:
            h.update(f"{dist}=={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} absent\n".encode())
    for folder in (REPO / "rospr", REPO / "harness"):
        for path in sorted(folder.rglob("*.py")):
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _build_tiny(out: Path) -> Path:
    from rospr_harness.tiny_model import build_tiny

    try:
        from rospr_harness.tasks.builtin import corpus

        texts = corpus()
    except ImportError:  # the built-in suite is optional for model tests
        import random

        rng = random.Random(0)
        texts = [" ".join(rng.choice(TINY_CORPUS_WORDS) for _ in range(12)) for _ in range(2000)]
    return build_tiny(out, size="tiny", seed=0, corpus=texts)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny T5 v1.1-style checkpoint, a fresh copy per test session. The build (3-4 s of torch) is
    kept under ``build/test-tiny/<key>`` (git-ignored, removed by ``make clean``) and reused while the
    sources and library versions it depends on are unchanged (see ``_tiny_build_key``)."""
    import shutil
    import tempfile

    out = tmp_path_factory.mktemp("tiny-t0")
    kept = REPO / "build" / "test-tiny" / _tiny_build_key()
    if not (kept / "rospr_tiny.json").is_file():
        kept.parent.mkdir(parents=True, exist_ok=True)
        for stale in kept.parent.iterdir():  # builds for other sources; a damaged one for these
            if not stale.name.startswith("."):
                shutil.rmtree(stale, ignore_errors=True)
        staged = Path(tempfile.mkdtemp(dir=kept.parent, prefix=".staged-"))
        _build_tiny(staged)
        try:
            staged.rename(kept)  # another session may have published the same build first
        except OSError:
            shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(kept, out, dirs_exist_ok=True)
    return out


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_dir):
    from rospr.backbone import load_backbone

    return load_backbone(tiny_model_dir)


@pytest.fixture(scope="session")
def animals():
    """``builtin/animals`` under its ``mentions_animal`` prompt: (200 training examples, 64 validation
    examples never trained on)."""
    from rospr_harness.tasks import get_task
    from rospr_harness.tasks.base import DataSettings

    task = get_task("builtin/animals", DataSettings())
    return task.load("mentions_animal", split="train").examples, task.load("mentions_animal").examples


class StopSoon:
    """Stops, in the background, the servers whose stop is not what a test checks; the test session
    waits for them at its end (a session-scoped ``stop_soon``) and fails on a stop that raised. A Triton
    server's stop waits ~3 s for its models to unload (it looks once a second), time in which the next
    tests run."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def __call__(self, server) -> None:  # a rospr_harness.serve.TritonServer
        def stop() -> None:
            try:
                server.stop()
            except BaseException as exc:  # noqa: BLE001 - reported when the module ends
                self.errors.append(exc)

        thread = threading.Thread(target=stop, name=f"stop {server.server_id}")
        thread.start()
        self.threads.append(thread)

    def wait(self) -> None:
        for thread in self.threads:
            thread.join()
        assert not self.errors, self.errors


@pytest.fixture(scope="session")
def stop_soon():
    """Triton servers stopped in the background (``StopSoon``), waited for at the session's end."""
    stopper = StopSoon()
    yield stopper
    stopper.wait()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray for the whole test session (2 CPUs), shared by every test that uses Ray, started
    the way a run starts it (loopback only, no dashboard, no usage statistics: every test's Ray traffic
    stays on 127.0.0.1).

    Starting and stopping Ray once per module costs ~10 s each time and, on a busy 2-core machine,
    a second start in the same process has timed out waiting for its GCS server.
    """
    ray = pytest.importorskip("ray")
    from rospr_harness.ray_session import ray_started

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


class RunConfigs:
    """``run_config(**overrides)``: a validated ``RunConfig`` of the tiny model on ``builtin/animals``
    (``rospr_harness.config.load_config``, so a bad override is refused as a user's would be).

    An override is a top-level key (``tasks=[...]``, ``backend="torch"``), a nested mapping merged
    into the default (``model={"device": "cpu"}`` keeps the tiny model), or a dotted path given by
    unpacking (``**{"tasks.0.limit": 4}``). ``run_config.tree(**overrides)`` is the same config as the
    plain tree a user writes, for the tests that hand a YAML file to the CLI. Positional strings are
    ``--set`` overrides applied after the tree (``run_config("ray.enabled=true", **settings)``)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir

    def tree(self, **overrides) -> dict:
        tree: dict = {"model": {"name_or_path": str(self.model_dir)}, "tasks": ["builtin/animals"]}
        for key, value in overrides.items():
            if "." in key:
                *path, last = key.split(".")
                node = tree
                for k in path:
                    if isinstance(node, list):
                        if isinstance(node[int(k)], str):  # the `- name` shorthand of a task
                            node[int(k)] = {"name": node[int(k)]}
                        node = node[int(k)]
                    else:
                        node = node.setdefault(k, {})
                if isinstance(node, list):
                    node[int(last)] = value
                else:
                    node[last] = value
            elif isinstance(value, dict) and isinstance(tree.get(key), dict):
                tree[key] = {**tree[key], **value}
            else:
                tree[key] = value
        return tree

    def write(self, path: Path, **overrides) -> Path:
        """The tree as a YAML file at ``path``; the path."""
        import yaml

        path.write_text(yaml.safe_dump(self.tree(**overrides)))
        return path

    def __call__(self, *sets: str, **overrides):
        """The config of ``tree(**overrides)``, then ``sets`` applied as ``--set`` strings
        (``"scoring.batch_size=5"``, ``"tasks=[{name: builtin/nli, limit: 8}]"``) as the CLI applies them."""
        from rospr_harness.config import load_config

        return load_config(None, list(sets), tree=self.tree(**overrides))


@pytest.fixture(scope="session")
def run_config(tiny_model_dir) -> RunConfigs:
    """Build run configs of the tiny model (see ``RunConfigs``)."""
    return RunConfigs(tiny_model_dir)


@pytest.fixture
def fake_scorer():
    """For one test: every backend scores with ``fakes.FakeScorer`` (deterministic scores from the
    token ids; see ``tests/fakes.py``), so ``rospr_harness.runner.run`` and ``rospr run`` in process run
    in milliseconds. Yields the list of the fake scorers built meanwhile."""
    from fakes import fake_scoring

    with fake_scoring() as built:
        yield built
