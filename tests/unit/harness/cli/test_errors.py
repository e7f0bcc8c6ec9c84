"""`rospr` commands (harness/cli/errors.py): everyday failures end in one clear line (file or field,
and a fix), exit code 2, no traceback, and a refusal of ours is never called a bug; a finished run in
the output directory stays byte for byte.

Each case runs the real command (``rospr_harness.cli.app``) on the tiny model with the torch backend and
one built-in task. Disk full and a read-only output folder use real tmpfs mounts when the test runs
as root (skipped otherwise); disk full is also injected at the atomic write, which runs everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import REPO, cli, error_line, snapshot

TASK = "builtin/animals"
# a short torch run: four rows of one built-in task
SHORT_RUN = {"backend": "torch", "tasks": [{"name": TASK, "limit": 4}], "scoring": {"batch_size": 4}}


@pytest.fixture
def config_file(run_config, tmp_path):
    """Write a YAML config of ``SHORT_RUN`` under ``tmp_path`` (``model``: another checkpoint than the
    tiny one; ``extra``: more settings); its path."""

    def write(model: Path | str | None = None, **extra) -> Path:
        more = {"model": {"name_or_path": str(model)}} if model is not None else {}
        return run_config.write(tmp_path / f"config-{uuid.uuid4().hex[:6]}.yaml", **SHORT_RUN, **more, **extra)

    return write


@pytest.fixture(scope="module")
def finished(run_config, tmp_path_factory):
    """A finished run (its directory) and its config."""
    root = tmp_path_factory.mktemp("finished")
    cfg = run_config.write(root / "config.yaml", **SHORT_RUN)
    res = cli("run", cfg, "--out", root / "run")
    assert res.exit_code == 0, res.output
    return root / "run", cfg


def copy_run(finished, tmp: Path) -> tuple[Path, dict]:
    run_dir = tmp / "run"
    shutil.copytree(finished[0], run_dir)
    return run_dir, snapshot(run_dir)


def damaged_model(tiny_model_dir: Path, tmp: Path) -> Path:
    model = tmp / "model"
    shutil.copytree(tiny_model_dir, model)
    return model


# -- the model ---------------------------------------------------------------------------------


def test_truncated_safetensors_is_named_and_earlier_run_kept(tiny_model_dir, finished, tmp_path):
    run_dir, before = copy_run(finished, tmp_path)
    model = damaged_model(tiny_model_dir, tmp_path)
    weights = model / "model.safetensors"
    with open(weights, "r+b") as fh:  # a download cut in the middle
        fh.truncate(weights.stat().st_size // 2)
    res = cli("run", finished[1], "--out", run_dir, "--set", f"model.name_or_path={model}")
    error_line(res, str(weights), "truncated")
    assert snapshot(run_dir) == before


def test_safetensors_with_garbage_header_is_named(config_file, tiny_model_dir, tmp_path):
    model = damaged_model(tiny_model_dir, tmp_path)
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    res = cli("run", config_file(model=model), "--out", tmp_path / "r")
    error_line(res, str(model / "model.safetensors"), "header")


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "special_tokens_map.json"])
def test_malformed_json_in_checkpoint_is_named(config_file, tiny_model_dir, tmp_path, name):
    model = damaged_model(tiny_model_dir, tmp_path)
    if not (model / name).exists():
        pytest.skip(f"the tiny model has no {name}")
    (model / name).write_text('{"d_model": 32,')
    res = cli("run", config_file(model=model), "--out", tmp_path / "r")
    error_line(res, str(model / name), "not valid JSON")


def test_checkpoint_without_config_or_weights_is_named(config_file, tiny_model_dir, tmp_path):
    model = damaged_model(tiny_model_dir, tmp_path)
    (model / "config.json").unlink()
    error_line(cli("run", config_file(model=model), "--out", tmp_path / "r"), str(model / "config.json"), "missing")
    model2 = damaged_model(tiny_model_dir, tmp_path / "b")
    (model2 / "model.safetensors").unlink()
    error_line(cli("run", config_file(model=model2), "--out", tmp_path / "r"), str(model2), "no weight files")


@pytest.mark.parametrize("name", ["build/tiny-t00", "./x", "/abs/x", "../nowhere/model"])
def test_missing_path_like_model_is_refused_without_hub_lookup(config_file, tmp_path, monkeypatch, name):
    import huggingface_hub
    import transformers

    def no_hub(*args, **kwargs):
        raise AssertionError(f"looked up on the hub: {args} {kwargs}")

    monkeypatch.chdir(tmp_path)  # no build/ here: the name alone says it is a path
    for target in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForSeq2SeqLM):
        monkeypatch.setattr(target, "from_pretrained", no_hub)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    res = cli("run", config_file(model=name), "--out", tmp_path / "r")
    error_line(res, "model.name_or_path", repr(name), "no such directory")


def test_model_path_that_is_a_file_is_named(config_file, tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    error_line(cli("run", config_file(model=f), "--out", tmp_path / "r"), "model.name_or_path", "is a file")


# -- the output directory and the disk -----------------------------------------------------------


def test_output_path_under_a_file_is_named(config_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    res = cli("run", config_file(), "--out", blocker / "run")
    line = error_line(res, str(blocker))
    assert "not a folder" in line or "a part of the path is a file" in line


def test_output_is_an_existing_file(config_file, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    error_line(cli("run", config_file(), "--out", blocker), str(blocker))
    assert blocker.read_text() == "x"


def test_disk_full_injected_at_the_atomic_write(finished, tmp_path, monkeypatch):
    import rospr.artifacts

    run_dir, before = copy_run(finished, tmp_path)

    real_fsync = os.fsync

    def full(fd):  # the disk fills up under the run's own writes, not under anything else's
        if sys._getframe(1).f_code.co_name == "atomic_write_bytes":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(rospr.artifacts.os, "fsync", full)
    res = cli("run", finished[1], "--out", run_dir, "--set", "tasks.0.limit=3")
    line = error_line(res, "no space left", str(run_dir))
    assert line.split(":")[1].strip().startswith(str(run_dir))  # error: <the file being written>: ...
    assert snapshot(run_dir) == before
    assert not [p for p in run_dir.rglob("*.tmp")]  # no half-written temporary file left


def _mount(where: Path, *options: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path):
    mounts: list[Path] = []

    def make(name: str, *options: str) -> Path:
        where = tmp_path / name
        _mount(where, *options)
        mounts.append(where)
        return where

    yield make
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", str(m)], check=False)


def test_disk_full_on_a_real_small_filesystem(finished, tmpfs):
    disk = tmpfs("small", "size=4m")
    run_dir = disk / "run"
    shutil.copytree(finished[0], run_dir)
    before = snapshot(run_dir)
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # take every free block
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    res = cli("run", finished[1], "--out", run_dir, "--set", "tasks.0.limit=3")
    error_line(res, str(run_dir), "no space left")
    assert snapshot(run_dir) == before


def test_read_only_output_folder(finished, tmpfs, tmp_path):
    ro = tmpfs("ro", "size=4m", "ro")
    res = cli("run", finished[1], "--out", ro / "run")
    error_line(res, str(ro / "run"), "read-only")


# -- malformed files the CLI reads ----------------------------------------------------------------


def test_malformed_yaml_config(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: {name_or_path: x\ntasks: [")
    error_line(cli("run", cfg, "--out", tmp_path / "r"), str(cfg), "not valid YAML")


def test_config_that_is_not_a_mapping(tmp_path):
    cfg = tmp_path / "list.yaml"
    cfg.write_text("- a\n- b\n")
    error_line(cli("run", cfg, "--out", tmp_path / "r"), str(cfg), "mapping")


def test_missing_config_file(tmp_path):
    error_line(cli("run", tmp_path / "nope.yaml"), str(tmp_path / "nope.yaml"), "no such config file")


def test_malformed_set_value(config_file, tmp_path):
    cfg = config_file()
    error_line(cli("run", cfg, "--set", "scoring.batch_size=[1"), "--set scoring.batch_size", "not valid YAML")
    error_line(cli("run", cfg, "--set", "scoring.batch_size"), "--set", "key.path=value")


def test_compare_malformed_results_json(finished, tmp_path):
    run_dir, _ = copy_run(finished, tmp_path)
    (run_dir / "results.json").write_text('{"schema_version": "1.2", "units": [')
    error_line(cli("compare", run_dir, "--baseline", "t0_3b"), str(run_dir / "results.json"), "not valid JSON")


def test_compare_results_json_not_an_object(finished, tmp_path):
    run_dir, _ = copy_run(finished, tmp_path)
    (run_dir / "results.json").write_text("[1, 2]")
    error_line(cli("compare", run_dir, "--baseline", "t0_3b"), str(run_dir / "results.json"))


def test_compare_malformed_records_file(finished, tmp_path):
    run_dir, _ = copy_run(finished, tmp_path)
    other, _ = copy_run(finished, tmp_path / "old")
    records = sorted((run_dir / "records").glob("*.jsonl"))[0]
    records.write_text("{not json\n")
    res = cli("compare", run_dir, "--against", other)
    error_line(res, records.name)


def test_compare_missing_run_directory(tmp_path):
    error_line(cli("compare", tmp_path / "absent", "--baseline", "t0_3b"), str(tmp_path / "absent"))


def test_resume_with_malformed_results_json(finished, tmp_path):
    run_dir, _ = copy_run(finished, tmp_path)
    (run_dir / "results.json").write_text("{")
    error_line(cli("run", finished[1], "--resume", run_dir), str(run_dir / "results.json"))


def test_malformed_prompt_bank_manifest(tiny_model_dir, tmp_path):
    bank = tmp_path / "bank"
    bank.mkdir()
    (bank / "manifest.json").write_text('{"format": "rospr-prompt-bank", ')
    res = cli("library", "build", "--prompts", bank, "--retriever", tiny_model_dir, "--out", tmp_path / "lib")
    error_line(res, str(bank / "manifest.json"))


def test_library_build_with_missing_retriever_path(tmp_path):
    bank = tmp_path / "bank"
    bank.mkdir()
    res = cli("library", "build", "--prompts", bank, "--retriever", "./no-such-retriever", "--out", tmp_path / "lib")
    error_line(res, "no-such-retriever", "no such directory")


def test_tune_with_missing_model_path(tmp_path):
    res = cli("tune", "--model", "./no-such-model", "--sources", TASK, "--out", tmp_path / "bank")
    error_line(res, "no-such-model", "no such directory")


# -- templates and tasks ---------------------------------------------------------------------------


def test_unknown_task_in_config_is_named(config_file, tmp_path):
    cfg = config_file()
    res = cli("run", cfg, "--out", tmp_path / "r", "--set", "tasks.0.name=builtin/no_such_task")
    error_line(res, "builtin/no_such_task")


def test_unexpected_error_is_one_line_too(config_file, tmp_path, monkeypatch):
    import rospr_harness.runner

    def boom(*args, **kwargs):
        raise KeyError("something internal")

    monkeypatch.setattr(rospr_harness.runner, "run", boom)
    res = cli("run", config_file(), "--out", tmp_path / "r")
    error_line(res, "KeyError", "ROSPR_TRACEBACK=1", bug=True)


def test_console_entry_point_prints_one_line_without_traceback(config_file, tmp_path):
    """The installed command (not the test runner's in-process call) behaves the same."""
    repo = REPO
    proc = subprocess.run([sys.executable, "-m", "rospr_harness.cli", "run", str(config_file(model="./nowhere")),
                           "--out", str(tmp_path / "r")], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "model.name_or_path='./nowhere'" in lines[0], proc.stderr


def test_unreachable_ray_address_is_refused_at_once(config_file, tmp_path):
    pytest.importorskip("ray")
    from rospr_harness.serve import free_port

    port = free_port()  # nothing listens there
    cfg = config_file(ray={"enabled": True, "address": f"127.0.0.1:{port}"})
    res = cli("run", cfg, "--out", tmp_path / "r")
    error_line(res, f"ray.address='127.0.0.1:{port}'", "no Ray cluster answers")


def test_a_device_this_machine_lacks_is_named(config_file, tmp_path):
    import torch

    if torch.cuda.is_available():
        device = f"cuda:{torch.cuda.device_count()}"  # one past the last
    else:
        device = "cuda"
    res = cli("run", config_file(), "--out", tmp_path / "r", "--set", f"model.device={device}")
    error_line(res, f"model.device={device!r}")
    error_line(cli("run", config_file(), "--out", tmp_path / "r",
                   "--set", "model.device=gpu0"), "model.device='gpu0'", "not a device name")


# -- errors say what the user did, in the words the user used ----------------------------------------------

BAD_CONFIGS = {
    # text of the file -> what the one error line must say
    "date": ("tasks: [builtin/animals]\nseed: 2020-01-01\n", [":2:", "a date", "quote it"]),
    "set": ("tasks: [builtin/animals]\nseed: !!set {a: null}\n", [":2:", "a set", "give a list"]),
    "binary": ("tasks: [builtin/animals]\nseed: !!binary aGVsbG8=\n", [":2:", "binary", "give a string"]),
    "duplicate key": ("tasks: [builtin/animals]\nseed: 1\nseed: 2\n", [":3:", "'seed' is given twice", "line 2"]),
    "duplicate nested key": ("tasks: [builtin/animals]\nscoring:\n  batch_size: 2\n  batch_size: 4\n",
                             [":4:", "'batch_size' is given twice"]),
    "boolean limit": ("tasks: [{name: builtin/animals, limit: true}]\n", ["tasks.0.limit", "boolean, not a number"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_config_that_is_not_plain_yaml_data_is_one_line_with_file_and_line(tmp_path, case):
    text, needles = BAD_CONFIGS[case]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    res = cli("run", cfg, "--out", tmp_path / "r")
    line = error_line(res, str(cfg))
    for n in needles:
        assert n in res.output, (n, res.output)
    assert "unexpected" not in line


def test_a_config_that_is_not_utf8_names_file_line_and_fix(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"tasks: [builtin/animals]\n# caf\xe9\n")
    error_line(cli("run", cfg, "--out", tmp_path / "r"), f"{cfg}:2", "not UTF-8", "save the config as UTF-8")


def test_an_unknown_key_given_by_set_blames_the_set_not_the_file(config_file, tmp_path):
    cfg = config_file()
    res = cli("run", cfg, "--out", tmp_path / "r", "--set", "foo=3")
    line = error_line(res, "--set foo=3")
    assert not line.startswith(f"error: {cfg}")
    assert "foo: unknown key" in res.output
    # a problem of the file itself is still the file's
    cfg.write_text(cfg.read_text() + "fooo: 1\n")
    error_line(cli("run", cfg, "--out", tmp_path / "r"), f"{cfg}: invalid config")


@pytest.mark.parametrize("args, needle", [
    (["--alpha", "2"], "--alpha 2.0"), (["--alpha", "0"], "--alpha 0.0"), (["--n-boot", "0"], "--n-boot 0"),
    (["--n-boot", "-5"], "--n-boot -5"), (["--threshold", "nan"], "--threshold nan"),
    (["--threshold", "-1"], "--threshold -1.0"), (["--seed", "-1"], "--seed -1"),
])
def test_compare_refuses_flags_that_would_crash_or_judge_nothing(finished, args, needle):
    line = error_line(cli("compare", finished[0], "--against", finished[0], *args), needle)
    assert "unexpected" not in line


def test_tune_set_with_an_unknown_key_is_a_config_line_not_a_pydantic_dump(tmp_path):
    res = cli("tune", "--model", "./no-such-model", "--out", tmp_path / "bank", "--set", "stepz=3")
    error_line(res, "--set stepz=3")
    assert "stepz: unknown key; did you mean 'steps'?" in res.output
    assert "errors.pydantic.dev" not in res.output and "extra_forbidden" not in res.output


# Refusals that were once printed as "an unexpected error ... report it" (not the examples):
# each is the project's own message, so it must be shown as such.
REFUSALS = {
    "verify a folder that is nothing of ours": lambda tmp: ["verify", tmp],
    "library build with an unknown index": lambda tmp: ["library", "build", "--index", "foo", "--prompts", tmp],
    "serve a folder that is no repository": lambda tmp: ["serve", "--repo", tmp / "nothing"],
    "compare with both --baseline and --against": lambda tmp: ["compare", tmp, "--baseline", "t0_3b",
                                                               "--against", tmp],
    "--resume and --out disagree": lambda tmp: ["run", tmp / "c.yaml", "--resume", tmp / "a", "--out", tmp / "b"],
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_our_refusals_are_never_called_unexpected(tmp_path, case):
    (tmp_path / "c.yaml").write_text("tasks: [builtin/animals]\n")
    line = error_line(cli(*REFUSALS[case](tmp_path)))
    assert "unexpected" not in line and "report it" not in line


def test_a_refusal_is_known_by_its_type_alone():
    from rospr_harness.cli import describe_error, is_refusal
    from rospr_harness.config import ConfigError
    from rospr_harness.tasks.base import TaskError
    from rospr.errors import RosprError, SettingError

    try:
        import numpy as np

        np.random.default_rng(-1)
    except ValueError as exc:  # a library's error: a bug of ours if it reaches the user
        assert not is_refusal(exc)
        assert "an unexpected error" in describe_error(exc)
    assert is_refusal(SettingError("--flag x: made by the CLI, never raised"))
    assert describe_error(SettingError("--flag x: give y")) == "--flag x: give y"
    for cls in (ConfigError, TaskError, SettingError):  # refusals, still caught as ValueError by callers
        assert issubclass(cls, RosprError) and issubclass(cls, ValueError)
    # a plain ValueError is no refusal, whoever raised it: our refusals have their own types
    assert not is_refusal(ValueError("--flag x: a plain ValueError"))
    assert "an unexpected error" in describe_error(ValueError("n_inter must be >= 1"))


def test_rospr_traceback_shows_the_traceback_for_every_refusal_of_run(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tasks: [builtin/animals]\nseed: 1\nseed: 2\n")
    monkeypatch.setenv("ROSPR_TRACEBACK", "1")
    res = cli("run", cfg, "--out", tmp_path / "r")
    assert res.exit_code != 0 and res.exception is not None
    assert "given twice" in str(res.exception)
    res = cli("run", cfg, "--resume", tmp_path / "a", "--out", tmp_path / "b")  # a refusal made by the CLI itself
    assert res.exception is not None and "give one run directory" in str(res.exception)


def test_a_refusal_raised_in_a_ray_actor_is_its_message_not_a_remote_traceback():
    pytest.importorskip("ray")
    from ray.exceptions import RayTaskError

    from rospr_harness.cli import describe_error
    from rospr_harness.tasks.base import TaskError
    from rospr.errors import SettingError, StateError

    ours = 'Traceback (most recent call last):\n  File "/src/harness/method/tune_pool.py", line 3, in f\n'
    theirs = 'Traceback (most recent call last):\n  File "/site-packages/numpy/core.py", line 3, in f\n'
    for exc in (RayTaskError("f", ours, TaskError("rospr.sources: x; fix")),
                RayTaskError("f", theirs, SettingError("rospr.tune.lr=-1: give a positive rate"))):
        for raised in (exc, exc.as_instanceof_cause()):
            assert describe_error(raised) == str(exc.cause)
    for cause in (ValueError("boom"), KeyError("k")):  # not ours by type, wherever the remote traceback ends
        for where in (ours, theirs):
            assert "an unexpected error" in describe_error(RayTaskError("f", where, cause).as_instanceof_cause())
    tuning = 'Traceback (most recent call last):\n  File "/src/rospr/tuning.py", line 3, in f\n'
    diverged = StateError("prompt tuning diverged at step 3 (loss nan); lower tune.lr")
    assert describe_error(RayTaskError("f", tuning, diverged).as_instanceof_cause()) == str(diverged)


@pytest.mark.parametrize("argv, says", [
    (["run", "configs/demo.yaml", "--limit", "-3"], "Invalid value for '--limit'"),
    (["perf-inputs", "/tmp", "/tmp"], "unexpected extra argument"),
])
def test_a_command_line_usage_error_is_clicks_usage_message_not_a_bug(argv, says):
    """A bad option value or a stray argument is a usage error: click's message and exit code 2, never
    "an unexpected error" (typer vendors its own click, whose exceptions are not click.ClickException)."""
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2, res.output
    assert says in " ".join(res.output.split()) and "unexpected error" not in res.output, res.output


# -- class 7 (issue 32): a message blames what went wrong, not a flag the user did not give ---------------

@pytest.mark.parametrize("kind, variable", [("onnx", "ROSPR_ONNX_CACHE"), ("units", "ROSPR_UNIT_CACHE"),
                                            ("data", "ROSPR_DATA_CACHE")])
@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC])
def test_class7_an_unusable_cache_blames_the_cache_not_out(kind, variable, code, tmp_path, monkeypatch):
    from rospr.cachedirs import cache_path
    from rospr_harness.cli.errors import describe_error

    monkeypatch.setenv("ROSPR_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(variable, raising=False)
    where = cache_path(kind) / "entry" / "model.onnx"
    said = describe_error(OSError(code, os.strerror(code), str(where)))
    assert said.startswith(f"{where}: ") and f"the {kind} cache {cache_path(kind)}" in said, said
    assert f"${variable}" in said and "not --out" in said
    said = describe_error(OSError(code, os.strerror(code), str(tmp_path / "home" / "other" / "f")))
    assert "rospr's cache" in said and "$ROSPR_HOME" in said
    said = describe_error(OSError(code, os.strerror(code), str(tmp_path / "run" / "results.json")))
    assert "(--out)" in said and "ROSPR" not in said
