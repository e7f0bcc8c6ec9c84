"""peft PROMPT_TUNING adapters in and out of a prompt bank (``rospr.peft_adapter``, ``rospr bank``).

peft is the reference: an adapter we export, loaded by peft's own ``PeftModel.from_pretrained``, gives
the encoder output and the choice log-probabilities of ``PromptedT5`` with that prompt; an adapter
peft saves comes back as the rows peft feeds the encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rospr.artifacts import ArtifactError
from rospr.peft_adapter import (CONFIG_FILE, TENSOR, WEIGHTS_FILE, import_adapter, model_shape, read_adapter,
                                write_adapter)
from rospr.softprompt import PromptBank, SoftPrompt

peft = pytest.importorskip("peft")
torch = pytest.importorskip("torch")

P = 7


@pytest.fixture(scope="module")
def identity(tiny_backbone):
    return tiny_backbone[2].as_dict()


@pytest.fixture(scope="module")
def shape(tiny_backbone):
    return model_shape(tiny_backbone[0].config.to_dict())


@pytest.fixture
def bank(tmp_path, identity):
    values = (np.random.default_rng(0).normal(size=(P, identity["d_model"])) * 0.5).astype(np.float32)
    b = PromptBank.open(tmp_path / "bank", identity)
    b.add(SoftPrompt("builtin/animals/mentions_animal", "builtin/animals", "mentions_animal", ("yes", "no"), values,
                     3, 1.25, 0, "key"))
    return b


def _peft_model(tiny_model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM

    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir).eval()  # a copy of its own: peft wraps it
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def test_exported_adapter_equals_prompted_t5_under_peft(tiny_backbone, tiny_model_dir, bank, tmp_path):
    from rospr.backbone import PromptedT5
    from rospr.peft_adapter import export_prompt

    from transformers import AutoTokenizer

    model, _, _ = tiny_backbone
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))  # peft's side reads ids as transformers gives them
    pid = bank.ids()[0]
    adapter = export_prompt(bank, pid, tmp_path / "adapter")
    pm = _peft_model(tiny_model_dir, adapter)
    assert pm.active_peft_config.num_virtual_tokens == P

    texts = ["the cat sat on the mat is it happy", "a dog"]
    enc = tok(texts, padding=True, add_special_tokens=False, return_tensors="pt")
    ids, am = enc.input_ids, enc.attention_mask
    choices = ["yes", "no the dog was sad"]
    prompt = torch.from_numpy(bank.get(pid).values)
    core = PromptedT5(model)
    with torch.no_grad():
        pe = prompt.unsqueeze(0).expand(len(texts), -1, -1)
        hidden, mask = core.encode(ids, am, pe, torch.ones(len(texts), P, dtype=am.dtype))
        for choice in choices:
            target = tok([choice] * len(texts), return_tensors="pt").input_ids  # with EOS, like a choice
            tm = torch.ones_like(target)
            ours = core.token_logprobs(hidden, mask, target[:, None, :], tm[:, None, :])[:, 0]
            out = pm(input_ids=ids, attention_mask=am, labels=target)
            ref_lp = torch.log_softmax(out.logits.float(), -1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            np.testing.assert_allclose(ours.numpy(), ref_lp.numpy(), atol=1e-5, rtol=0)
            ref_hidden = out.encoder_last_hidden_state
            assert ref_hidden.shape == hidden.shape  # [B, P + S, D]: the prompt first
            np.testing.assert_allclose(hidden[:, :P].numpy(), ref_hidden[:, :P].numpy(), atol=1e-5, rtol=0)
            real = torch.cat([torch.zeros(len(texts), P, dtype=torch.bool), am.bool()], dim=1)
            np.testing.assert_allclose(hidden[real].numpy(), ref_hidden[real].numpy(), atol=1e-5, rtol=0)
            # the summed choice score, as rank classification takes it
            scores = core(ids, am, pe, torch.ones(len(texts), P, dtype=am.dtype), target[:, None, :], tm[:, None, :])
            np.testing.assert_allclose(scores[:, 0].numpy(), ref_lp.double().sum(-1).numpy(), atol=1e-5, rtol=0)


def test_exported_config_is_what_peft_writes(bank, tmp_path, tiny_model_dir, shape):
    """Our adapter_config.json has every key peft saves for a seq2seq PROMPT_TUNING adapter, with the
    same values (peft_version aside, which peft fills in itself)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from rospr.peft_adapter import export_prompt

    ours = export_prompt(bank, bank.ids()[0], tmp_path / "ours", shape, str(tiny_model_dir))
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    ref = get_peft_model(base, PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=P,
                                                  num_transformer_submodules=1))
    ref.save_pretrained(str(tmp_path / "ref"))
    a = json.loads((ours / CONFIG_FILE).read_text())
    b = json.loads((tmp_path / "ref" / CONFIG_FILE).read_text())
    b.pop("peft_version")
    assert a == b


@pytest.mark.parametrize("submodules", [1, None])  # None: peft's seq2seq default (2, an unused second block)
def test_adapter_saved_by_peft_imports_as_its_encoder_rows(tiny_model_dir, identity, shape, tmp_path, submodules):
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    pm = get_peft_model(base, PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=P,
                                                 num_transformer_submodules=submodules))
    weight = pm.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    pm.save_pretrained(str(tmp_path / "ad"))
    expected = weight.detach()[:P].numpy()  # what peft's forward prepends to the encoder input

    bank = PromptBank.open(tmp_path / "bank", identity)
    saved = import_adapter(bank, tmp_path / "ad", "builtin/animals", "mentions_animal", ("yes", "no"), shape)
    np.testing.assert_array_equal(saved.values, expected)
    reread = PromptBank.load(tmp_path / "bank", identity)
    entry = reread.entry(saved.id)
    assert entry["imported_from"] == f"peft:{(tmp_path / 'ad').resolve()}"
    assert entry["steps"] == 0 and entry["final_loss"] is None and entry["origin"] == {"split": "train", "rows": None}
    np.testing.assert_array_equal(reread.get(saved.id).values, expected)
    # an imported prompt stands for its (source, template) whatever the tuning settings
    assert reread.has_valid(saved.id, "any other train key")


def test_round_trip_through_export(bank, identity, tmp_path):
    from rospr.peft_adapter import export_prompt

    pid = bank.ids()[0]
    folder = export_prompt(bank, pid, tmp_path / "ad")
    other = PromptBank.open(tmp_path / "bank2", identity)
    back = import_adapter(other, folder, "builtin/animals", "mentions_animal", ("yes", "no"))
    np.testing.assert_array_equal(back.values, bank.get(pid).values)


def _edit_config(folder: Path, **changes) -> None:
    path = folder / CONFIG_FILE
    cfg = json.loads(path.read_text())
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def _write_tensors(folder: Path, tensors: dict) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(folder / WEIGHTS_FILE))


REFUSALS = {
    "peft_type": (lambda f, d: _edit_config(f, peft_type="LORA"), r"field 'peft_type' is 'LORA'"),
    "task_type": (lambda f, d: _edit_config(f, task_type="CAUSAL_LM"), r"field 'task_type'"),
    "token_dim": (lambda f, d: _edit_config(f, token_dim=64), r"field 'token_dim' is 64.*d_model 128"),
    "num_layers": (lambda f, d: _edit_config(f, num_layers=24), r"field 'num_layers' is 24"),
    "heads": (lambda f, d: _edit_config(f, num_attention_heads=16), r"field 'num_attention_heads' is 16"),
    "base_model": (lambda f, d: _edit_config(f, base_model_name_or_path="google/flan-t5-xl"),
                   r"field 'base_model_name_or_path'.*--ignore-base-name"),
    "submodules": (lambda f, d: _edit_config(f, num_transformer_submodules=3), r"field 'num_transformer_submodules'"),
    "no_submodules": (lambda f, d: _edit_config(f, num_transformer_submodules=None),
                      r"field 'num_transformer_submodules' is None"),
    "virtual_tokens": (lambda f, d: _edit_config(f, num_virtual_tokens=0), r"field 'num_virtual_tokens'"),
    "shape": (lambda f, d: _edit_config(f, num_virtual_tokens=P + 1), r"shape \[7, 128\].*\[8, 128\]"),
    "missing_tensor": (lambda f, d: _write_tensors(f, {"embedding.weight": np.zeros((P, d), np.float32)}),
                       r"tensors \['embedding.weight'\], expected exactly \['prompt_embeddings'\]"),
    "extra_tensor": (lambda f, d: _write_tensors(f, {TENSOR: np.zeros((P, d), np.float32),
                                                     "other": np.zeros(1, np.float32)}), r"expected exactly"),
    "non_finite": (lambda f, d: _write_tensors(f, {TENSOR: np.full((P, d), np.nan, np.float32)}), r"non-finite"),
    "int_tensor": (lambda f, d: _write_tensors(f, {TENSOR: np.zeros((P, d), np.int32)}), r"dtype I32"),
    "no_config": (lambda f, d: (f / CONFIG_FILE).unlink(), r"adapter_config.json: no adapter config"),
    "bad_json": (lambda f, d: (f / CONFIG_FILE).write_text("{"), r"not valid JSON"),
    # class 7 (issue 32): a config that is not UTF-8 names its file and line, not "an unexpected error"
    "non_utf8": (lambda f, d: (f / CONFIG_FILE).write_bytes(b'{\n"peft_type": "PROMPT\xff"}'),
                 r"adapter_config.json:2: not UTF-8 text \(byte 0xff\)"),
    # class 3: bounded, and each key once
    "deep_json": (lambda f, d: (f / CONFIG_FILE).write_text("[" * 20_000 + "]" * 20_000), r"nested deeper"),
    "twice": (lambda f, d: (f / CONFIG_FILE).write_text('{"peft_type": "PROMPT_TUNING", "peft_type": "LORA"}'),
              r"key 'peft_type' appears more than once"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refuses_naming_file_and_field(bank, identity, shape, tmp_path, case):
    from rospr.peft_adapter import export_prompt

    folder = export_prompt(bank, bank.ids()[0], tmp_path / "ad", shape, identity["name"])
    damage, message = REFUSALS[case]
    damage(folder, identity["d_model"])
    with pytest.raises(ArtifactError, match=message) as info:
        read_adapter(folder, identity, shape)
    assert str(folder) in str(info.value)


def test_base_name_of_a_local_copy_is_accepted(bank, identity, tmp_path):
    folder = write_adapter(bank.get(bank.ids()[0]).values, tmp_path / "ad", f"someorg/{identity['name']}")
    assert read_adapter(folder, identity).values.shape == (P, identity["d_model"])
    _edit_config(folder, base_model_name_or_path="other")
    assert read_adapter(folder, identity, check_base_name=False).values.shape == (P, identity["d_model"])


def test_cli_import_and_export(tiny_model_dir, bank, identity, tmp_path):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    pid = bank.ids()[0]
    runner = CliRunner()
    res = runner.invoke(app, ["bank", "export-peft", "--bank", str(bank.root), "--id", pid, "--out",
                              str(tmp_path / "ad"), "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "ad" / CONFIG_FILE).read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir) and cfg["num_layers"] == 2
    res = runner.invoke(app, ["bank", "import-peft", "--adapter", str(tmp_path / "ad"), "--source", "builtin/nli",
                              "--template", PromptBank.load(bank.root).entry(pid)["template"], "--bank",
                              str(tmp_path / "new"), "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "builtin/nli" in res.output  # that template is not one of builtin/nli's
    res = runner.invoke(app, ["bank", "import-peft", "--adapter", str(tmp_path / "ad"), "--source", "builtin/animals",
                              "--template", "is_there_animal", "--bank", str(tmp_path / "new"),
                              "--model", str(tiny_model_dir)])
    assert res.exit_code == 0, res.output
    new = PromptBank.load(tmp_path / "new", identity)
    got = new.get("builtin/animals/is_there_animal")
    np.testing.assert_array_equal(got.values, bank.get(pid).values)
    assert got.answer_choices and new.backbone == identity
    # all prompts: one folder each
    res = runner.invoke(app, ["bank", "export-peft", "--bank", str(tmp_path / "new"), "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "all").glob(f"*/{WEIGHTS_FILE}"))) == 1


def test_cli_import_refuses_a_bank_of_another_backbone(tiny_model_dir, tmp_path, bank):
    from typer.testing import CliRunner

    from rospr_harness.cli import app
    from rospr.peft_adapter import export_prompt

    folder = export_prompt(bank, bank.ids()[0], tmp_path / "ad")
    other = dict(bank.backbone, config_hash="0" * 16, name="other-model")
    PromptBank.open(tmp_path / "theirs", other).add(bank.get(bank.ids()[0]))
    res = CliRunner().invoke(app, ["bank", "import-peft", "--adapter", str(folder), "--source", "builtin/animals",
                                   "--template", "is_there_animal", "--bank", str(tmp_path / "theirs"),
                                   "--model", str(tiny_model_dir)])
    assert res.exit_code == 2 and "trained for backbone 'other-model'" in res.output


def test_cli_import_counts_must_agree(tmp_path):
    from typer.testing import CliRunner

    from rospr_harness.cli import app

    res = CliRunner().invoke(app, ["bank", "import-peft", "--adapter", "a", "--adapter", "b", "--source", "s",
                                   "--template", "t"])
    assert res.exit_code == 2 and "one --source and one --template per --adapter" in res.output


def test_class_4_counts_are_of_what_was_done_a_prompt_given_twice_is_refused(tiny_model_dir, bank, tmp_path):
    """class 4: no figure hides what happened. Two adapters for one (source, template) would be reported as two
    imported and one kept; one --id twice as two written for one folder. Each is refused before anything is done,
    naming the prompt and how often it was given; distinct prompts are counted as written."""
    from helpers import cli, error_line

    pid = bank.ids()[0]
    one = cli("bank", "export-peft", "--bank", bank.root, "--id", pid, "--out", tmp_path / "ad")
    assert one.exit_code == 0 and "wrote 1 peft adapter(s)" in one.output, one.output
    twice = cli("bank", "export-peft", "--bank", bank.root, "--id", pid, "--id", pid, "--out", tmp_path / "twice")
    error_line(twice, "--id", f"prompt {pid} is given 2 times")
    assert not list((tmp_path / "twice").glob(f"**/{WEIGHTS_FILE}"))
    args = ["--bank", tmp_path / "new", "--model", tiny_model_dir]
    same = ["--adapter", tmp_path / "ad", "--source", "builtin/animals", "--template", "is_there_animal"]
    other = ["--adapter", tmp_path / "ad", "--source", "builtin/animals", "--template", "mentions_animal"]
    res = cli("bank", "import-peft", *same, *other, *same, *args)  # the repeat last: nothing imported before it
    error_line(res, "builtin/animals/is_there_animal is given 2 times", "one prompt per (source, template)")
    assert not (tmp_path / "new").exists() or not PromptBank.load(tmp_path / "new").ids()
    res = cli("bank", "import-peft", *same, *other, *args)
    assert res.exit_code == 0 and "2 adapter(s) imported" in " ".join(res.output.split()), res.output  # rich wraps a long path
    assert len(PromptBank.load(tmp_path / "new").ids()) == 2
    both = cli("bank", "export-peft", "--bank", tmp_path / "new", "--out", tmp_path / "all")
    assert both.exit_code == 0 and "wrote 2 peft adapter(s)" in both.output
    assert len(list((tmp_path / "all").glob(f"*/{WEIGHTS_FILE}"))) == 2


def test_class_8_exported_adapters_follow_the_umask(bank, tmp_path):
    """class 8: what users meet. An exported adapter's files get the mode the user's umask gives any new file
    (they were 0600 whatever it was)."""
    import os
    import stat

    from rospr.peft_adapter import export_prompt

    old = os.umask(0o027)
    try:
        folder = export_prompt(bank, bank.ids()[0], tmp_path / "ad")
    finally:
        os.umask(old)
    assert {stat.S_IMODE((folder / f).stat().st_mode) for f in (CONFIG_FILE, WEIGHTS_FILE)} == {0o640}
