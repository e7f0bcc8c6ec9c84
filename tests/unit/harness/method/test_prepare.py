"""harness/method/prepare.py: the bank and the library keyed without re-rendering the sources.

A second prepare over unchanged sources renders nothing and reuses every prompt and the library; a
change to a source's rows, to one template or to the training settings renders and retrains exactly
the prompts it touches; a bank or library without recorded source keys (written before them) is
checked in full once, its prompts kept, and the keys recorded; edited files stay refused.
Rendering is counted by wrapping the tasks' own ``load`` (the real one runs)."""

from __future__ import annotations

import json
import shutil

import pytest

from rospr_harness.backends import create_backend
from rospr_harness.method.bank import tuning_jobs
from rospr_harness.method.prepare import prepare
from rospr_harness.runner.plan import data_settings
from rospr_harness.tasks.builtin import BuiltinTask
from rospr_harness.tasks.promptsource import PromptsourceTask
from rospr.artifacts import ArtifactError, seal

ROWS = [{"sentence1": f"The {a} watched the {b} near the station.", "sentence2": f"The {b} saw a {a} on the hill.",
         "label": i % 2, "idx": i} for i, (a, b) in enumerate([("baker", "bridge"), ("pilot", "garden"),
                                                                  ("team", "library"), ("council", "boat"),
                                                                  ("man", "market"), ("child", "river")])]

EDITED = "paraphrase"  # the mrpc template whose body says "Does the sentence"


@pytest.fixture
def renders(monkeypatch):
    """Counts (source, template) renderings by the real ``load`` of both task kinds."""
    seen: list[tuple[str, str]] = []
    for cls in (PromptsourceTask, BuiltinTask):
        real = cls.load

        def counting(self, prompt, *args, _real=real, **kwargs):
            seen.append((self.name, prompt))
            return _real(self, prompt, *args, **kwargs)

        monkeypatch.setattr(cls, "load", counting)
    return seen


@pytest.fixture
def sources(tmp_path, templates_dir, run_config):
    """A config whose sources are glue/mrpc (local rows, a copy of its templates) and builtin/animals."""
    tdir = tmp_path / "templates"
    shutil.copytree(templates_dir / "glue" / "mrpc", tdir / "glue" / "mrpc")
    rows = tmp_path / "rows" / "glue" / "mrpc" / "train.jsonl"
    rows.parent.mkdir(parents=True)
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS))

    def config(**tune):
        return run_config(backend="torch", method=["rospr"],
                          data={"templates_dir": str(tdir), "rows_dir": str(tmp_path / "rows")},
                          rospr={"sources": ["glue/mrpc", "builtin/animals"], "prompt_bank": str(tmp_path / "bank"),
                                 "library": str(tmp_path / "library"), "library_n": 4,
                                 "tune": {"steps": 1, "prompt_length": 2, "batch_size": 4, "source_rows": 6,
                                          "parallel": "off", **tune}})

    return config, rows, tdir / "glue" / "mrpc" / "templates.yaml", tmp_path


def run_prepare(config):
    return prepare(config, create_backend(config), data_settings(config.data))


def prompts(ctx) -> dict[str, str]:
    """Each prompt id of the run's bank with its file's sha256."""
    return {e["id"]: e["sha256"] for e in ctx.bank.entries}


def full_check(config) -> dict[str, str]:
    """The train key of every source prompt, every one rendered (the check before source keys)."""
    backend = create_backend(config)
    return {job.id: job.train_key(config.rospr.tune.settings(), backend.identity)
            for job in tuning_jobs(config.rospr, data_settings(config.data))}


def train_keys(ctx) -> dict[str, str]:
    return {e["id"]: e["train_key"] for e in ctx.bank.entries}


def test_a_second_prepare_renders_nothing_and_reuses_everything(sources, renders):
    config, *_ = sources
    first = run_prepare(config())
    assert len(renders) == len(first.bank.entries) == 10  # 7 + 3: every (source, template) rendered once
    renders.clear()
    second = run_prepare(config())
    assert renders == []
    assert prompts(second) == prompts(first)
    assert second.library.content_hash == first.library.content_hash


def test_changed_rows_retrain_only_that_sources_prompts(sources, renders):
    config, rows, _, _ = sources
    ctx = run_prepare(config())
    first, keys, lib = prompts(ctx), train_keys(ctx), ctx.library.content_hash
    rows.write_text(rows.read_text().replace("baker", "sailor"))
    renders.clear()
    ctx = run_prepare(config())
    assert {task for task, _ in renders} == {"glue/mrpc", "builtin/animals"}  # animals: the library's texts
    now, keys_now = prompts(ctx), train_keys(ctx)
    # a template that reads only other rows (mrpc's generation ones keep label 1) renders what it did
    changed = {pid for pid in now if keys_now[pid] != keys[pid]}
    assert changed and all(pid.startswith("glue/mrpc/") for pid in changed)
    assert keys_now == full_check(config())  # what rendering everything asks for
    assert all(now[pid] == first[pid] for pid in now if pid not in changed)
    assert ctx.library.content_hash != lib  # its keys are the new rows'


def test_one_edited_template_retrains_that_prompt_alone(sources, renders):
    config, _, templates, _ = sources
    first = prompts(run_prepare(config()))
    text = templates.read_text()
    assert text.count("Does the sentence") == 1
    templates.write_text(text.replace("Does the sentence", "Does this sentence"))
    renders.clear()
    ctx = run_prepare(config())
    edited = f"glue/mrpc/{EDITED}"
    assert renders[0] == ("glue/mrpc", EDITED)  # for the bank; then the others for the library's texts
    assert sorted(renders[1:]) == sorted((pid.rpartition("/")[0], pid.rpartition("/")[2]) for pid in first
                                         if pid != edited)
    assert train_keys(ctx) == full_check(config())
    now = prompts(ctx)
    assert [pid for pid in now if now[pid] != first[pid]] == [edited]


def test_changed_training_settings_retrain_every_prompt(sources, renders):
    config, *_ = sources
    first = prompts(run_prepare(config()))
    renders.clear()
    ctx = run_prepare(config(lr=0.1))
    assert len(renders) == len(first)
    assert train_keys(ctx) == full_check(config(lr=0.1)) != full_check(config())


def test_a_bank_and_library_without_source_keys_are_checked_in_full_once(sources, renders):
    config, _, _, root = sources
    first = run_prepare(config())
    for path in (root / "bank" / "prompts").glob("*/manifest.json"):  # a bank as tuned before the keys, sealed
        manifest = json.loads(path.read_text())
        manifest["prompt"]["origin"].pop("source_key")
        path.write_text(json.dumps(seal(manifest)))
    renders.clear()
    again = run_prepare(config())
    assert len(renders) == len(first.bank.entries)  # the full check: rendered, compared by train_key
    assert prompts(again) == prompts(first)  # nothing retrained
    assert again.library.content_hash == first.library.content_hash  # nor rebuilt
    assert all(json.loads(p.read_text())["prompt"]["origin"].get("source_key")
               for p in (root / "bank" / "prompts").glob("*/manifest.json"))
    renders.clear()
    run_prepare(config())
    assert renders == []


def test_an_edited_library_key_is_not_trusted(sources, renders):
    """The library's one key sits in its sealed manifest: one edited to claim another build is refused,
    not reused; deleted, the library is built again and the next run renders nothing."""
    config, _, _, root = sources
    first = run_prepare(config())
    path = root / "library" / "manifest.json"
    data = json.loads(path.read_text())
    data["build_key"] = "0" * 64  # another build's key
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="manifest_hash"):
        run_prepare(config())
    shutil.rmtree(root / "library")
    renders.clear()
    again = run_prepare(config())
    assert again.library.content_hash == first.library.content_hash  # the same library, built again
    renders.clear()
    run_prepare(config())
    assert renders == []


def test_an_edited_prompt_file_is_refused_without_rendering(sources, renders):
    config, _, _, root = sources
    run_prepare(config())
    victim = sorted((root / "bank" / "prompts").glob("*/prompt.safetensors"))[0]
    victim.write_bytes(victim.read_bytes()[:-4] + b"\0\0\0\0")
    renders.clear()
    with pytest.raises(ArtifactError, match="sha256"):
        run_prepare(config())


def test_a_missing_retriever_weights_file_is_refused_in_one_line_before_any_tuning(run_config, tiny_model_dir,
                                                                                   tmp_path):
    from rospr_harness.config import load_config
    from rospr_harness.method.library import retriever_checkpoint
    from rospr.errors import SettingError

    tree = run_config.tree(rospr={"retriever": {"base": str(tiny_model_dir), "weights": str(tmp_path / "T0_small.pt")},
                                  "prompt_bank": str(tmp_path / "bank"), "library": str(tmp_path / "library")},
                           method=["rospr"])
    config = load_config(None, [], tree=tree)
    with pytest.raises(SettingError) as err:
        prepare(config, create_backend(config), data_settings(config.data))
    message = str(err.value)
    assert "\n" not in message and "T0_small.pt" in message and "github.com/seonghyeonye/RoSPr" in message
    assert "rospr.retriever: null" in message and not (tmp_path / "bank").exists()  # nothing tuned
    with pytest.raises(SettingError, match="no such file"):
        retriever_checkpoint(config)
    with pytest.raises(ValueError, match="unknown key"):
        load_config(None, ["rospr.retriever.file=x.pt"], tree=tree)
