"""The Triton backend scores only with a served model exported from the configured checkpoint.

Model B is the tiny model with one weight tensor perturbed (``test_identity.perturbed_copy``): the same
architecture and config, other weights. A repository built from model A's export, served, is refused
for a run configured with model B (scorer and retriever), one line naming both digests and the fix;
a repository whose ``config.pbtxt`` records no source is refused too. The rules themselves are checked
without a server on a stand-in client.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rospr_harness.backends.triton_backend import ServedModelMismatch, check_served_source
from rospr.identity import config_digest, weights_digest

from unit.rospr.test_identity import perturbed_copy  # noqa: E402


@pytest.fixture(scope="module")
def model_b(tiny_model_dir, tmp_path_factory) -> Path:
    return perturbed_copy(tiny_model_dir, tmp_path_factory.mktemp("triton-model-b") / "tiny-b")


def fake_client(source: dict | None, raw: str | None = None):
    params = {} if source is None and raw is None else {"rospr_source": raw if raw is not None else json.dumps(source)}
    return SimpleNamespace(parameters=params, _where=lambda: "model 't0_scorer' at grpc://127.0.0.1:1")


def source_of(path) -> dict:
    return {"config": config_digest(path), "weights": weights_digest(path), "source": str(path), "revision": None}


def test_the_served_source_must_be_the_configured_checkpoint(tiny_model_dir, model_b):
    a = source_of(tiny_model_dir)
    assert check_served_source(fake_client(a), tiny_model_dir, None, "model.name_or_path") == a
    with pytest.raises(ServedModelMismatch) as exc:
        check_served_source(fake_client(a), model_b, None, "model.name_or_path")
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"weights {a['weights']}" in msg and f"weights {weights_digest(model_b)}" in msg
    assert "rospr export --model" in msg and "rospr serve --repo" in msg and "model.name_or_path" in msg
    # same weights, another config: refused too
    other = dict(a, config="0" * 16)
    with pytest.raises(ServedModelMismatch, match=f"config 0{{16}}.*has config {config_digest(tiny_model_dir)}"):
        check_served_source(fake_client(other), tiny_model_dir, None, "model.name_or_path")


@pytest.mark.parametrize("raw", [None, "", "not json", "[]", json.dumps({"config": "abc"}),
                                 json.dumps({"weights": "abc", "config": None})])
def test_a_served_model_that_records_no_source_is_refused(tiny_model_dir, raw):
    client = fake_client(None) if raw is None else fake_client(None, raw)
    if raw == "":
        client.parameters = {"rospr_source": ""}
    with pytest.raises(ServedModelMismatch, match="does not record the weights and config"):
        check_served_source(client, tiny_model_dir, None, "rospr.retriever")


def test_the_repository_records_the_export_source(tiny_model_dir, tmp_path_factory):
    from unit.harness.backends.test_triton_backend import build_repo

    repo = build_repo(tiny_model_dir, tmp_path_factory, "repo-source")
    want = source_of(tiny_model_dir)
    for flavour in ("triton", "twin"):
        for model in ("t0_scorer", "retriever"):
            text = (repo / flavour / model / "config.pbtxt").read_text()
            raw = text.split('key: "rospr_source" value: { string_value: "')[1].split('" }')[0]
            got = json.loads(raw.replace('\\"', '"').replace("\\\\", "\\"))
            assert {k: got[k] for k in ("config", "weights")} == {k: want[k] for k in ("config", "weights")}


# -- a real server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def served_a(tiny_model_dir, tmp_path_factory, stop_soon):
    pytest.importorskip("tritonclient.grpc")
    from rospr_harness.serve import ServerError, TritonServer
    from unit.harness.backends.test_triton_backend import build_repo

    repo = build_repo(tiny_model_dir, tmp_path_factory, "repo-a")
    try:
        server = TritonServer(repo).start()
    except ServerError as exc:
        pytest.skip(f"no local Triton server: {str(exc).splitlines()[0]}")
    try:
        yield repo, server
    finally:
        stop_soon(server)


def _config(model_dir, url: str, **extra):
    from rospr_harness.config import load_config

    return load_config(None, tree={"model": {"name_or_path": str(model_dir)}, "backend": "triton",
                                   "triton": {"url": url, "retries": 0}, "tasks": [{"name": "builtin/sentiment"}],
                                   **extra})


@pytest.mark.slow
def test_a_repository_of_model_a_is_refused_for_model_b(served_a, tiny_model_dir, model_b, tmp_path):
    from rospr_harness.backends import create_backend, create_embedder
    from rospr_harness.runner import run

    _, server = served_a
    ok = create_backend(_config(tiny_model_dir, server.grpc_url))  # model A: served, accepted
    ok.scorer.close()
    emb, _tok = create_embedder(_config(tiny_model_dir, server.grpc_url), str(tiny_model_dir))
    emb.close()

    a, b = weights_digest(tiny_model_dir), weights_digest(model_b)
    with pytest.raises(ServedModelMismatch) as exc:
        create_backend(_config(model_b, server.grpc_url))
    assert f"weights {a}" in str(exc.value) and f"weights {b}" in str(exc.value)
    assert "model.name_or_path" in str(exc.value)
    # the retriever: the served one is model A's, the run's (rospr.retriever) is model B
    with pytest.raises(ServedModelMismatch, match=f"weights {a}.*rospr.retriever=.*has weights {b}"):
        create_embedder(_config(tiny_model_dir, server.grpc_url, rospr={"retriever": str(model_b)}), str(model_b))
    # a whole run refuses before it scores anything
    with pytest.raises(ServedModelMismatch):
        run(_config(model_b, server.grpc_url), tmp_path / "run")
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.slow
def test_the_cli_run_says_it_in_one_line(served_a, model_b, tmp_path):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    _, server = served_a
    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({"model": {"name_or_path": str(model_b)}, "backend": "triton",
                               "triton": {"url": server.grpc_url, "retries": 0},
                               "tasks": [{"name": "builtin/sentiment", "limit": 4}]}))
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "was exported from weights" in result.output and weights_digest(model_b) in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_a_repository_without_its_source_is_refused(served_a, tiny_model_dir, tmp_path, stop_soon):
    import re

    from rospr_harness.backends import create_backend
    from rospr_harness.serve import TritonServer

    repo, _ = served_a
    old = tmp_path / "old"
    shutil.copytree(repo / "twin", old)
    for model in ("t0_scorer", "retriever"):
        path = old / model / "config.pbtxt"
        path.write_text(re.sub(r'^parameters \{ key: "rospr_source".*\n', "", path.read_text(), flags=re.M))
    s = TritonServer(old).start()
    try:
        with pytest.raises(ServedModelMismatch, match="no valid rospr_source parameter"):
            create_backend(_config(tiny_model_dir, s.grpc_url))
    finally:
        stop_soon(s)


@pytest.mark.slow
def test_an_identity_that_names_other_weights_than_the_source_is_refused(served_a, tiny_model_dir, tmp_path, stop_soon):
    import re

    from rospr_harness.backends import create_backend
    from rospr_harness.serve import TritonServer

    repo, _ = served_a
    edited = tmp_path / "edited"
    shutil.copytree(repo / "twin", edited)
    path = edited / "t0_scorer" / "config.pbtxt"
    a = weights_digest(tiny_model_dir)
    text, n = re.subn(r'(key: "rospr_identity".*?\\"weights\\": \\")' + a, r"\g<1>" + "f" * 16, path.read_text())
    assert n == 1
    path.write_text(text)
    s = TritonServer(edited).start()
    try:
        with pytest.raises(ServedModelMismatch, match=f"names weights f{{16}} in rospr_identity and {a}"):
            create_backend(_config(tiny_model_dir, s.grpc_url))
    finally:
        stop_soon(s)
