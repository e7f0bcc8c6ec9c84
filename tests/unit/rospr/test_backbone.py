"""The scorer of export version 4 (cross-attention keys and values once per input, the decoder's
position-wise work and the LM head on real choice tokens only) against Hugging Face's own forward, one
(input, choice) at a time with ``labels``, and the exported ONNX graph against both.

Batches are built here by hand in the tensor contract (``rospr.scoring.ScoreBatch``): right-padded inputs,
right-aligned soft prompts of mixed lengths (zeros in front), 1 to many choices of different lengths
with padded choice slots. The reference sees no padding at all: only the real prompt vectors and
tokens of one input and the tokens of one choice.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rospr.backbone import PromptedT5

TOL = 1e-4


def make_batch(rng, vocab, d_model, in_lens, prompt_lens, choice_lens):
    """Contract tensors for inputs of ``in_lens`` tokens, soft prompts of ``prompt_lens`` vectors and,
    per input, choices of the lengths in ``choice_lens[i]`` (a list of 1 or more)."""
    b, s, p = len(in_lens), max(in_lens), max(prompt_lens)
    c, t = max(len(x) for x in choice_lens), max(max(x) for x in choice_lens)
    ids = np.zeros((b, s), np.int64)
    am = np.zeros((b, s), np.int64)
    pe = np.zeros((b, p, d_model), np.float32)
    pm = np.zeros((b, p), np.int64)
    cid = np.zeros((b, c, t), np.int64)
    cm = np.zeros((b, c, t), np.int64)
    for i in range(b):
        ids[i, : in_lens[i]] = rng.integers(3, vocab, in_lens[i])
        am[i, : in_lens[i]] = 1
        if prompt_lens[i]:  # right-aligned: the prompt's vectors end where the input starts
            pe[i, p - prompt_lens[i]:] = rng.normal(size=(prompt_lens[i], d_model)) * 0.5
            pm[i, p - prompt_lens[i]:] = 1
        for j, n in enumerate(choice_lens[i]):
            cid[i, j, :n] = rng.integers(3, vocab, n)
            cm[i, j, :n] = 1
    return dict(input_ids=ids, attention_mask=am, prompt_embeds=pe, prompt_mask=pm, choice_ids=cid, choice_mask=cm)


def hf_scores(model, batch) -> list[list[float]]:
    """Per input, per choice: the summed log-likelihood from ``T5ForConditionalGeneration(labels=...)``
    (its mean cross-entropy times the number of tokens) on the unpadded input and choice."""
    out = []
    for i in range(batch["input_ids"].shape[0]):
        ids = torch.from_numpy(batch["input_ids"][i][batch["attention_mask"][i] > 0])[None]
        prompt = torch.from_numpy(batch["prompt_embeds"][i][batch["prompt_mask"][i] > 0])[None]
        emb = torch.cat([prompt, model.get_input_embeddings()(ids)], dim=1)
        row = []
        for j in range(batch["choice_ids"].shape[1]):
            labels = torch.from_numpy(batch["choice_ids"][i, j][batch["choice_mask"][i, j] > 0])[None]
            if labels.shape[1] == 0:
                continue
            with torch.no_grad():
                loss = model(inputs_embeds=emb, attention_mask=torch.ones(emb.shape[:2], dtype=torch.long),
                             labels=labels).loss
            row.append(-float(loss) * labels.shape[1])
        out.append(row)
    return out


CASES = {
    # (input lengths, prompt lengths, choice lengths per input)
    "no_prompt_mixed_choices": ([9, 4, 17, 1], [0, 0, 0, 0], [[2, 5], [1], [3, 1, 4, 6], [2, 2, 2]]),
    "mixed_prompts": ([6, 12, 3, 8], [5, 2, 0, 3], [[4, 1, 2], [7], [1, 1], [3, 5, 2, 1, 6]]),
    "all_prompted_many_choices": ([14, 5], [4, 4], [[1, 2, 3, 4, 5, 6, 7], [6, 2]]),
    "one_input_one_choice": ([7], [3], [[5]]),
    "one_token_everything": ([1, 1], [1, 0], [[1], [1, 1]]),
}


@pytest.fixture(scope="module")
def batches(tiny_backbone):
    model = tiny_backbone[0]
    rng = np.random.default_rng(12)
    vocab, d = int(model.config.vocab_size), int(model.config.d_model)
    return {name: make_batch(rng, vocab, d, *spec) for name, spec in CASES.items()}


def torch_scores(model, batch) -> np.ndarray:
    with torch.inference_mode():
        return PromptedT5(model).eval()(*(torch.from_numpy(batch[k]) for k in batch)).numpy()


def assert_close_to_reference(got: np.ndarray, ref: list[list[float]]) -> None:
    for i, row in enumerate(ref):
        np.testing.assert_allclose(got[i, : len(row)], row, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_scorer_equals_hf_forward(tiny_backbone, batches, case):
    model = tiny_backbone[0]
    assert_close_to_reference(torch_scores(model, batches[case]), hf_scores(model, batches[case]))


def test_cross_attention_keys_values_projected_once_per_input(tiny_backbone, batches):
    """Every decoder layer's cross-attention k and v see the [B, S'] encoding, not one copy per choice."""
    model = tiny_backbone[0]
    seen: list[tuple[int, ...]] = []
    hooks = [lin.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
             for block in model.get_decoder().block for lin in (block.layer[1].EncDecAttention.k,
                                                               block.layer[1].EncDecAttention.v)]
    try:
        batch = batches["mixed_prompts"]
        torch_scores(model, batch)
    finally:
        for h in hooks:
            h.remove()
    b, s = batch["input_ids"].shape
    p = batch["prompt_embeds"].shape[1]
    assert len(seen) == 2 * model.config.num_decoder_layers
    assert all(shape[:2] == (b, p + s) for shape in seen), seen


def test_decoder_position_wise_work_sees_real_tokens_only(tiny_backbone, batches):
    """Every decoder layer's projections and feed-forward, and the LM head, get the K real choice
    tokens of the batch: no padded choice slot and no padding after a choice's last token."""
    model = tiny_backbone[0]
    seen: dict[str, list[tuple[int, ...]]] = {"self q": [], "cross q": [], "ff": [], "lm_head": []}

    def hook(key):
        return lambda mod, args, out: seen[key].append(tuple(args[0].shape))

    mods = [("lm_head", model.lm_head)]
    for block in model.get_decoder().block:
        mods += [("self q", block.layer[0].SelfAttention.q), ("cross q", block.layer[1].EncDecAttention.q),
                 ("ff", block.layer[-1].layer_norm)]
    hooks = [m.register_forward_hook(hook(k)) for k, m in mods]
    try:
        batch = batches["mixed_prompts"]  # choice lengths [4, 1, 2], [7], [1, 1], [3, 5, 2, 1, 6]: T = 7
        torch_scores(model, batch)
    finally:
        for h in hooks:
            h.remove()
    k = int(batch["choice_mask"].sum())
    assert k == 33 and batch["choice_mask"].size == 4 * 5 * 7
    layers = model.config.num_decoder_layers
    assert seen["self q"] == seen["cross q"] == seen["ff"] == [(k, model.config.d_model)] * layers, seen
    assert seen["lm_head"] == [(k, model.config.d_model)]


def test_gradient_reaches_the_prompt_only(tiny_backbone, batches):
    """Prompt tuning trains through this computation: the prompt's gradient equals HF's."""
    model = tiny_backbone[0]
    batch = batches["mixed_prompts"]
    x = {k: torch.from_numpy(v) for k, v in batch.items()}
    pe = x["prompt_embeds"].clone().requires_grad_(True)
    PromptedT5(model).eval()(x["input_ids"], x["attention_mask"], pe, x["prompt_mask"],
                             x["choice_ids"], x["choice_mask"]).sum().backward()
    # reference: HF's forward on input 0 alone (its full 5-vector prompt), summed over its choices
    ref = batch["prompt_embeds"][0].copy()
    pr = torch.from_numpy(ref).requires_grad_(True)
    ids = x["input_ids"][0][x["attention_mask"][0] > 0][None]
    emb = torch.cat([pr[None], model.get_input_embeddings()(ids)], dim=1)
    total = 0
    for j in range(x["choice_ids"].shape[1]):
        labels = x["choice_ids"][0, j][x["choice_mask"][0, j] > 0][None]
        if labels.shape[1]:
            total = total - model(inputs_embeds=emb, labels=labels).loss * labels.shape[1]
    total.backward()
    np.testing.assert_allclose(pe.grad[0].numpy(), pr.grad.numpy(), atol=1e-4, rtol=1e-3)
    assert not any(p.grad is not None for p in model.parameters())


@pytest.fixture(scope="module")
def onnx_session(tiny_model_dir, tmp_path_factory):
    """The exported graph (in process, or under transformers 5 in rospr's export environment: then the
    graph traced by transformers 4 is checked against this transformers' forward)."""
    import onnxruntime as ort

    from rospr_export.export import export_models

    folder = tmp_path_factory.mktemp("scorer")
    export_models(tiny_model_dir, folder)
    return ort.InferenceSession(str(folder / "t0_scorer.onnx"), providers=["CPUExecutionProvider"])


def test_onnx_contract_unchanged(onnx_session):
    """The tensor contract: the same six inputs and one output, names, types and ranks."""
    inputs = {i.name: (i.type, len(i.shape)) for i in onnx_session.get_inputs()}
    assert inputs == {"input_ids": ("tensor(int64)", 2), "attention_mask": ("tensor(int64)", 2),
                      "prompt_embeds": ("tensor(float)", 3), "prompt_mask": ("tensor(int64)", 2),
                      "choice_ids": ("tensor(int64)", 3), "choice_mask": ("tensor(int64)", 3)}
    assert [(o.name, o.type, len(o.shape)) for o in onnx_session.get_outputs()] == [("scores", "tensor(float)", 2)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_onnx_equals_torch_and_hf(tiny_backbone, batches, onnx_session, case):
    model = tiny_backbone[0]
    batch = batches[case]
    got = onnx_session.run(["scores"], batch)[0]
    valid = batch["choice_mask"].any(-1)
    np.testing.assert_allclose(got[valid], torch_scores(model, batch)[valid], atol=TOL, rtol=0)
    assert_close_to_reference(got, hf_scores(model, batch))
