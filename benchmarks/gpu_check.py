"""The GPU check with only what the machine has: ``rospr bench gpu --no-install``.

For a GPU machine that reaches no package registry. It needs torch (a CUDA build), transformers, numpy
and the checkout (``PYTHONPATH=. python -m benchmarks gpu --no-install`` where rospr is not installed);
the torch backend's part also needs pydantic (its config types). Nothing is downloaded: the model is
built from a T5 config with random weights, and its tokens come from ``IdTokenizer``.

1. **Tuning** on random weights of T0-3B's shape (``rospr.tune_memory.T0_3B``, from bigscience/T0_3B's
   config.json: d_model 2048, d_ff 5120, 24 + 24 layers, 32 heads of d_kv 64, vocabulary 32128,
   gated GELU, untied embeddings; 2.85e9 parameters): ``steps`` steps of ``rospr.tuning.tune_prompt``
   in float32 (the whole batch; the reference) and in bfloat16 with gradient checkpointing and
   micro-batches, the same seed and batches. Per run: the step time (first step apart: kernels,
   allocator), the losses (bfloat16 within 5% of float32, ``TUNING_TOLERANCE``), the peak GPU memory
   against ``rospr.tune_memory.tuning_memory`` for the same settings: the table of docs/tuning.md (P 100, inputs
   of 512, targets of 128 tokens; every row has exactly these lengths), in total and per example.
2. **Plan**: ``rospr plan``'s estimate of that step (``rospr.flops.train_step`` per example, as
   ``harness/runner/estimate.py`` counts a tuning job, divided by the throughput) at the TFLOP/s of a GEMM
   of the model's feed-forward shape measured on the device in the run's dtype (the figure to give
   ``rospr plan --tflops`` there), against the measured step time.
3. **Scores**: the torch backend's ``TorchScorer`` on the device, float32 and bfloat16, against float32
   on the CPU for the same batch (``parity``: ``TOLERANCE`` per dtype, predictions compared where
   float32's margin is decisive).
4. **FAISS on the GPU** (``faiss_check``) where faiss sees a GPU.

Skipped, one line each and named in the JSON's ``skipped`` with the reason: onnxruntime's CUDA provider,
faiss on the GPU and the ONNX export where their packages are missing (the export needs Optimum, whose
optimum-onnx needs transformers < 4.58), and the torch backend's part without pydantic. Where
onnxruntime's CUDA provider and Optimum are present, ``rospr bench gpu`` (without ``--no-install``;
it installs only what is missing) exports the graphs and checks their parity and throughput: that
needs a checkpoint with a tokenizer, which this check does not have.

The JSON's ``ok`` says that the losses, the scores and each peak (within the table plus its ``RESERVE``)
agree; where one does not, ``gpu.json`` is written and the command exits 1. ``device="cpu"`` runs the
same code on the CPU (the tests' stand-in, with ``size="tiny"``).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass

import numpy as np

from rospr.data import Example
from rospr.errors import RosprError, SettingError
from rospr.tune_memory import RESERVE, T0_3B, BackboneShape, largest_micro_batch, tuning_memory
from rospr_bench.common import Timer

log = logging.getLogger(__name__)

# |score - float32 reference| per dtype. float16 0.25, the export's HALF_TOLERANCE (11 significant
# bits, ~5e-4 relative; on logits of ~20 through a dozen layers ~0.05 per token, a few tokens a
# choice); bfloat16 keeps 8 bits, 8x coarser: 2.0; float32 the export's 1e-4 x 10 for the GPU's
# reduction order (TF32 off).
TOLERANCE = {"float32": 1e-3, "float16": 0.25, "bfloat16": 2.0}
# |loss - reference| of a tuning run: float32 absolute; bfloat16 relative to the largest reference loss
# (tests/unit/rospr/test_tuning.py's bfloat16 test)
TUNING_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.05}
# (name, dtype, gradient checkpointing, micro-batches) of the tuning runs; the first is the reference
RUNS = (("float32", "float32", False, False), ("bfloat16 checkpointed", "bfloat16", True, True))
# The paper's bank (configs/paper.yaml, as `rospr plan` counts it): 313 source prompts, 1000 steps each of
# batch 32 (rospr.tune's steps and batch_size there)
BANK_PROMPTS, BANK_STEPS, BANK_BATCH = 313, 1000, 32


class NoGPUError(RosprError, RuntimeError):
    """No NVIDIA GPU is visible: the message says what was looked for and where to run instead."""


def cuda_gpus() -> list[str]:
    """The GPUs ``nvidia-smi -L`` lists; raises ``NoGPUError`` when there is none (or no driver)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise NoGPUError("rospr bench gpu: no NVIDIA GPU here (nvidia-smi is not on PATH); run it on a machine "
                         "with an NVIDIA GPU and its driver")
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoGPUError(f"rospr bench gpu: {smi} -L failed ({exc}); check the NVIDIA driver") from None
    gpus = [line.strip() for line in out.stdout.splitlines() if line.startswith("GPU ")]
    if out.returncode != 0 or not gpus:
        why = (out.stderr or out.stdout).strip().splitlines()[:1] or [f"exit {out.returncode}"]
        raise NoGPUError(f"rospr bench gpu: {smi} -L lists no GPU ({why[0]}); run it on a machine with an "
                         "NVIDIA GPU and its driver")
    return gpus


def parity(ref: list, got: list, tol: float) -> dict:
    """Max |score difference| and prediction agreement of ``got`` against the float32 ``ref`` (one
    array of choice scores per example); predictions whose float32 margin is at most 2 x ``tol``
    are close calls (two scores each off by up to ``tol`` may swap), counted apart."""
    diff = max(float(np.max(np.abs(g.astype(np.float64) - r))) for r, g in zip(ref, got))
    decided = flipped = close = 0
    for r, g in zip(ref, got):
        top = np.sort(r)[::-1]
        margin = float(top[0] - top[1]) if len(top) > 1 else float("inf")
        same = int(np.argmax(r)) == int(np.argmax(g))
        if margin > 2 * tol:
            decided += 1
            flipped += not same
        else:
            close += 1
    return {"max_abs_diff": diff, "tolerance": tol, "decided": decided, "flipped_decided": flipped,
            "close_calls": close, "ok": diff <= tol and flipped == 0}


def faiss_check(dim: int = 512, n_keys: int = 100_000, n_queries: int = 1024, k: int = 10) -> dict:
    """An exact inner-product index on the GPU against the CPU one: same neighbours, query time."""
    import faiss

    rng = np.random.default_rng(0)
    keys = rng.normal(size=(n_keys, dim)).astype(np.float32)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    cpu = faiss.IndexFlatIP(dim)
    cpu.add(keys)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, cpu)
    gpu.search(queries[:8], k)
    with Timer() as t_gpu:
        _, i_gpu = gpu.search(queries, k)
    with Timer() as t_cpu:
        _, i_cpu = cpu.search(queries, k)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(i_gpu, i_cpu)]))
    return {"keys": n_keys, "dim": dim, "queries": n_queries, "gpu_ms_per_query": 1000 * t_gpu.s / n_queries,
            "cpu_ms_per_query": 1000 * t_cpu.s / n_queries, "recall_at_10_vs_cpu": recall}


def timed_tune(model, tokenizer, rows, settings, seed: int = 0):
    """``rospr.tuning.tune_prompt`` with the wall time of each step (the loss read at each step syncs
    the GPU): returns (result, first step's seconds, mean seconds of the others)."""
    from rospr.tuning import tune_prompt

    stamps = [time.perf_counter()]
    result = tune_prompt(model, tokenizer, rows, settings, seed=seed,
                         on_step=lambda step, loss: stamps.append(time.perf_counter()))
    times = [b - a for a, b in zip(stamps, stamps[1:])]
    return result, times[0], sum(times[1:]) / max(1, len(times) - 1)


def _tiny_shape(size: str) -> BackboneShape:
    from rospr_harness.tiny_model import SIZES

    s = SIZES[size]
    return BackboneShape(s["d_model"], s["d_ff"], s["num_heads"], s["d_kv"], s["num_layers"], s["num_layers"],
                         s["vocab_size"])


SHAPES = {"t0-3b": lambda: T0_3B, "tiny": lambda: _tiny_shape("tiny"), "small": lambda: _tiny_shape("small")}
# The tiny size is the tests' (seconds on a CPU): short rows, small batches. The others run T0's lengths.
LENGTHS = {"tiny": dict(prompt_length=8, input_tokens=16, target_tokens=4, batch_size=4, score_examples=4,
                        score_input_tokens=12)}


@dataclass(frozen=True)
class CheckSettings:
    """What the check runs. Lengths are exact (every row has them): those of the memory table in docs/tuning.md
    (P 100, inputs of 512 and targets of 128 tokens; ``of_size``: the tiny size's ``LENGTHS``). Refuses
    an unknown size and micro-batches that do not divide the batch."""

    device: str = "cuda"
    size: str = "t0-3b"
    steps: int = 5
    prompt_length: int = 100
    input_tokens: int = 512
    target_tokens: int = 128
    batch_size: int = BANK_BATCH  # the paper's: the bank's time is this step's
    micro_batch_size: int = 2  # the bfloat16 run's
    score_examples: int = 8
    score_input_tokens: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size not in SHAPES:
            raise SettingError(f"--size {self.size!r}: choose one of {', '.join(SHAPES)}")
        if self.batch_size % self.micro_batch_size:
            raise SettingError(f"micro_batch_size {self.micro_batch_size} does not divide batch_size {self.batch_size}")

    @classmethod
    def of_size(cls, size: str, **fields) -> "CheckSettings":
        """The settings of ``size`` (its ``LENGTHS``), ``fields`` on top."""
        return cls(size=size, **{**LENGTHS.get(size, {}), **fields})


class IdTokenizer:
    """The random model's tokenizer: a text of words ``t<id>`` is those ids. It answers what the
    product's encoders ask (``tokenizer(texts, add_special_tokens=False)["input_ids"]``, the eos and
    pad ids), and gives rows of exact lengths."""

    pad_token_id, eos_token_id = 0, 1

    def __call__(self, texts, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [[int(word[1:]) for word in text.split()] for text in texts]}


def random_examples(n: int, input_tokens: int, target_tokens: int, vocab: int, seed: int,
                    choices: int = 4) -> list[Example]:
    """``n`` examples of ``input_tokens`` random ids, ``choices`` choices of 2 ids and a target of
    ``target_tokens`` - 1 ids (the tuner and the scorer add EOS), for ``IdTokenizer``."""
    rng = np.random.default_rng(seed)

    def words(k: int) -> str:
        return " ".join(f"t{i}" for i in rng.integers(3, vocab, k))  # 0-2: pad, eos, unk

    return [Example("gpu-check", "random", i, words(input_tokens), tuple(words(2) for _ in range(choices)),
                    label=0, target_text=words(target_tokens - 1)) for i in range(n)]


def random_t5(shape: BackboneShape, device: str, seed: int):
    """A T5 v1.1 / T0 model of ``shape`` with random weights (fixed ``seed``), built on ``device``
    in float32, frozen, in eval mode. The LM head is a matrix of its own (transformers 5 ties it to the
    embeddings whatever the config says; T0's is not) of std d_model**-0.5, as harness/tiny_model.py
    scales it, so that logits are O(1) as in a trained T0."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=shape.vocab_size, d_model=shape.d_model, d_ff=shape.d_ff, d_kv=shape.d_kv,
                      num_layers=shape.encoder_layers, num_decoder_layers=shape.decoder_layers,
                      num_heads=shape.num_heads, relative_attention_num_buckets=shape.relative_buckets,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(seed)
    with torch.device(device):  # initialised where it runs: seconds on a GPU for T0-3B, not minutes
        model = T5ForConditionalGeneration(config)
        model.lm_head.weight = torch.nn.Parameter(torch.empty(shape.vocab_size, shape.d_model))
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, shape.d_model ** -0.5)
    return model.eval().requires_grad_(False)


def device_gpus(device: str) -> list[str]:
    """The GPUs ``device`` may use (none for the CPU). Refuses (``NoGPUError``, before torch is imported
    when nvidia-smi finds none) a GPU device where there is no GPU, or where torch cannot use it."""
    if not device.startswith("cuda"):
        return []
    gpus = cuda_gpus()
    import torch

    if not torch.cuda.is_available():
        raise NoGPUError(f"rospr bench gpu: torch {torch.__version__} sees no GPU ({len(gpus)} listed by nvidia-smi): "
                         "a CPU build of torch, or a CUDA build newer than the driver; use a CUDA build of torch")
    return gpus


def gemm_tflops(shape, device: str, dtype: str, seconds: float = 0.5, tokens: int = 2048) -> float:
    """TFLOP/s of the feed-forward GEMM [tokens, d_model] x [d_model, d_ff] on ``device`` in ``dtype``
    (``harness/runner/estimate.measure_tflops`` times the same on the CPU in float32)."""
    import torch

    kind = getattr(torch, dtype)
    a = torch.randn(tokens, shape.d_model, device=device, dtype=kind)
    b = torch.randn(shape.d_model, shape.d_ff, device=device, dtype=kind)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    torch.mm(a, b)
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            torch.mm(a, b)
        sync()
        n += 10
    return 2 * tokens * shape.d_model * shape.d_ff * n / (time.perf_counter() - start) / 1e12


def missing_parts(device: str) -> dict[str, str]:
    """The optional parts this check leaves out, each with why (see the module docstring)."""
    import importlib.util

    out = {}
    try:
        import onnxruntime as ort
    except ImportError:
        out["onnxruntime_cuda"] = "onnxruntime is not installed"
    else:
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            out["onnxruntime_cuda"] = f"onnxruntime {ort.__version__} has no CUDA provider (a CPU build)"
    import transformers
    from packaging.version import Version

    if importlib.util.find_spec("optimum") is None:
        out["export"] = "Optimum is not installed (the export needs optimum-onnx, which needs transformers < 4.58)"
    elif Version(transformers.__version__) >= Version("4.58"):
        out["export"] = f"Optimum's optimum-onnx needs transformers < 4.58; this is {transformers.__version__}"
    for part in ("onnxruntime_cuda", "export"):
        out.setdefault(part, "installed, but the graphs are checked by `rospr bench gpu` without --no-install "
                             "(it installs only what is missing)")
    try:
        import faiss
    except ImportError:
        out["faiss_gpu"] = "faiss is not installed"
    else:
        if not device.startswith("cuda") or not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0:
            out["faiss_gpu"] = f"faiss {faiss.__version__} sees no GPU here (faiss-gpu-cu12 has the GPU index)"
    return out


def _torch_scorer():
    """(the torch backend's ``TorchScorer``, None) or (None, why it cannot be imported here)."""
    try:
        from rospr_harness.backends.torch_backend import TorchScorer
    except ModuleNotFoundError as exc:  # its config types need pydantic, which a bare machine may lack
        return None, f"the torch backend needs {exc.name}, which is not installed (a small wheel: carry it)"
    return TorchScorer, None


def _scores(scorer_class, model, device: str, enc, prompt) -> list:
    """The scores of ``enc`` as one batch by the torch backend on ``device`` (the model moves there)."""
    from rospr.scoring import score_encoded

    return score_encoded(scorer_class(model, device=device), enc, prompt, len(enc))


def _tuning_run(model, tokenizer, rows, s: CheckSettings, shape: BackboneShape, dtype: str, checkpointing: bool,
                micro: int | None) -> dict:
    """One tuning run of ``model`` (already in ``dtype`` on the device): times, losses, peak memory
    against the computed table."""
    import torch

    from rospr.tuning import TuneSettings

    settings = TuneSettings(prompt_length=s.prompt_length, steps=s.steps, batch_size=s.batch_size, device=s.device,
                            dtype=dtype, gradient_checkpointing=checkpointing, micro_batch_size=micro,
                            max_input_tokens=s.input_tokens, max_target_tokens=s.target_tokens)
    on_cuda = s.device.startswith("cuda")
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(s.device)
    result, first, step = timed_tune(model, tokenizer, rows, settings, s.seed)
    peak = torch.cuda.max_memory_allocated(s.device) if on_cuda else None
    table = tuning_memory(shape, s.prompt_length, s.input_tokens, s.target_tokens, dtype, checkpointing)
    table_peak = table.peak(settings.micro_batch)
    # the table plans a GPU's memory less RESERVE: a peak above the table by more than that could run out
    within = None if peak is None else peak <= table_peak / (1 - RESERVE)
    per_example = None if peak is None else (peak - table.weights - table.prompt_state) / settings.micro_batch
    return {"dtype": dtype, "gradient_checkpointing": checkpointing, "micro_batch_size": settings.micro_batch,
            "first_step_s": first, "step_s": step, "losses": result.losses, "peak_memory_bytes": peak,
            "table_peak_bytes": table_peak, "peak_over_table": peak / table_peak if peak else None,
            "peak_within_table_reserve": within, "activations_per_example_bytes": per_example,
            "table_activations_per_example_bytes": table.kept_per_example + table.recompute_per_example}


def _float32_micro(shape: BackboneShape, s: CheckSettings) -> int | None:
    """The float32 run's micro-batch: the whole batch where the table says it fits the GPU (None), else
    the largest that does (``largest_micro_batch``). Refuses a GPU where not one example fits."""
    if not s.device.startswith("cuda"):
        return None
    import torch

    memory = tuning_memory(shape, s.prompt_length, s.input_tokens, s.target_tokens, "float32", False)
    micro = largest_micro_batch(memory, torch.cuda.get_device_properties(s.device).total_memory, s.batch_size)
    if micro == 0:
        raise SettingError(f"--size {s.size}: float32 tuning needs {memory.peak(1) / 1e9:.1f} GB for one example, "
                           "more than this GPU has; choose --size small")
    return None if micro == s.batch_size else micro


def _plan(config, s: CheckSettings, run: dict) -> dict:
    """``rospr plan``'s step time for ``run`` of the model of ``config`` at the GEMM throughput
    measured here, against the measured one."""
    from rospr.flops import ModelShape, train_step

    shape = ModelShape.from_config(config.to_dict())
    flops = s.batch_size * train_step(shape, s.input_tokens, s.prompt_length, s.target_tokens,
                                      run["gradient_checkpointing"]).total
    tflops = gemm_tflops(shape, s.device, run["dtype"])
    estimate = flops / (tflops * 1e12)
    return {"run": run["run"], "flops_per_step": flops, "gemm_tflops": tflops, "estimated_step_s": estimate,
            "measured_step_s": run["step_s"], "measured_over_estimated": run["step_s"] / estimate}


def bank_time(run: dict, s: CheckSettings, device_name: str) -> dict:
    """The paper's bank from one measured step (``run``, at ``s.batch_size`` rows of exactly the
    check's lengths): seconds per prompt (``BANK_STEPS`` steps, scaled to ``BANK_BATCH`` rows where the
    check ran another batch: a step's work is linear in its rows) and hours for ``BANK_PROMPTS``
    prompts on ``device_name``. Measured on this device; every row at 512 + 128 tokens, so an upper
    bound for real rows (``rospr plan`` counts those)."""
    prompt_s = run["step_s"] * BANK_STEPS * BANK_BATCH / s.batch_size
    return {"run": run["run"], "device": device_name, "source": "measured", "batch_size": s.batch_size,
            "step_s": run["step_s"], "prompts": BANK_PROMPTS, "steps": BANK_STEPS, "prompt_s": prompt_s,
            "bank_hours": prompt_s * BANK_PROMPTS / 3600}


def _agreement(runs: list[dict]) -> None:
    """Each run's worst loss difference to the first (float32) run, its tolerance and ``ok``."""
    reference = runs[0]["losses"]
    for run in runs:
        diff = max(abs(a - b) for a, b in zip(run["losses"], reference))
        allowed = TUNING_TOLERANCE[run["dtype"]] * (max(reference) if run["dtype"] == "bfloat16" else 1.0)
        run.update(max_loss_diff=diff, tolerance=allowed, ok=diff <= allowed)


def _skipped(device: str):
    """(the parts left out, each with why, logged one line each; the torch backend's scorer or None)."""
    skipped = missing_parts(device)
    scorer, why = _torch_scorer()
    if why:
        skipped["scores"] = why
    for part, reason in skipped.items():
        log.info("skipped %s: %s", part, reason)
    return skipped, scorer


def _runs(model, shape: BackboneShape, s: CheckSettings, scorer) -> tuple[list[dict], list[dict]]:
    """The tuning runs of ``RUNS`` and, with ``scorer``, each dtype's scores on the device against float32
    on the CPU: the model is placed in each run's dtype in turn (float32 first: the reference)."""
    import torch

    from rospr.scoring import Convention, encode_examples

    tokenizer = IdTokenizer()
    enc = encode_examples(tokenizer, random_examples(s.score_examples, s.score_input_tokens, 2, shape.vocab_size,
                                                     s.seed + 1), Convention())
    prompt = np.random.default_rng(s.seed).standard_normal((s.prompt_length, shape.d_model)).astype(np.float32)
    reference = _scores(scorer, model, "cpu", enc, prompt) if scorer else None
    rows = random_examples(2 * s.batch_size, s.input_tokens, s.target_tokens, shape.vocab_size, s.seed)
    runs, scores = [], []
    for name, dtype, checkpointing, micro_batches in RUNS:
        model.to(device=s.device, dtype=getattr(torch, dtype))
        if scorer:
            got = _scores(scorer, model, s.device, enc, prompt)
            scores.append({"dtype": dtype, "device": s.device, **parity(reference, got, TOLERANCE[dtype])})
        micro = s.micro_batch_size if micro_batches else _float32_micro(shape, s)
        runs.append({"run": name, **_tuning_run(model, tokenizer, rows, s, shape, dtype, checkpointing, micro)})
        peak = runs[-1]["peak_memory_bytes"]
        log.info("tuning %s: %.3f s/step, peak memory %s, the table's %.2f GB", name, runs[-1]["step_s"],
                 "not measured (CPU)" if peak is None else f"{peak / 1e9:.2f} GB", runs[-1]["table_peak_bytes"] / 1e9)
    _agreement(runs)
    return runs, scores


def check(s: CheckSettings) -> dict:
    """Run the check (the module docstring) with settings ``s``; returns the result for gpu.json, whose
    ``ok`` says that the losses, the scores and the peak memory are within their bounds. Refuses
    (``NoGPUError``) a GPU device where there is none, before anything else."""
    start = time.perf_counter()
    gpus = device_gpus(s.device)
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32: the reference and the plan's GEMM
    torch.backends.cudnn.allow_tf32 = False
    skipped, scorer = _skipped(s.device)
    shape = SHAPES[s.size]()
    model = random_t5(shape, s.device, s.seed)
    runs, scores = _runs(model, shape, s, scorer)
    config = model.config
    del model  # the GEMMs and FAISS have the GPU to themselves
    plan = [_plan(config, s, run) for run in runs]
    name = torch.cuda.get_device_name(s.device) if s.device.startswith("cuda") else "cpu"
    bank = bank_time(runs[-1], s, name)  # bfloat16 with checkpointing: how the bank is tuned on a GPU
    log.info("bank: %.1f s per prompt, %.1f hours for %d prompts on %s", bank["prompt_s"], bank["bank_hours"],
             BANK_PROMPTS, name)
    faiss = faiss_check() if "faiss_gpu" not in skipped else None
    ok = all(r["ok"] and r["peak_within_table_reserve"] is not False for r in runs) and all(r["ok"] for r in scores)
    return {"mode": "no-install", "device": s.device, "gpus": gpus, "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "settings": asdict(s),
            "shape": {"size": s.size, **asdict(shape), "n_params": shape.n_params},
            "tuning": {"runs": runs, "losses_agree": all(r["ok"] for r in runs)}, "plan": plan, "bank": bank,
            "scores": {"reference": "float32 on the CPU", "rows": scores} if scorer else None,
            "faiss": faiss, "skipped": skipped, "ok": ok, "seconds": time.perf_counter() - start}
