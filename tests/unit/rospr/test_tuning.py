"""Prompt tuning on the tiny model (rospr/tuning.py): the loss falls, tuning resumes, micro-batches,
checkpointing and bfloat16 give the same training, settings are refused with the fix; the rows of each
step (``step_batches``, ``group_by_length``) against hand computations. The whole tuning
runs (300 steps that learn; a Ray cluster with logical GPUs) are in tests/e2e/test_tuning_runs.py, a
bank tuned by Ray actors against the in-process one in tests/e2e/test_tuning_ray_actors.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rospr_harness.tasks import get_task
from rospr_harness.tasks.base import DataSettings
from rospr.softprompt import PromptBank
from rospr.tuning import (MEGA_BATCHES, TuneJob, TuneSettings, in_process, length_grouped_epoch, step_batches,
                          tune_bank, tune_prompt)


@pytest.mark.slow  # a tuning loop of several seconds (the fast tier stays under 90 s; make test runs it)
def test_default_adafactor_lowers_the_loss(tiny_backbone, animals):
    model, tokenizer, _ = tiny_backbone
    settings = TuneSettings(prompt_length=8, steps=30, batch_size=8)  # Adafactor, lr 0.3, vocab init
    assert settings.optimizer == "adafactor" and settings.lr == 0.3
    result = tune_prompt(model, tokenizer, animals[0][:64], settings, seed=1)
    # measured: 7.57 -> 4.20 (mean of the first / last 5 steps)
    assert np.mean(result.losses[-5:]) < 0.7 * np.mean(result.losses[:5])
    short = TuneSettings(prompt_length=8, steps=5, batch_size=8)
    a, b = (tune_prompt(model, tokenizer, animals[0][:64], short, seed=1) for _ in range(2))
    np.testing.assert_array_equal(a.values, b.values)  # fixed seed: the same prompt


def _jobs(n_rows=24):
    jobs = []
    for name in ("builtin/animals", "builtin/sentiment"):
        task = get_task(name, DataSettings())
        for prompt in task.prompts()[:2]:
            ex = tuple(task.load(prompt, split="train", limit=n_rows).examples)
            jobs.append(TuneJob(name, prompt, ex[0].choices, ex, {"split": "train", "rows": n_rows}))
    return jobs


SMALL = TuneSettings(prompt_length=4, steps=6, batch_size=8)


def test_interrupted_tuning_resumes_where_it_stopped(tiny_backbone, tiny_model_dir, tmp_path):
    model, tokenizer, identity = tiny_backbone
    jobs = _jobs()

    class Interrupt(Exception):
        pass

    def stop_after_two(prompt, reused):
        stop_after_two.n += 1
        if stop_after_two.n == 2:
            raise Interrupt

    stop_after_two.n = 0
    with pytest.raises(Interrupt):
        tune_bank(jobs, tmp_path / "bank", SMALL, identity.as_dict(), in_process(str(tiny_model_dir), SMALL, model, tokenizer),
                  on_done=stop_after_two)
    saved = PromptBank.load(tmp_path / "bank", identity.as_dict())
    assert saved.ids() == sorted([jobs[0].id, jobs[1].id])  # a bank lists its prompts by id
    first = saved.get(jobs[0].id).values.copy()
    events = []
    bank = tune_bank(jobs, tmp_path / "bank", SMALL, identity.as_dict(),
                     in_process(str(tiny_model_dir), SMALL, model, tokenizer),
                     on_done=lambda p, reused: events.append((p.id, reused)))
    assert events == [(jobs[0].id, True), (jobs[1].id, True), (jobs[2].id, False), (jobs[3].id, False)]
    np.testing.assert_array_equal(bank.get(jobs[0].id).values, first)
    # another setting changes the content address: the prompt is retrained, not reused
    events.clear()
    other = TuneSettings(prompt_length=4, steps=7, batch_size=8)
    tune_bank(jobs[:1], tmp_path / "bank", other, identity.as_dict(), in_process(str(tiny_model_dir), other, model, tokenizer),
              on_done=lambda p, r: events.append(r))
    assert events == [False]


# --- device, precision, accumulation, checkpointing (rospr.tune.device / dtype / micro_batch_size /
# gradient_checkpointing) ------------------------------------------------------------------------

FAST = dict(prompt_length=8, steps=5, batch_size=8)


@pytest.mark.slow  # a tuning loop of several seconds (the fast tier stays under 90 s; make test runs it)
def test_micro_batches_accumulate_to_the_full_batch(tiny_backbone, animals):
    model, tokenizer, _ = tiny_backbone
    full = tune_prompt(model, tokenizer, animals[0][:64], TuneSettings(**FAST), seed=1)
    for m in (1, 2, 4):  # 8 as 8 x 1, 4 x 2, 2 x 4: each slice padded to its own longest row
        acc = tune_prompt(model, tokenizer, animals[0][:64], TuneSettings(**FAST, micro_batch_size=m), seed=1)
        # float32 summation order only (measured 2e-6 after 5 Adafactor steps)
        np.testing.assert_allclose(acc.values, full.values, atol=1e-5, rtol=0)
        np.testing.assert_allclose(acc.losses, full.losses, atol=1e-5, rtol=0)


@pytest.mark.slow  # a tuning loop of several seconds (the fast tier stays under 90 s; make test runs it)
def test_checkpointing_gives_the_same_prompt(tiny_backbone, animals):
    model, tokenizer, _ = tiny_backbone
    off = tune_prompt(model, tokenizer, animals[0][:64], TuneSettings(**FAST), seed=1)
    on = tune_prompt(model, tokenizer, animals[0][:64], TuneSettings(**FAST, gradient_checkpointing=True), seed=1)
    np.testing.assert_allclose(on.values, off.values, atol=1e-6, rtol=0)  # recomputation is the same arithmetic
    assert not any("forward" in vars(b) for b in model.encoder.block)  # the blocks are restored


def _kept_for_backward(model, checkpoint_blocks: bool, monkeypatch) -> int:
    """Bytes (distinct storages, parameters excluded) the autograd graph keeps after one forward:
    what autograd saves (saved_tensors_hooks) plus the inputs each checkpointed block keeps in their place."""
    import torch

    import rospr.backbone as backbone

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def keep(t):
        if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in params:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    original = backbone._checkpoint

    def spy(fn, *args, **kwargs):
        for x in (*args, *kwargs.values()):
            keep(x)
        return original(fn, *args, **kwargs)

    monkeypatch.setattr(backbone, "_checkpoint", spy)
    core = backbone.PromptedT5(model, checkpoint_blocks=checkpoint_blocks)
    g = torch.Generator().manual_seed(0)
    b, s, p, t = 8, 200, 20, 10  # a long input: the encoder's activations dominate, as in T0's 512 tokens
    ids = torch.randint(5, 4000, (b, s), generator=g)
    tgt = torch.randint(5, 4000, (b, 1, t), generator=g)
    prompt = torch.nn.Parameter(torch.randn(p, model.config.d_model, generator=g))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda x: x):
        hidden, mask = core.encode(ids, torch.ones_like(ids), prompt.expand(b, -1, -1),
                                   torch.ones(b, p, dtype=torch.long))
        loss = -core.token_logprobs(hidden, mask, tgt, torch.ones_like(tgt)).sum()
    loss.backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    return sum(kept.values())


def test_checkpointing_keeps_far_fewer_activations(tiny_backbone, monkeypatch):
    model = tiny_backbone[0]
    whole = _kept_for_backward(model, False, monkeypatch)
    checkpointed = _kept_for_backward(model, True, monkeypatch)
    # measured: 50.0 MB -> 10.3 MB (what stays is each block's input, the [B, H, S, S] position bias
    # they share and the LM head's logits); a 2-layer model, so the saving is well below T0-3B's 24 layers'
    assert checkpointed < 0.3 * whole, (whole, checkpointed)


@pytest.mark.slow  # two tuning loops: 4-7 s (the fast tier stays under 90 s; make test runs it)
def test_bfloat16_tuning_on_the_cpu_learns_close_to_float32(tiny_backbone, tiny_model_dir, animals):
    import torch

    from rospr.tuning import TuneWorker

    model, tokenizer, _ = tiny_backbone
    settings = TuneSettings(prompt_length=8, steps=30, batch_size=8, device="cpu", dtype="bfloat16")
    worker = TuneWorker(str(tiny_model_dir), settings, model, tokenizer)  # the float32 one is not reused
    assert worker.model is not model and next(worker.model.parameters()).dtype == torch.bfloat16
    assert next(model.parameters()).dtype == torch.float32  # the shared model is untouched
    bf16 = tune_prompt(worker.model, worker.tokenizer, animals[0][:64], settings, seed=1)
    f32 = tune_prompt(model, tokenizer, animals[0][:64], TuneSettings(prompt_length=8, steps=30, batch_size=8), seed=1)
    assert bf16.values.dtype == np.float32  # the master copy
    first, last = np.mean(bf16.losses[:5]), np.mean(bf16.losses[-5:])
    assert last < 0.7 * first, (first, last)
    # bfloat16 keeps 8 significant bits (0.4% per rounding); after 30 steps the loss stays within 5% of
    # float32's (measured 4.15 against 4.12, 0.8%), the same trajectory, not a different optimum
    assert abs(last - np.mean(f32.losses[-5:])) < 0.05 * np.mean(f32.losses[-5:])
    assert abs(bf16.losses[0] - f32.losses[0]) < 0.01 * f32.losses[0]  # the same first batch, rounded


def test_a_model_elsewhere_is_refused_not_moved(tiny_backbone, animals):
    model, tokenizer, _ = tiny_backbone
    with pytest.raises(ValueError, match="place_backbone"):
        tune_prompt(model, tokenizer, animals[0][:8], TuneSettings(**FAST, dtype="bfloat16"), seed=1)


def test_settings_that_cannot_work_are_refused_with_the_fix(monkeypatch):
    import torch

    from rospr.tuning import resolve_device

    with pytest.raises(ValueError, match=r"rospr.tune.micro_batch_size=5 does not divide rospr.tune.batch_size=32; "
                                         r"give a divisor of it \(1, 2, 4, 8, 16, 32\)"):
        TuneSettings(micro_batch_size=5)
    with pytest.raises(ValueError, match="rospr.tune.device='gpu0': give cpu, cuda or cuda:N"):
        TuneSettings(device="gpu0")
    with pytest.raises(ValueError, match="rospr.tune.dtype='float16': choose float32 or bfloat16"):
        TuneSettings(dtype="float16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="rospr.tune.device=cuda: torch sees no GPU here .*set rospr.tune.device=cpu"):
        resolve_device(TuneSettings(device="cuda"))
    # a machine with 2 GPUs without bfloat16 (a V100, say)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    with pytest.raises(ValueError, match=r"rospr.tune.device=cuda:2: only 2 GPU\(s\) visible \(cuda:0..cuda:1\)"):
        resolve_device(TuneSettings(device="cuda:2"))
    with pytest.raises(ValueError, match="rospr.tune.dtype=bfloat16: Tesla V100 has no bfloat16 .*rospr.tune.dtype=float32"):
        resolve_device(TuneSettings(device="cuda:1", dtype="bfloat16"))
    assert str(resolve_device(TuneSettings(device="cuda:1"))) == "cuda:1"
    assert str(resolve_device(TuneSettings(device="cpu", dtype="bfloat16"))) == "cpu"  # bfloat16 on the CPU: allowed


@pytest.mark.parametrize("field, value, words", [
    ("steps", 10**7 + 1, "rospr.tune.steps must be >= 1 and <= 10000000"),
    ("batch_size", 0, "rospr.tune.batch_size must be >= 1"),
    ("batch_size", 10**6, "rospr.tune.batch_size must be >= 1 and <= 65536"),
    ("prompt_length", 5000, "rospr.tune.prompt_length must be >= 1 and <= 4096"),
    ("prompt_length", 2.5, "rospr.tune.prompt_length must be >= 1 and <= 4096 \\(a whole number\\), got 2.5"),
    ("max_input_tokens", 10**6, "rospr.tune.max_input_tokens must be >= 1 and <= 65536"),
    ("threads", 4096, "rospr.tune.threads must be >= 1 and <= 1024"),
    ("seed", -1, r"rospr.tune.seed must be >= 0 and < 2\*\*63"),
    ("lr", 0.0, r"rospr.tune.lr must be a finite number in \(0, 100\], got 0.0"),
    ("lr", float("nan"), r"rospr.tune.lr must be a finite number in \(0, 100\], got nan"),
    ("lr", float("inf"), r"rospr.tune.lr must be a finite number"),
    ("lr", 1e3, r"rospr.tune.lr must be a finite number in \(0, 100\]"),
    ("weight_decay", -1e-5, r"rospr.tune.weight_decay must be a finite number in \[0, 1\]"),
    ("clip_threshold", 0.0, r"rospr.tune.clip_threshold must be a finite number in \(0, 1e\+06\]"),
    ("adafactor_decay_rate", 0.8, r"rospr.tune.adafactor_decay_rate must be a finite number in \[-1, 0\)"),
])
def test_settings_out_of_bounds_are_refused_naming_the_field(field, value, words):
    with pytest.raises(ValueError, match=words):
        TuneSettings(**{field: value})


def test_settings_at_their_bounds_are_accepted():
    TuneSettings(steps=10**7, batch_size=65536, prompt_length=4096, lr=100.0, weight_decay=1.0, seed=0,
                 adafactor_decay_rate=-1.0, threads=1024, max_input_tokens=65536, max_target_tokens=65536)
    TuneSettings(lr=1e-6, steps=1, batch_size=1, prompt_length=1, weight_decay=0)


def test_config_refuses_out_of_bounds_tune_keys():
    from rospr_harness.config import TuneConfig

    with pytest.raises(ValueError, match="rospr.tune.steps must be >= 1 and <= 10000000"):
        TuneConfig(steps=10**8)
    with pytest.raises(ValueError, match="rospr.tune.lr must be a finite number"):
        TuneConfig(lr=float("inf"))


def test_speed_settings_keep_the_content_address_precision_changes_it():
    job = _jobs(4)[0]
    backbone = {"model_type": "t5"}
    base = job.train_key(TuneSettings(), backbone)
    for same in (dict(micro_batch_size=8), dict(gradient_checkpointing=True), dict(device="cpu"), dict(threads=4)):
        assert job.train_key(TuneSettings(**same), backbone) == base, same
    assert job.train_key(TuneSettings(dtype="bfloat16"), backbone) != base
    assert "dtype" not in TuneSettings().training_fields()  # float32 banks keep the keys they had


def test_config_keys_reach_the_settings():
    from rospr_harness.config import TuneConfig
    from rospr_harness.method.tune_pool import tune_settings

    tune = TuneConfig(dtype="bfloat16", micro_batch_size=8, gradient_checkpointing=True)
    s = tune.settings()
    assert (s.dtype, s.micro_batch_size, s.gradient_checkpointing, s.device) == ("bfloat16", 8, True, None)
    assert tune_settings(tune, "cuda:1").device == "cuda:1"  # null follows model.device
    assert tune_settings(TuneConfig(num_gpus_per_worker=1), "cpu").device == "cuda"  # an actor's own GPU
    assert tune_settings(TuneConfig(device="cpu"), "cuda").device == "cpu"
    with pytest.raises(ValueError, match="rospr.tune.micro_batch_size"):
        TuneConfig(batch_size=32, micro_batch_size=3)


def test_worker_counts_follow_cpu_and_gpu_slots():
    from rospr_harness.method.tune_pool import n_workers

    assert n_workers(10, {"CPU": 16, "GPU": 4}, 1, 1, None) == 4  # N GPUs: N actors
    assert n_workers(10, {"CPU": 16, "GPU": 4}, 1, 0.5, None) == 8
    assert n_workers(3, {"CPU": 16, "GPU": 4}, 1, 1, None) == 3  # no more than the jobs
    assert n_workers(10, {"CPU": 16}, 4, 0, None) == 4  # CPU actors: threads each
    assert n_workers(10, {"CPU": 16, "GPU": 8}, 4, 1, None) == 4  # CPUs bind before GPUs


KILLED_TUNING = """
import os, signal, sys
import numpy as np
from rospr_harness.tasks import get_task
from rospr_harness.tasks.base import DataSettings
from rospr.softprompt import bank_store, entry_name
from rospr.tuning import TuneJob, TuneResult, TuneSettings, tune_bank

root, backbone = sys.argv[1], {"name": "fake", "config_hash": "c", "d_model": 8, "vocab_size": 10,
                               "n_parameters": 1, "weights": "w" * 16}
task = get_task("builtin/animals", DataSettings())
jobs = [TuneJob("builtin/animals", p, (), tuple(task.load(p, split="train", limit=4).examples)) for p in task.prompts()[:3]]

def train(todo, save):
    for i, job in enumerate(todo):
        if i == 2:  # the third prompt: killed while its entry is being written
            stage = bank_store(root).stage(entry_name(job.id))
            stage.write_bytes("prompt.safetensors", b"half a prompt")
            os.kill(os.getpid(), signal.SIGKILL)
        save(job.id, TuneResult(np.full((2, 8), i + 1, np.float32), [1.0, 0.5], i))

tune_bank(jobs, root, TuneSettings(prompt_length=2, steps=2), backbone, train)
"""


def test_a_killed_tuning_keeps_every_finished_prompt_and_resumes(tmp_path):
    """A tuning process killed (SIGKILL) after two prompts were published and while the third was
    being written: the two are kept and reused, never retrained; the third's half-written stage is
    swept and the third trained."""
    import subprocess
    import sys

    import numpy as np

    from rospr.tuning import TuneResult

    root = tmp_path / "bank"
    done = subprocess.run([sys.executable, "-c", KILLED_TUNING, str(root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr
    backbone = {"name": "fake", "config_hash": "c", "d_model": 8, "vocab_size": 10, "n_parameters": 1, "weights": "w" * 16}
    task = get_task("builtin/animals", DataSettings())
    jobs = [TuneJob("builtin/animals", p, (), tuple(task.load(p, split="train", limit=4).examples))
            for p in task.prompts()[:3]]
    assert PromptBank.load(root, backbone).ids() == sorted(j.id for j in jobs[:2])
    assert any(p.name.startswith(".stage-") for p in (root / "prompts").iterdir())  # the killed writer's stage
    trained = []

    def train(todo, save):
        for job in todo:
            trained.append(job.id)
            save(job.id, TuneResult(np.full((2, 8), 9, np.float32), [1.0, 0.5], 0))

    bank = tune_bank(jobs, root, TuneSettings(prompt_length=2, steps=2), backbone, train)
    assert trained == [jobs[2].id]  # the finished ones are reused
    assert [float(bank.get(j.id).values[0, 0]) for j in jobs] == [1.0, 2.0, 9.0]
    assert not any(p.name.startswith(".") for p in (root / "prompts").iterdir())  # the dead stage swept


# -- the rows of each step: step_batches, length_grouped_epoch (group_by_length) ---------------------
def pairs_of(lengths: list[int]) -> list[tuple[list[int], list[int]]]:
    return [([5] * n, [1]) for n in lengths]


def mixed_lengths(n: int, seed: int = 7) -> list[int]:
    return np.random.default_rng(seed).integers(1, 300, n).tolist()


def test_a_length_grouped_epoch_covers_every_row_once_in_batches_of_similar_length():
    lengths = mixed_lengths(1000)
    batches = length_grouped_epoch(lengths, 8, np.random.default_rng(0))
    rows = [i for b in batches for i in b]
    assert sorted(rows) == list(range(1000))  # every row exactly once
    assert sorted(len(b) for b in batches)[1:] == [8] * (len(batches) - 1)  # one short batch at most: 1000 = 125 x 8
    # within a mega-batch rows are sorted by length: a batch's rows are neighbours in that order
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert max(spread) < 50 and sum(spread) / len(spread) < 10  # against ~300 for a random batch


def test_the_epoch_keeps_one_short_batch_when_the_batch_does_not_divide_the_rows():
    n = 8 * MEGA_BATCHES + 3  # two mega-batches, the second of 3 rows
    batches = length_grouped_epoch(mixed_lengths(n), 8, np.random.default_rng(1))
    assert sorted(len(b) for b in batches) == [3] + [8] * MEGA_BATCHES
    assert sorted(i for b in batches for i in b) == list(range(n))


def test_grouped_steps_are_deterministic_for_a_seed_and_differ_across_seeds():
    pairs = pairs_of(mixed_lengths(100))
    settings = TuneSettings(batch_size=10, group_by_length=True)

    def steps(seed: int) -> list[list[int]]:
        return list(itertools.islice(step_batches(pairs, settings, seed), 30))  # three epochs

    assert steps(3) == steps(3)
    assert steps(3) != steps(4)
    for epoch in range(3):  # each epoch of 10 batches holds every row once
        assert sorted(i for b in steps(3)[10 * epoch: 10 * (epoch + 1)] for i in b) == list(range(100))


def test_ungrouped_steps_are_the_shuffle_tuning_always_drew():
    pairs = pairs_of(mixed_lengths(10))
    settings = TuneSettings(batch_size=4)
    rng = np.random.default_rng(5)  # the earlier tuner's loop, written out: epochs stitched, 4 rows a step
    order = rng.permutation(10).tolist() + rng.permutation(10).tolist()
    expected = [order[k: k + 4] for k in range(0, 20, 4)]
    assert list(itertools.islice(step_batches(pairs, settings, 5), 5)) == expected


def test_grouping_enters_the_train_key_only_when_on():
    off = TuneSettings()
    assert "group_by_length" not in off.training_fields()  # banks tuned before the setting keep their keys
    assert TuneSettings(group_by_length=True).training_fields()["group_by_length"] is True
