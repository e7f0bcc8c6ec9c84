"""`rospr data check-hub` against a loopback hub: recorded metadata responses in the hub's JSON
format, served on 127.0.0.1 (HF_ENDPOINT), so the test runs with no network.

The responses are shaped as the hub's API answers them (the keys huggingface_hub's HfApi reads in
dataset_info / list_repo_refs / list_repo_tree): ``/api/datasets/<repo>`` (id, sha, cardData with
the README's dataset_info and configs, siblings), ``/api/datasets/<repo>/refs`` (branches, converts,
tags), ``/api/datasets/<repo>/tree/<rev>/<path>`` (a list of {type, oid, path[, size]}), and 404s
with the hub's X-Error-Code header.
"""

from __future__ import annotations

import json
from pathlib import Path
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import pytest
from typer.testing import CliRunner

from rospr_harness.tasks.base import DataSettings, TaskError
from rospr_harness.tasks.hub_check import check_hub
from helpers import REPO

SHA = "b3d5f4a2c1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6"


def _class_label(names):
    return {"class_label": {"names": {str(i): n for i, n in enumerate(names)}}}


def _dataset(repo, card, siblings):
    return {"_id": "621ffdd236468d709f181f5f", "id": repo, "author": repo.split("/")[0], "sha": SHA,
            "lastModified": "2024-01-18T11:17:02.000Z", "private": False, "gated": False, "disabled": False,
            "downloads": 1000, "likes": 10, "tags": ["language:en"], "cardData": card,
            "siblings": [{"rfilename": f} for f in siblings], "createdAt": "2022-03-02T23:29:22.000Z"}


def _refs(converts):
    return {"branches": [{"name": "main", "ref": "refs/heads/main", "targetCommit": SHA}],
            "converts": [{"name": "parquet", "ref": "refs/convert/parquet", "targetCommit": "9" * 40}] if converts else [],
            "tags": []}


def _tree(folder, splits):
    return [{"type": "directory", "oid": f"{i:040x}", "path": f"{folder}/{s}"} for i, s in enumerate(splits)]


# CogComp/trec: the version 2.0.0 script's card (huggingface/datasets datasets/trec, dataset_info)
_EXPORT = json.loads((REPO / "tests" / "data" / "trec_export_classes.json").read_text(encoding="utf-8"))
TREC_EXPORT_COARSE, TREC_EXPORT_FINE = _EXPORT["coarse_label"], _EXPORT["fine_label"]

TREC_CARD = {
    "language": ["en"], "pretty_name": "Text Retrieval Conference Question Answering",
    "dataset_info": {
        "features": [{"name": "text", "dtype": "string"},
                     {"name": "coarse_label", "dtype": _class_label(TREC_EXPORT_COARSE)},
                     {"name": "fine_label", "dtype": _class_label(TREC_EXPORT_FINE)}],
        "splits": [{"name": "train", "num_bytes": 385090, "num_examples": 5452},
                   {"name": "test", "num_bytes": 27983, "num_examples": 500}],
        "download_size": 359212, "dataset_size": 413073,
    },
}
# aps/super_glue's card, its rte config only; 'hypothesis' renamed to 'sentence2' (the mismatch)
RTE_CARD = {
    "configs": [{"config_name": "rte", "data_files": [{"split": s, "path": f"rte/{s}-*"}
                                                      for s in ("train", "validation", "test")]}],
    "dataset_info": [{
        "config_name": "rte",
        "features": [{"name": "premise", "dtype": "string"}, {"name": "sentence2", "dtype": "string"},
                     {"name": "idx", "dtype": "int32"},
                     {"name": "label", "dtype": _class_label(["entailment", "not_entailment"])}],
        "splits": [{"name": s, "num_bytes": 1, "num_examples": 1} for s in ("train", "validation", "test")],
    }],
}
WIKI_BIO_CARD = {
    "dataset_info": {
        "features": [{"name": "input_text", "struct": [
            {"name": "table", "sequence": [{"name": "column_header", "dtype": "string"},
                                           {"name": "row_number", "dtype": "int16"},
                                           {"name": "content", "dtype": "string"}]},
            {"name": "context", "dtype": "string"}]},
            {"name": "target_text", "dtype": "string"}],
        "splits": [{"name": s, "num_bytes": 1, "num_examples": 1} for s in ("train", "test", "val")],
    },
}

ROUTES = {
    "/api/datasets/CogComp/trec": _dataset("CogComp/trec", TREC_CARD, [".gitattributes", "README.md", "trec.py"]),
    "/api/datasets/CogComp/trec/refs": _refs(True),
    "/api/datasets/CogComp/trec/tree/refs%2Fconvert%2Fparquet/default": _tree("default", ["test", "train"]),
    "/api/datasets/aps/super_glue": _dataset("aps/super_glue", RTE_CARD, ["README.md", "rte/train-00000-of-00001.parquet"]),
    "/api/datasets/EdinburghNLP/xsum": _dataset("EdinburghNLP/xsum", {}, ["README.md", "xsum.py"]),
    "/api/datasets/EdinburghNLP/xsum/refs": _refs(False),  # no export branch
    "/api/datasets/michaelauli/wiki_bio": _dataset("michaelauli/wiki_bio", WIKI_BIO_CARD, ["README.md", "wiki_bio.py"]),
    "/api/datasets/michaelauli/wiki_bio/refs": _refs(True),
    "/api/datasets/michaelauli/wiki_bio/tree/refs%2Fconvert%2Fparquet/default": _tree("default", ["test", "train", "val"]),
}


class _Hub(BaseHTTPRequestHandler):
    routes: dict = ROUTES
    seen: list = []

    def do_GET(self):  # noqa: N802 - http.server's name
        path = urlsplit(self.path).path
        self.seen.append(unquote(path))
        body = self.routes.get(path)
        if body is None:
            code = "EntryNotFound" if "/tree/" in path else "RepoNotFound"  # the hub's X-Error-Code values
            self._send(404, {"error": f"{code}: {path}"}, {"X-Error-Code": code})
        else:
            self._send(200, body, {})

    def _send(self, status, body, headers):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def hub(monkeypatch):
    """A loopback hub; HF_ENDPOINT points at it, and the routes can be edited per test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hub.routes = dict(ROUTES)
    _Hub.seen = []
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield _Hub
    server.shutdown()
    server.server_close()


def _verdicts(names, templates_dir):
    return {v.folder: v for v in check_hub(names, DataSettings(templates_dir=templates_dir))}


def test_verdicts_per_entry(hub, templates_dir):
    got = _verdicts(["trec", "rte", "xsum", "wiki_bio"], templates_dir)
    assert got["trec"].ok, got["trec"].line()
    assert got["wiki_bio"].ok, got["wiki_bio"].line()  # the export's val/ folder is the validation split
    assert not got["xsum"].ok and "no refs/convert/parquet branch" in got["xsum"].problems[0]
    rte = got["super_glue/rte"]
    assert not rte.ok and len(rte.problems) == 1
    assert "column 'hypothesis'" in rte.problems[0] and "sentence2" in rte.problems[0]
    assert got["trec"].line().split("\t")[:3] == ["trec", "CogComp/trec:default@refs/convert/parquet", "ok"]
    # metadata only: no file of any repository was asked for
    # (huggingface_hub 2.x also asks /api/agent-harnesses once: metadata of its own)
    assert all(p.startswith("/api/") for p in hub.seen) and not any("/resolve/" in p for p in hub.seen), hub.seen


def test_a_reordered_export_and_a_missing_split_are_mismatches(hub, templates_dir):
    card = json.loads(json.dumps(TREC_CARD))
    card["dataset_info"]["features"][1]["dtype"] = _class_label(sorted(TREC_EXPORT_COARSE))
    hub.routes["/api/datasets/CogComp/trec"] = _dataset("CogComp/trec", card, ["README.md", "trec.py"])
    hub.routes["/api/datasets/CogComp/trec/tree/refs%2Fconvert%2Fparquet/default"] = _tree("default", ["train"])
    problems = _verdicts(["trec"], templates_dir)["trec"].problems
    assert any("column 'coarse_label'" in p and "hub_schema.relabel" in p for p in problems)
    assert any("split 'test' not on refs/convert/parquet" in p for p in problems)


def test_missing_repository_and_config_folder(hub, templates_dir):
    del hub.routes["/api/datasets/michaelauli/wiki_bio"]
    del hub.routes["/api/datasets/CogComp/trec/tree/refs%2Fconvert%2Fparquet/default"]
    got = _verdicts(["wiki_bio", "trec"], templates_dir)
    assert "repository michaelauli/wiki_bio not found" in got["wiki_bio"].problems[0]
    assert "no folder default/ on refs/convert/parquet" in got["trec"].problems[0]


def test_cli_lines_and_exit_code(hub, templates_dir, monkeypatch):
    from rospr_harness.cli import app

    monkeypatch.setattr(DataSettings, "from_env", classmethod(lambda cls, d=None: cls(templates_dir=templates_dir)))
    result = CliRunner().invoke(app, ["data", "check-hub", "trec", "wiki_bio"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split("\t")[2] for line in lines[1:]] == ["ok", "ok"]
    result = CliRunner().invoke(app, ["data", "check-hub", "trec", "xsum"])
    assert result.exit_code == 1
    assert [line.split("\t")[2] for line in result.stdout.strip().splitlines()[1:]] == ["ok", "MISMATCH"]


def test_offline_is_one_line_and_no_call(hub, templates_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskError, match=r"the hub is offline \(HF_HUB_OFFLINE=1\)"):
        check_hub(["trec"], DataSettings(templates_dir=templates_dir))
    assert hub.seen == []


def test_unreachable_endpoint_is_one_error(monkeypatch, templates_dir):
    with ThreadingHTTPServer(("127.0.0.1", 0), _Hub) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(TaskError, match=f"cannot reach the hub at http://127.0.0.1:{port}"):
        check_hub(["trec"], DataSettings(templates_dir=templates_dir))


# -- class 3 (issue 32): every network read has a total deadline and a byte limit, and names what timed out --

class _Trickle(_Hub):
    """Answers 200 with a huge Content-Length, then one byte every 50 ms (never finishing in time)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(10**9))
        self.end_headers()
        for _ in range(30):  # at most 1.5 s, three times the test's deadline (the server's close waits for it)
            try:
                self.wfile.write(b" ")
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.05)


class _Flood(_Hub):
    """Answers 200 announcing 3 GB and sends as fast as it can until the reader hangs up."""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(3 << 30))
        self.end_headers()
        block = b"[" * 65536
        for _ in range(3 << 14):
            try:
                self.wfile.write(block)
            except OSError:
                return


class _Garbage(_Hub):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")


def _serve(handler):
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def endpoint(monkeypatch):
    """Start a loopback endpoint of one behaviour (HF_ENDPOINT names it); closed after the test."""
    servers = []

    def start(handler) -> str:
        servers.append(server := _serve(handler))
        url = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("HF_ENDPOINT", url)
        return url

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_class3_check_hub_on_a_silent_endpoint_ends_at_its_deadline_naming_the_url(templates_dir, monkeypatch):
    import socket

    from rospr_harness.tasks.hub_check import HubMetadata

    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        with pytest.raises(TaskError, match=rf"{url}/api/datasets/CogComp/trec: timed out after 0.5 s"):
            check_hub(["trec"], DataSettings(templates_dir=templates_dir), HubMetadata(url, timeout_s=0.5))


def test_class3_check_hub_on_a_trickling_endpoint_ends_at_its_deadline(templates_dir, endpoint):
    from rospr_harness.tasks.hub_check import HubMetadata

    url = endpoint(_Trickle)
    with pytest.raises(TaskError, match=rf"{url}/api/datasets/CogComp/trec: timed out after 0.5 s"):
        check_hub(["trec"], DataSettings(templates_dir=templates_dir), HubMetadata(timeout_s=0.5))


def test_class3_check_hub_refuses_an_answer_over_its_byte_limit(templates_dir, endpoint):
    from rospr_harness.tasks.hub_check import HubMetadata

    url = endpoint(_Flood)
    with pytest.raises(TaskError, match=rf"{url}/api/datasets/CogComp/trec: more than 65536 bytes"):
        check_hub(["trec"], DataSettings(templates_dir=templates_dir), HubMetadata(timeout_s=30, max_bytes=65536))


def test_class3_check_hub_on_another_protocol_is_one_error(templates_dir, endpoint):
    url = endpoint(_Garbage)
    with pytest.raises(TaskError, match=rf"trec: {url} did not answer as HTTP"):
        check_hub(["trec"], DataSettings(templates_dir=templates_dir))


def test_class3_an_answer_of_another_shape_is_our_error_naming_the_url(hub, templates_dir):
    hub.routes["/api/datasets/CogComp/trec/refs"] = json.loads("[" * 30 + "]" * 30)
    with pytest.raises(TaskError, match=r"/api/datasets/CogComp/trec/refs: a JSON object is expected"):
        check_hub(["trec"], DataSettings(templates_dir=templates_dir))
