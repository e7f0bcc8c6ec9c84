"""The five methods in one run on the tiny model: retrieval logs, leave-one-out, report, reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rospr_harness.backends.torch_backend import TorchScorer
from rospr_harness.config import load_config
from rospr_harness.schema import read_records, read_results
from rospr_harness.runner import run
from rospr.selection import Method
from rospr.scoring import encode_examples, score_encoded
from rospr.softprompt import PromptBank
from helpers import rospr_tree

METHODS = ["t0", "rospr", "rospr+inter", "rospr+var", "rospr+var+inter"]


@pytest.fixture(scope="module")
def methods_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    tree = rospr_tree(tiny_model_dir, root, METHODS, limit=12, batch_size=8, var_candidates=4, backend="torch")
    cfg = load_config(None, [], tree=tree)
    res = run(cfg, root / "run")
    return cfg, res, root


def test_every_method_runs_and_logs_its_retrieval(methods_run):
    cfg, res, root = methods_run
    disk = read_results(root / "run" / "results.json")
    assert disk.schema_version == "1.4"
    assert {u.method for u in disk.units} == set(METHODS) and len(disk.units) == 3 * 5
    for u in disk.units:
        if u.method == "t0":
            assert u.retrieval is None
            continue
        r = u.retrieval
        assert r.method == u.method and len(r.queries) == 6 and r.hits == 6 * 5
        # leave-one-out: the target's own prompts are excluded and never chosen
        assert all(pid.startswith(u.task + "/") for pid in r.excluded) and r.excluded
        assert all(not pid.startswith(u.task + "/") for pid in r.chosen)
        assert sum(c.frequency for c in r.candidates) == 30
        assert len(r.chosen) == (2 if Method.parse(u.method).inter else 1)
        assert sum(r.weights) == pytest.approx(1.0, abs=1e-5)
        if Method.parse(u.method).var:
            assert r.var_rule == "choices" and all(c.var_score is not None for c in r.candidates[:4])


def test_records_are_scored_with_the_chosen_prompt(methods_run, tiny_backbone):
    """Rescore a unit independently: the bank's prompts, mixed by the logged weights, in numpy."""
    cfg, res, root = methods_run
    model, tokenizer, identity = tiny_backbone
    bank = PromptBank.load(root / "bank", identity.as_dict())
    unit = next(u for u in res.units if u.method == "rospr+var+inter")
    r = unit.retrieval
    prompt = sum(w * bank.get(pid).values.astype(np.float64) for pid, w in zip(r.chosen, r.weights))
    records = read_records(root / "run" / unit.records)
    from rospr.data import Example

    examples = [Example(unit.task, unit.prompt, rec.index, rec.input, tuple(rec.choices)) for rec in records]
    scores = score_encoded(TorchScorer(model), encode_examples(tokenizer, examples, cfg.scoring.convention()),
                           prompt.astype(np.float32), 4)
    for rec, sc in zip(records, scores):
        np.testing.assert_allclose(rec.scores, sc, rtol=1e-4, atol=1e-4)


def test_report_puts_methods_beside_the_baseline(methods_run):
    _, res, root = methods_run
    report = (root / "run" / "report.md").read_text()
    assert "## RoSPr vs the T0 baseline" in report and "## Retrieved prompts" in report
    t0 = {s.task: s.mean for s in res.tasks if s.method == "t0"}
    rospr = {s.task: s.mean for s in res.tasks if s.method == "rospr"}
    line = next(l for l in report.splitlines() if l.startswith("| builtin/nli | ") and "(" in l)
    assert f"{100 * rospr['builtin/nli']:.1f} ({100 * (rospr['builtin/nli'] - t0['builtin/nli']):+.1f})" in line


def test_a_second_run_reuses_the_bank_and_library(methods_run):
    cfg, _, root = methods_run
    stamps = {p: p.stat().st_mtime_ns for p in [*(root / "bank").rglob("*"), *(root / "library").rglob("*")]}
    run(cfg.model_copy(update={"method": ["rospr"]}), root / "run2")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_an_edited_library_is_refused_by_the_run(methods_run, tmp_path):
    import shutil

    from rospr.artifacts import ArtifactError

    cfg, _, root = methods_run
    lib = tmp_path / "library"
    shutil.copytree(root / "library", lib)
    keys = lib / "keys.safetensors"
    data = bytearray(keys.read_bytes())
    data[-3] ^= 1
    keys.write_bytes(bytes(data))
    rospr = cfg.rospr.model_copy(update={"library": str(lib)})
    with pytest.raises(ArtifactError, match="delete it to rebuild"):
        run(cfg.model_copy(update={"method": ["rospr"], "rospr": rospr}), tmp_path / "run")


def test_methods_that_choose_one_prompt_share_one_scoring_pass(methods_run):
    """Per target, one scoring pass per distinct prompt (bank ids and weights; none for t0 and for a
    unit without candidates): the examples scored are n x (distinct prompts), not n x (methods)."""
    _cfg, res, _root = methods_run
    prompts: dict[tuple, set] = {}
    n: dict[tuple, int] = {}
    for u in res.units:
        key = None if u.retrieval is None or not u.retrieval.chosen else (tuple(u.retrieval.chosen),
                                                                           tuple(u.retrieval.weights))
        prompts.setdefault((u.task, u.prompt), set()).add(key)
        n[(u.task, u.prompt)] = u.n
    shared = sum(n[t] * len(keys) for t, keys in prompts.items())
    assert res.execution.time.scoring_examples == shared
    assert shared < sum(u.n for u in res.units)  # here rospr and rospr+var agree on some target


def test_the_lab_code_preset_changes_only_its_four_settings_and_the_report_names_it(methods_run, tiny_model_dir,
                                                                                     tmp_path):
    import torch
    from safetensors.numpy import load_file

    from rospr.retriever import PADDED_WIDTH, load_encoder

    cfg, _, root = methods_run
    tree = rospr_tree(tiny_model_dir, root, ["rospr"], limit=12, batch_size=8, var_candidates=4)
    tree["rospr"]["library"] = str(tmp_path / "library")  # the same bank; a library of the lab's keys
    lab = load_config(None, ["rospr.preset=lab_code"], tree=tree)
    ours, theirs = load_config(None, [], tree=tree).model_dump(mode="json"), lab.model_dump(mode="json")
    changed = {k for k in ours["rospr"] if ours["rospr"][k] != theirs["rospr"][k]}
    assert changed == {"preset", "library_sample", "normalize", "votes", "pooling"}
    assert {k: v for k, v in ours.items() if k != "rospr"} == {k: v for k, v in theirs.items() if k != "rospr"}

    res = run(lab, tmp_path / "run")  # onnxruntime queries; the padded keys embedded in PyTorch
    manifest = json.loads((tmp_path / "library" / "manifest.json").read_text())
    assert manifest["pooling"] == "padded" and manifest["normalize"] is False
    # a key by hand: its text with EOS, padded to 256 tokens, the tiny encoder's states averaged over all 256
    first = json.loads((tmp_path / "library" / "instances.jsonl").read_text().splitlines()[0])
    encoder, tok = load_encoder(str(tiny_model_dir))
    ids = tok(first["text"], add_special_tokens=False)["input_ids"][: PADDED_WIDTH - 1] + [tok.eos_token_id]
    x, m = torch.zeros(1, PADDED_WIDTH, dtype=torch.long), torch.zeros(1, PADDED_WIDTH, dtype=torch.long)
    x[0, : len(ids)], m[0, : len(ids)] = torch.tensor(ids), 1
    with torch.no_grad():
        want = encoder(input_ids=x, attention_mask=m).last_hidden_state[0].mean(0).numpy()
    np.testing.assert_allclose(load_file(str(tmp_path / "library" / "keys.safetensors"))["keys"][0], want,
                               rtol=1e-5, atol=1e-5)
    # random rows, not the first 16 of each prompt's training inputs
    texts = lambda lib: {json.loads(l)["text"] for l in (lib / "instances.jsonl").read_text().splitlines()}
    assert texts(tmp_path / "library") != texts(root / "library")
    for u in res.units:  # top-1 votes: one per query
        assert sum(c.frequency for c in u.retrieval.candidates) == len(u.retrieval.queries) == 6
    report = (tmp_path / "run" / "report.md").read_text()
    assert "preset `lab_code`: library random 16 rows per prompt, dot-product similarity, votes top1, padded" in report
