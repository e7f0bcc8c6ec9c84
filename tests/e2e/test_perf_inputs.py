"""`rospr perf-inputs` (harness/perf_inputs.py): perf_analyzer's input-data file of a real rendered
batch, replayed as perf_analyzer replays it (docs/input_data.md: with ``-b B``, steps 0 .. B-1 of
``data`` make one request, each input's ``content`` reshaped to its ``shape``, ``b64`` being
little-endian bytes) through tritonclient against a real `rospr serve` server; the scores equal the
in-process onnxruntime scorer's on the task's own examples, tokenised and collated by the runner's code."""

from __future__ import annotations

import base64
import json
import shlex

import numpy as np
import pytest

from helpers import cli, error_line, served_repo

INPUTS = ("input_ids", "attention_mask", "prompt_embeds", "prompt_mask", "choice_ids", "choice_mask")


@pytest.fixture(scope="module")
def repo(tiny_model_dir, tmp_path_factory):
    return served_repo(tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def server(repo):
    from rospr_harness.serve import TritonServer

    with TritonServer(repo) as s:
        yield s


def _decode(value: dict, dtype) -> np.ndarray:
    """One input of one step, read the way perf_analyzer's docs describe it."""
    content = value["content"]
    if isinstance(content, dict):
        flat = np.frombuffer(base64.b64decode(content["b64"]), dtype=np.dtype(dtype).newbyteorder("<"))
    else:
        flat = np.asarray(content, dtype=dtype)
    return flat.reshape(value["shape"])


def _requests(data: dict, batch: int, names=INPUTS) -> list[dict[str, np.ndarray]]:
    steps = data["data"]
    out = []
    for start in range(0, len(steps), batch):
        chunk = [steps[(start + i) % len(steps)] for i in range(batch)]
        out.append({name: np.stack([_decode(s[name], np.float32 if name == "prompt_embeds" else np.int64)
                                    for s in chunk]) for name in names})
    return out


def _infer(url: str, feeds: dict[str, np.ndarray], model: str = "t0_scorer", output: str = "scores") -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        inputs = []
        for name, value in feeds.items():
            i = grpcclient.InferInput(name, list(value.shape), "FP32" if name == "prompt_embeds" else "INT64")
            i.set_data_from_numpy(value)
            inputs.append(i)
        return client.infer(model, inputs).as_numpy(output)
    finally:
        client.close()


def _reference(tiny_model_dir, repo, feeds: dict[str, np.ndarray], prompt: str,
               soft: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The task's examples whose tokens the file carries, collated by rospr.scoring with the file's
    soft prompt and scored by the in-process onnxruntime scorer."""
    from rospr.scoring import Convention, collate, encode_examples
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer, make_session
    from rospr.tokenizer import load_tokenizer
    from rospr_harness.tasks import DataSettings, get_task

    examples = get_task("builtin/sentiment", DataSettings()).load(prompt).examples
    encoded = encode_examples(load_tokenizer(tiny_model_dir), examples, Convention())
    by_ids = {tuple(e.input_ids): e for e in encoded}
    rows = []
    for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"]):
        row = by_ids[tuple(ids[mask == 1].tolist())]  # each row is a real example of the task, tokenised
        rows.append(row)
    d_model = feeds["prompt_embeds"].shape[2]
    batch = collate(rows, [soft] * len(rows), d_model)
    assert np.array_equal(batch.choice_ids, feeds["choice_ids"]) and np.array_equal(batch.choice_mask, feeds["choice_mask"])
    return OnnxScorer(make_session(repo / "onnx" / "t0_scorer.onnx")).score(batch), batch.n_choices


def _bank(root, identity: dict, d_model: int) -> np.ndarray:
    """A prompt bank for ``identity`` holding one prompt ``src/t`` [3, d_model]; its values."""
    from rospr.softprompt import PromptBank, SoftPrompt

    values = np.random.default_rng(7).normal(size=(3, d_model)).astype(np.float32)
    PromptBank.open(root, identity).add(SoftPrompt("src/t", "src", "t", ("yes", "no"), values, 1, 0.5, 0, "k"))
    return values


@pytest.mark.slow
@pytest.mark.parametrize("soft_prompt", ["vocabulary", "bank", "none"])
def test_perf_inputs_replayed_against_rospr_serve(server, repo, tiny_model_dir, tmp_path, soft_prompt):
    out = tmp_path / "t0_scorer.json"
    args = ["perf-inputs", "--repo", repo, "--out-dir", tmp_path, "-b", 4, "--url", server.grpc_url,
            "--metrics-url", server.metrics_url, "--model", tiny_model_dir]
    manifest = json.loads((repo / "onnx" / "manifest.json").read_text())
    if soft_prompt == "vocabulary":
        args += ["--prompt-length", 10]
    elif soft_prompt == "bank":
        banked = _bank(tmp_path / "bank", manifest["model"], manifest["graphs"]["t0_scorer"]["d_model"])
        args += ["--bank", tmp_path / "bank", "--bank-prompt", "src/t"]
    else:
        args += ["--no-prompt"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    command = shlex.split(next(ln for ln in result.output.splitlines() if ln.startswith("perf_analyzer -m t0_scorer ")))
    data = json.loads(out.read_text())
    assert set(data) == {"data"} and len(data["data"]) == 4  # one step per row
    for step in data["data"]:
        assert set(step) == set(INPUTS) and all(set(v) == {"content", "shape"} for v in step.values())

    # the command: the model, the file, -b, the server's metrics, and one --shape per input, the file's
    flags = dict(zip(command[1::2], command[2::2]))
    assert command[0] == "perf_analyzer" and flags["-m"] == "t0_scorer" and flags["-u"] == server.grpc_url
    assert flags["--input-data"] == str(out) and flags["-b"] == "4" and flags["-i"] == "grpc"
    assert "--collect-metrics" in command and command[command.index("--metrics-url") + 1] == server.metrics_url
    shapes = dict(a.split(":") for a in command[1:] if ":" in a and a.split(":")[0] in INPUTS)
    assert command.count("--shape") == 6
    assert shapes == {n: ",".join(map(str, data["data"][0][n]["shape"])) for n in INPUTS}

    (feeds,) = _requests(data, 4)
    embeddings = None
    if soft_prompt == "vocabulary":
        from safetensors.numpy import load_file

        embeddings = load_file(str(tiny_model_dir / "model.safetensors"))["shared.weight"]
        soft = feeds["prompt_embeds"][0]
        assert soft.shape == (10, embeddings.shape[1]) and feeds["prompt_mask"].all()
        assert all((feeds["prompt_embeds"][i] == soft).all() for i in range(4))  # one prompt for the batch
        for vector in soft:  # each a row of the checkpoint's vocabulary embeddings
            assert np.any(np.all(embeddings == vector, axis=1))
    elif soft_prompt == "bank":
        soft = banked
        assert all((feeds["prompt_embeds"][i] == banked).all() for i in range(4)) and feeds["prompt_mask"].all()
    else:
        soft = None
        assert feeds["prompt_embeds"].shape[1] == 1 and not feeds["prompt_mask"].any()
    assert feeds["input_ids"].max() < 4096 and feeds["input_ids"].min() >= 0  # in the tiny vocabulary

    got = _infer(server.grpc_url, feeds)
    want, n_choices = _reference(tiny_model_dir, repo, feeds, command_prompt(result.output), soft)
    assert got.shape == want.shape
    for row, n in enumerate(n_choices):
        assert np.max(np.abs(got[row, :n] - want[row, :n])) <= 1e-5


@pytest.mark.slow
def test_retriever_inputs_replayed_against_rospr_serve(server, repo, tiny_model_dir, tmp_path):
    """The retriever's file: the task's rendered inputs (RoSPr's queries), embedded by the server as the
    in-process onnxruntime embedder embeds those texts."""
    from rospr.retriever import embed_texts
    from rospr_harness.backends.onnxruntime_backend import OnnxEmbedder, make_session
    from rospr.tokenizer import load_tokenizer
    from rospr_harness.tasks import DataSettings, get_task

    result = cli("perf-inputs", "--repo", repo, "--out-dir", tmp_path, "-b", 4, "--url", server.grpc_url,
                 "--prompt-length", 4)
    assert result.exit_code == 0, result.output
    command = shlex.split(next(ln for ln in result.output.splitlines() if ln.startswith("perf_analyzer -m retriever ")))
    data = json.loads((tmp_path / "retriever.json").read_text())
    assert len(data["data"]) == 4 and all(set(s) == {"input_ids", "attention_mask"} for s in data["data"])
    assert command[command.index("--input-data") + 1] == str(tmp_path / "retriever.json")
    assert [a for a in command if a.startswith(("input_ids:", "attention_mask:"))] == [
        f"{n}:{','.join(map(str, data['data'][0][n]['shape']))}" for n in ("input_ids", "attention_mask")]
    (feeds,) = _requests(data, 4, ("input_ids", "attention_mask"))
    got = _infer(server.grpc_url, feeds, "retriever", "sentence_embedding")

    tokenizer = load_tokenizer(tiny_model_dir)
    texts = [e.input_text for e in get_task("builtin/sentiment", DataSettings()).load(command_prompt(result.output)).examples]
    by_ids = {tuple(ids): text for ids, text in zip(tokenizer(texts, add_special_tokens=False)["input_ids"], texts)}
    rows = [by_ids[tuple(ids[mask == 1].tolist())] for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"])]
    want = embed_texts(OnnxEmbedder(make_session(repo / "onnx" / "retriever.onnx")), tokenizer, rows, batch_size=1)
    assert np.max(np.abs(got - want)) <= 1e-5


def command_prompt(output: str) -> str:
    """The prompt the command reports it rendered ("... rows of <task> / <prompt>, soft prompt ...")."""
    text = " ".join(output.split())
    return text.split("rows of builtin/sentiment / ", 1)[1].split(",", 1)[0]


def test_perf_inputs_refuses_what_it_cannot_write(tmp_path, tiny_model_dir, tmp_path_factory):
    error_line(cli("perf-inputs", "--repo", tmp_path), "not a `rospr export` build folder")
    error_line(cli("perf-inputs", "--repo", tmp_path, "--protocol", "udp"), "--protocol 'udp'")


@pytest.mark.slow
def test_perf_inputs_refuses_a_batch_the_server_would_refuse(repo, tiny_model_dir, tmp_path):
    error_line(cli("perf-inputs", "--repo", repo, "-b", 17, "--model", tiny_model_dir), "--batch-size 17", "1 to 16")
    error_line(cli("perf-inputs", "--repo", repo, "--bank", tmp_path, "--model", tiny_model_dir), "--bank-prompt")
    manifest = json.loads((repo / "onnx" / "manifest.json").read_text())
    other = {**manifest["model"], "weights": "0" * 16}  # the same architecture, other weights
    _bank(tmp_path / "other", other, manifest["graphs"]["t0_scorer"]["d_model"])
    error_line(cli("perf-inputs", "--repo", repo, "--bank", tmp_path / "other", "--bank-prompt", "src/t"),
               "trained on the weights " + repr("0" * 16))


def test_model_analyzer_config_names_what_export_and_perf_inputs_write():
    """docker/model_analyzer.yaml: the served models, the repository layout `rospr export` writes, the
    file `rospr perf-inputs` writes by default, batch sizes the served config allows, loopback only."""
    from pathlib import Path

    import yaml

    from rospr_harness.perf_inputs import default_path, served_max_batch

    root = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((root / "docker" / "model_analyzer.yaml").read_text())
    assert cfg["model_repository"] == "model_repo_build/triton"  # `rospr export --out model_repo_build`
    for model, spec in cfg["profile_models"].items():
        assert (root / "model_repo" / model / "config.pbtxt").is_file()
        assert max(spec["parameters"]["batch_sizes"]) <= served_max_batch(root / "model_repo" / model / "config.pbtxt")
    for model in ("t0_scorer", "retriever"):  # the CLI's default --repo is model_repo_build
        flags = cfg["profile_models"][model]["perf_analyzer_flags"]
        assert flags["input-data"] == str(default_path(Path("model_repo_build"), model))
    for key in ("triton_grpc_endpoint", "triton_http_endpoint", "triton_metrics_url"):
        assert cfg[key].removeprefix("http://").startswith("127.0.0.1:"), key
