"""class 1: every artifact key holds every input that changes its bytes.

For each artifact key of the project (issue 32, class 1) a baseline key is computed from the tiny model
through the project's own functions; then each input is perturbed in turn and the key must change, and
each input that does not change the artifact's bytes must leave it equal. The keys:

- ``unit/torch``, ``unit/onnxruntime``: the unit cache key (``rospr_harness.runner.sink.UnitKeys`` ->
  ``rospr_harness.cache.unit_key``), from the backend that ``create_backend`` builds (torch: the model
  loaded; onnxruntime: everything but the export itself, whose folder is the real ``cache_key``'s and
  whose manifest is held fixed, so the key must show weights, tokenizer and dtype through the export key).
- ``bank``: a prompt's key in a bank: the bank's backbone (``rospr.softprompt.BACKBONE_KEYS``, checked by
  ``check_backbone`` on every open and hashed into ``PromptBank.content_hash``) and ``TuneJob.train_key``.
- ``library``: ``LibrarySpec.key`` (``rospr.library.build_key``) as ``library_spec`` computes it in a run.
- ``export``: ``rospr_export.identity.cache_key``.
- ``ort-optimized``: the name of onnxruntime's optimised graph (``optimized_name(optimized_fields(...))``).

Nothing is scored, trained, embedded or exported: only keys are computed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from unit.rospr.test_identity import perturbed_copy

DATA_HASH = "d" * 64


# -- the checkpoints: the tiny model and its perturbed copies ------------------------------------------

@pytest.fixture(scope="module")
def ckpts(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """``base`` the tiny model; ``weights`` one weights tensor changed; ``tokenizer`` the tokenizer changed
    (two pieces' scores swapped: other ids), weights the same; ``config`` a config field that changes the
    model; ``volatile`` only a volatile config field (where it was saved); ``moved`` the same files in
    another folder. Each copy but ``moved`` keeps the folder's name: identities show a local model by it."""
    root, same = tmp_path_factory.mktemp("keys-ckpts"), tiny_model_dir.name
    out = {"base": tiny_model_dir, "weights": perturbed_copy(tiny_model_dir, root / "w" / same)}

    tok = root / "t" / same
    shutil.copytree(tiny_model_dir, tok)
    data = json.loads((tok / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab[3][1], vocab[4][1] = vocab[4][1], vocab[3][1]
    (tok / "tokenizer.json").write_text(json.dumps(data))
    out["tokenizer"] = tok

    for name, edit in (("config", {"dropout_rate": 0.3}), ("volatile", {"transformers_version": "0.0.1"})):
        folder = root / name / same
        shutil.copytree(tiny_model_dir, folder)
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, **edit}))
        out[name] = folder
    out["moved"] = Path(shutil.copytree(tiny_model_dir, root / "moved" / "tiny-elsewhere"))
    return out


@pytest.fixture(scope="module")
def identities(ckpts):
    """The backbone identity (``load_backbone``'s) of each checkpoint, loaded once."""
    from rospr.backbone import load_backbone

    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = load_backbone(ckpts[name])[2].as_dict()
        return cache[name]

    return get


def _case(artifact: str, what: str, changes: bool, xfail: str | None = None):
    marks = [pytest.mark.xfail(strict=True, raises=AssertionError, reason=xfail)] if xfail else []
    return pytest.param(artifact, what, changes, marks=marks, id=f"{artifact}:{what}:{'changes' if changes else 'equal'}")


# -- unit cache key ----------------------------------------------------------------------------------

# (name, checkpoint, config overrides as --set strings); the baseline: the tiny model, float32, cpu
UNIT_INPUTS = {
    "weights": ("weights", []),
    "tokenizer": ("tokenizer", []),
    "config": ("config", []),
    "dtype float32->bfloat16": ("base", ["model.dtype=bfloat16"]),
    "device cpu->cuda": ("base", ["model.device=cuda"]),
    "scoring.max_input_tokens": ("base", ["scoring.max_input_tokens=64"]),
    "scoring.max_choice_tokens": ("base", ["scoring.max_choice_tokens=8"]),
    "scoring.input_eos": ("base", ["scoring.input_eos=true"]),
    "scoring.choice_eos": ("base", ["scoring.choice_eos=false"]),
    "scoring.length_normalize": ("base", ["scoring.length_normalize=true"]),
    "rospr.queries": ("base", ["rospr.queries=7"]),
    "rospr.top_n": ("base", ["rospr.top_n=3"]),
    "rospr.votes": ("base", ["rospr.votes=top1"]),
    "rospr.n_inter": ("base", ["rospr.n_inter=2"]),
    "rospr.var_candidates": ("base", ["rospr.var_candidates=4"]),
    "rospr.leave_one_out": ("base", ["rospr.leave_one_out=false"]),
    "seed": ("base", ["seed=5"]),
    "rospr.retriever weights": ("base", ["rospr.retriever=@weights"]),
    "rospr.retriever tokenizer": ("base", ["rospr.retriever=@tokenizer"]),
    # not inputs of the records' bytes
    "scoring.threads": ("base", ["scoring.threads=3"]),
    "scoring.batch_size": ("base", ["scoring.batch_size=3"]),
    "onnxruntime.threads": ("base", ["onnxruntime.threads=3"]),
    "cache.dir (output path)": ("base", ["cache.dir=/tmp/elsewhere-units"]),
    "rospr.prompt_bank path": ("base", ["rospr.prompt_bank=/tmp/elsewhere-bank"]),
    "rospr.library path": ("base", ["rospr.library=/tmp/elsewhere-library"]),
    "onnxruntime.cache_dir (output path)": ("base", ["onnxruntime.cache_dir=/tmp/elsewhere-onnx"]),
}
# the library and bank the RoSPr part names (their own keys are proved below): their hashes as inputs
LIBRARY_INPUTS = {"library content": {"library": "l1"}, "bank content": {"bank": "b1"}}
UNIT_EQUAL = {"scoring.threads", "scoring.batch_size", "onnxruntime.threads", "cache.dir (output path)",
              "rospr.prompt_bank path", "rospr.library path", "onnxruntime.cache_dir (output path)"}


def _unit_cases(backend: str):
    for what in [*UNIT_INPUTS, *LIBRARY_INPUTS]:
        if backend == "onnxruntime" and what == "device cpu->cuda":
            what = "providers CPU->CUDA"
        yield _case(f"unit/{backend}", what, what not in UNIT_EQUAL)


@pytest.fixture(scope="module")
def unit_key_of(ckpts, run_config, tmp_path_factory):
    """``unit_key_of(backend, what)``: the unit cache key of a RoSPr unit under input ``what`` perturbed
    (None: the baseline), through ``create_backend`` and ``UnitKeys``."""
    from rospr_harness.backends import create_backend
    from rospr_harness.backends import onnxruntime_backend, torch_backend
    from rospr_harness.cache import unit_key
    from rospr_harness.runner.sink import UnitKeys
    from rospr.selection import Method

    manifest = {"model": {"name": "tiny"}, "dtype": "float32", "graphs": {"t0_scorer": {"file": "t0_scorer.onnx"}},
                "files": {"t0_scorer.onnx": "0" * 64}}  # held fixed: the key must not rely on it

    class NoGpuScorer(torch_backend.TorchScorer):  # a cuda scorer's identity, no GPU needed
        def __init__(self, model, device="cpu", threads=None):
            import torch

            self.device, self.threads = torch.device(device), threads

    def key(backend: str, what: str | None) -> str:
        name, sets = UNIT_INPUTS.get(what, ("base", []))
        sets = [s.replace("@weights", str(ckpts["weights"])).replace("@tokenizer", str(ckpts["tokenizer"]))
                for s in sets]
        if what == "providers CPU->CUDA":
            sets = ["model.device=cuda", "onnxruntime.providers=[CUDAExecutionProvider, CPUExecutionProvider]"]
        config = run_config(*sets, backend=backend, model={"name_or_path": str(ckpts[name])},
                            method=["rospr"])
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch_backend, "TorchScorer", NoGpuScorer)
            for module in (torch_backend, onnxruntime_backend):  # a GPU, for the key (nothing is scored)
                mp.setattr(module, "cuda_devices", lambda: (1, "a GPU, for the key"))
            mp.setattr(onnxruntime_backend, "ensure_export", lambda model, retriever, dtype, cache_dir, **kw:
                       onnxruntime_backend.export_folder(model, retriever, dtype, cache_dir, **kw))
            mp.setattr("rospr_export.manifest.find_manifest", lambda folder: manifest)
            be = create_backend(config)
        lib = {"library": "l0", "bank": "b0", **LIBRARY_INPUTS.get(what, {})}
        library = SimpleNamespace(manifest={"retriever": {"name": "r"}, "bank_hash": lib["bank"]},
                                  content_hash=lib["library"])
        keys = UnitKeys.of(config, be, SimpleNamespace(library=library, rc=config.rospr))
        spec = SimpleNamespace(task_name="builtin/animals", prompt="mentions_animal")
        return unit_key(keys.parts(spec, DATA_HASH, Method.parse("rospr")))

    return key


@pytest.mark.parametrize("artifact,what,changes", [*_unit_cases("torch"), *_unit_cases("onnxruntime")])
def test_unit_key(unit_key_of, artifact, what, changes):
    backend = artifact.split("/")[1]
    assert (unit_key_of(backend, what) != unit_key_of(backend, None)) is changes


# -- a bank prompt's key -------------------------------------------------------------------------------

BANK_INPUTS = {  # (checkpoint, rospr.tune overrides)
    "weights": ("weights", {}),
    "tokenizer": ("tokenizer", {}),
    "config": ("config", {}),
    "tune.dtype float32->bfloat16": ("base", {"dtype": "bfloat16"}),
    "tune.device cpu->cuda": ("base", {"device": "cuda"}),
    "tune.lr": ("base", {"lr": 0.1}),
    "tune.steps": ("base", {"steps": 7}),
    "tune.prompt_length": ("base", {"prompt_length": 5}),
    "tune.seed": ("base", {"seed": 3}),
    "tune.group_by_length": ("base", {"group_by_length": True}),
    "tune.batch_size": ("base", {"batch_size": 8}),
    "tune.optimizer": ("base", {"optimizer": "adamw"}),
    "tune.init": ("base", {"init": "uniform"}),
    "tune.max_input_tokens": ("base", {"max_input_tokens": 64}),
    "tune.max_target_tokens": ("base", {"max_target_tokens": 8}),
    "tune.source_rows (training rows)": ("base", {"source_rows": 20}),
    # not inputs of the prompt's bytes
    "tune.threads": ("base", {"threads": 3}),
    "tune.micro_batch_size": ("base", {"micro_batch_size": 16}),
    "tune.gradient_checkpointing": ("base", {"gradient_checkpointing": True}),
    "checkpoint folder (same files)": ("moved", {}),
}
# the device class changes a prompt's low bits (float32 reduction order) and is left out of train_key by
# design (tuned on a GPU, scored on CPUs): its entry records it instead (test_the_device_is_recorded_not_keyed)
BANK_EQUAL = {"tune.threads", "tune.micro_batch_size", "tune.gradient_checkpointing", "checkpoint folder (same files)",
              "tune.device cpu->cuda"}


@pytest.fixture(scope="module")
def bank_key_of(identities, run_config):
    """``bank_key_of(what)``: (the bank's backbone fields, the prompt's ``train_key``) of the first
    ``builtin/animals`` prompt under input ``what`` perturbed (None: the baseline)."""
    from rospr_harness.method.bank import tuning_jobs
    from rospr_harness.tasks.base import DataSettings
    from rospr.softprompt import BACKBONE_KEYS

    def key(what: str | None):
        name, tune = BANK_INPUTS.get(what, ("base", {}))
        config = run_config(rospr={"sources": "builtin/animals", "tune": {"source_rows": 40, **tune}})
        backbone = identities(name)
        job = tuning_jobs(config.rospr, DataSettings())[0]
        return ({k: backbone.get(k) for k in BACKBONE_KEYS}, job.train_key(config.rospr.tune.settings(), backbone))

    return key


@pytest.mark.parametrize("artifact,what,changes", [
    _case("bank", what, what not in BANK_EQUAL) for what in BANK_INPUTS])
def test_bank_key(bank_key_of, artifact, what, changes):
    assert (bank_key_of(what) != bank_key_of(None)) is changes


@pytest.mark.parametrize("other", ["weights", "tokenizer"])
def test_a_bank_is_refused_under_other_weights_or_tokenizer(identities, tmp_path, other):
    """The backbone half of a bank prompt's key is enforced: a bank tuned on the tiny model is refused
    for a checkpoint with other weights, or with the same weights and another tokenizer."""
    from rospr.artifacts import ArtifactError
    from rospr.softprompt import PromptBank, SoftPrompt

    bank = PromptBank.open(tmp_path, identities("base"))
    d = identities("base")["d_model"]
    bank.add(SoftPrompt("s/t", "s", "t", ("yes", "no"), np.zeros((2, d), np.float32), 1, 0.0, 0, "k"))
    assert PromptBank.load(tmp_path, identities("moved")).ids() == ["s/t"]  # same files elsewhere: the same bank
    with pytest.raises(ArtifactError, match="weights"):
        PromptBank.open(tmp_path, identities(other))


# -- the library's build key ---------------------------------------------------------------------------

LIBRARY_KEY_INPUTS = {  # (config overrides as --set strings, bank variant)
    "retriever weights": (["rospr.retriever=@weights"], "base"),
    "retriever tokenizer": (["rospr.retriever=@tokenizer"], "base"),
    "retriever config": (["rospr.retriever=@config"], "base"),
    "retriever weights file (same base)": (["rospr.retriever={base: @base, weights: @weights/model.safetensors}"],
                                           "base"),
    "retriever weights file's base tokenizer": (["rospr.retriever={base: @tokenizer, weights: @base/model.safetensors}"],
                                                "base"),
    "backbone weights (retriever null)": (["model.name_or_path=@weights"], "base"),
    "bank prompt bytes": ([], "values"),
    "bank backbone weights": ([], "weights"),
    "rospr.library_n": (["rospr.library_n=5"], "base"),
    "rospr.library_sample": (["rospr.library_sample=random"], "base"),
    "seed (random sample)": (["rospr.library_sample=random", "seed=9"], "base"),
    "rospr.normalize": (["rospr.normalize=false"], "base"),
    "rospr.pooling": (["rospr.pooling=padded"], "base"),
    "rospr.index.type": (["rospr.index.type=hnsw"], "base"),
    "scoring.max_input_tokens (max_tokens)": (["scoring.max_input_tokens=64"], "base"),
    "tune.source_rows (texts)": (["rospr.tune.source_rows=20"], "base"),
    "device cpu->cuda": (["model.device=cuda"], "base"),
    # not inputs of the library's bytes
    "rospr.library path (output path)": (["rospr.library=/tmp/elsewhere-library"], "base"),
    "scoring.threads": (["scoring.threads=3"], "base"),
    "rospr.queries (search only)": (["rospr.queries=3"], "base"),
}
# the baseline of the cases of a {base, weights} retriever: the tiny model's own weights file on its base
WEIGHTS_FILE = "weights file baseline"
LIBRARY_BASELINES = {WEIGHTS_FILE: (["rospr.retriever={base: @base, weights: @base/model.safetensors}"], "base")}
# the device class, like a bank's, is recorded in the library's manifest, not keyed (by design)
LIBRARY_EQUAL = {"rospr.library path (output path)", "scoring.threads", "rospr.queries (search only)",
                 "device cpu->cuda"}


@pytest.fixture(scope="module")
def library_key_of(ckpts, identities, run_config, tmp_path_factory):
    """``library_key_of(what)``: ``LibrarySpec.key`` as ``library_spec`` computes it in a run, for a bank of
    the ``builtin/animals`` prompts (values written here, nothing trained), under input ``what``."""
    from rospr_harness.method.bank import source_prompts, tuning_jobs
    from rospr_harness.method.library import library_spec
    from rospr_harness.tasks.base import DataSettings
    from rospr.softprompt import PromptBank, SoftPrompt

    banks: dict[str, PromptBank] = {}

    def bank_of(variant: str, ids: list[str]) -> PromptBank:
        if variant not in banks:
            backbone = identities("weights" if variant == "weights" else "base")
            bank = PromptBank.open(tmp_path_factory.mktemp(f"bank-{variant}"), backbone)
            for i, pid in enumerate(ids):
                values = np.full((2, backbone["d_model"]), 0.5 if variant == "values" and i == 0 else 0.0, np.float32)
                source, template = pid.rsplit("/", 1)
                bank.add(SoftPrompt(pid, source, template, ("yes", "no"), values, 1, 0.0, 0, "k"))
            banks[variant] = bank
        return banks[variant]

    def key(what: str | None) -> str:
        sets, variant = {**LIBRARY_KEY_INPUTS, **LIBRARY_BASELINES}.get(what, ([], "base"))
        for name in ("weights", "tokenizer", "config", "base"):
            sets = [s.replace(f"@{name}", str(ckpts[name])) for s in sets]
        tree = {"rospr": {"sources": "builtin/animals", "tune": {"source_rows": 40}}, "method": ["rospr"]}
        config = run_config(*sets, **tree)
        rc = config.rospr
        prompts = source_prompts(rc, DataSettings())
        backbone = identities("base")
        ids = [p.id for p in prompts]
        source_keys = {p.id: p.source_key(rc.tune.settings(), backbone) for p in prompts}
        spec = library_spec(config, bank_of(variant, ids), ids, source_keys,
                            lambda wanted: tuning_jobs(rc, DataSettings()), str(ckpts["base"]))
        return spec.key

    return key


@pytest.mark.parametrize("artifact,what,changes", [
    _case("library", what, what not in LIBRARY_EQUAL) for what in LIBRARY_KEY_INPUTS])
def test_library_key(library_key_of, artifact, what, changes):
    baseline = WEIGHTS_FILE if what.startswith("retriever weights file") else None
    assert (library_key_of(what) != library_key_of(baseline)) is changes


def _sealed_prompt_fields(bank_root: Path) -> list[dict]:
    """The ``prompt`` fields of every entry's sealed manifest, read from disk as written."""
    return [json.loads(m.read_text())["prompt"] for m in sorted(bank_root.rglob("manifest.json"))]


def test_the_device_is_recorded_not_keyed_for_a_bank_prompt(tiny_backbone, tiny_model_dir, run_config, tmp_path):
    """By design (the lead's decision, docs/tuning.md) the device class is not in a prompt's train_key:
    the bank costs GPU-hours, and tuning it on a GPU and then scoring on CPU machines is the method's
    intended workflow, so a prompt tuned on CUDA is reused on the CPU although its low bits differ.
    Instead the entry's sealed manifest records the device class (and dtype) it was tuned on."""
    from rospr_harness.method.bank import tuning_jobs
    from rospr_harness.tasks.base import DataSettings
    from rospr.tuning import TuneSettings, in_process, tune_bank

    model, tokenizer, identity = tiny_backbone
    config = run_config(rospr={"sources": "builtin/animals", "tune": {"source_rows": 8}})
    job = tuning_jobs(config.rospr, DataSettings())[0]
    cpu = TuneSettings(prompt_length=2, steps=1, batch_size=4, device="cpu")
    cuda = TuneSettings(prompt_length=2, steps=1, batch_size=4, device="cuda")
    backbone = identity.as_dict()
    assert job.train_key(cpu, backbone) == job.train_key(cuda, backbone)  # the key ignores the device class
    tune_bank([job], tmp_path / "bank", cpu, backbone, in_process(str(tiny_model_dir), cpu, model, tokenizer))
    [fields] = _sealed_prompt_fields(tmp_path / "bank")
    assert fields["train_key"] == job.train_key(cuda, backbone)
    assert (fields["device"], fields["tune_dtype"]) == ("cpu", "float32")  # what it was made on, recorded


def test_the_device_is_recorded_not_keyed_for_a_library(library_key_of, tiny_model_dir, tmp_path):
    """By design, as a bank's (docs/tuning.md): the device class the keys were embedded on is not in the
    library's build key (a library built on a GPU is searched on CPUs, though its keys differ in low bits);
    the library's sealed manifest records it, and a run's provenance shows it (``RosprContext.provenance``)."""
    from rospr.identity import retriever_identity
    from rospr.library import LibraryEntry, build_library, load_library
    from rospr.retriever import TorchEmbedder, load_encoder

    assert library_key_of("device cpu->cuda") == library_key_of(None)  # the key ignores the device class
    encoder, tokenizer = load_encoder(str(tiny_model_dir))
    entries = [LibraryEntry("s/a", "s", ("one two", "three")), LibraryEntry("s/b", "s", ("four",))]
    build_library(tmp_path / "lib", entries, TorchEmbedder(encoder, device="cpu"), tokenizer,
                  retriever_identity(str(tiny_model_dir)), "bank")
    assert json.loads((tmp_path / "lib" / "manifest.json").read_text())["device"] == "cpu"
    assert load_library(tmp_path / "lib").manifest["device"] == "cpu"  # sealed with it: loads intact


# -- the ONNX export cache key -------------------------------------------------------------------------

EXPORT_INPUTS = {  # (model checkpoint, retriever checkpoint, dtype, prompt_dtype)
    "weights": ("weights", None, "float32", None),
    "tokenizer": ("tokenizer", None, "float32", None),
    "config": ("config", None, "float32", None),
    "dtype float32->bfloat16": ("base", None, "bfloat16", None),
    "prompt_dtype": ("base", None, "float32", "float16"),
    "retriever added": ("base", "base", "float32", None),
    # not inputs of the export's bytes
    "checkpoint folder (same files)": ("moved", None, "float32", None),
    "config.json transformers_version": ("volatile", None, "float32", None),
}
EXPORT_EQUAL = {"checkpoint folder (same files)", "config.json transformers_version"}


@pytest.mark.parametrize("artifact,what,changes", [
    _case("export", what, what not in EXPORT_EQUAL) for what in EXPORT_INPUTS])
def test_export_key(ckpts, artifact, what, changes):
    from rospr_export.identity import cache_key

    def key(model, retriever, dtype, prompt_dtype):
        return cache_key(ckpts[model], retriever and ckpts[retriever], dtype, prompt_dtype)

    assert (key(*EXPORT_INPUTS[what]) != key("base", None, "float32", None)) is changes


def test_export_key_is_not_the_cache_folder(ckpts, tmp_path):
    """The output path: the export's folder name is its key wherever the cache is."""
    from rospr_harness.backends.onnxruntime_backend import export_folder

    assert export_folder(ckpts["base"], cache_dir=tmp_path / "a").name == \
        export_folder(ckpts["base"], cache_dir=tmp_path / "b").name


def test_retriever_weights_in_the_export_key(ckpts):
    from rospr_export.identity import cache_key

    assert cache_key(ckpts["base"], ckpts["weights"]) != cache_key(ckpts["base"], ckpts["base"])


# -- onnxruntime's optimised-graph store key -----------------------------------------------------------

ORT_BASE = {"graph": "t0_scorer.onnx", "graph_sha256": "a" * 64, "graph_optimization": "all",
            "providers": ["CPUExecutionProvider"]}
ORT_INPUTS = {
    "graph bytes (weights, dtype)": {"graph_sha256": "b" * 64},
    "graph name": {"graph": "retriever.onnx"},
    "graph_optimization": {"graph_optimization": "basic"},
    "providers CPU->CUDA (device class)": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
    "onnxruntime version": "_ort_version",
    "machine": "machine",
    "cpu flags": "cpuinfo",
}


@pytest.mark.parametrize("artifact,what,changes", [_case("ort-optimized", what, True) for what in ORT_INPUTS])
def test_ort_optimized_key(monkeypatch, artifact, what, changes):
    import io
    import platform

    from rospr_harness.backends import onnxruntime_backend as ob

    def name(**fields) -> str:
        return ob.optimized_name(ob.optimized_fields(**{**ORT_BASE, **fields}))

    base = name()
    perturb = ORT_INPUTS[what]
    if perturb == "_ort_version":
        monkeypatch.setattr(ob, "_ort_version", lambda: "0.0.1")
    elif perturb == "machine":
        monkeypatch.setattr(platform, "machine", lambda: "another-machine")
    elif perturb == "cpuinfo":
        monkeypatch.setattr(ob, "open", lambda *a, **k: io.StringIO("flags\t: another set\n"), raising=False)
    assert (name(**(perturb if isinstance(perturb, dict) else {})) != base) is changes


def test_ort_optimized_key_leaves_out_session_threads():
    """Threads are a session option, not an input of the optimised graph: ``optimized_fields`` takes
    none, and the options that reach it are the four it names."""
    import inspect

    from rospr_harness.backends.onnxruntime_backend import optimized_fields

    assert list(inspect.signature(optimized_fields).parameters) == ["graph", "graph_sha256", "graph_optimization",
                                                                     "providers"]
