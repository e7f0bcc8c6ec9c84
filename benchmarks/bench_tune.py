"""Our prompt tuning (``rospr.tuning.tune_prompt``) against peft's prompt tuning, side by side in one process.

Both train a P x D soft prompt on the same frozen model, the same rows, the same batches (our
shuffle, our tokenisation, each batch padded to its longest row), the same optimizer (our Adafactor
of ``rospr.tuning``, lr 0.3) and the same start (our init copied into peft's prompt encoder):

- ours: ``tune_prompt`` as a run calls it (``PromptedT5``: the decoder packed to real tokens, the LM
  head on real target tokens only), each step timed from its ``on_step`` callback;
- peft: ``get_peft_model(model, PromptTuningConfig(SEQ_2_SEQ_LM, num_transformer_submodules=1))`` and a
  plain torch loop: ``loss = peft_model(input_ids, attention_mask, labels).loss`` (Hugging Face's mean
  cross-entropy over the target tokens, the normalisation of ours), backward, step. One submodule:
  peft's seq2seq default of 2 would add P rows that prompt tuning never reads, and Adafactor's
  factored statistics of a [2P, D] matrix differ from those of [P, D].

After one untimed run of each (the first time a batch shape is seen costs more), runs alternate
(ours, peft, ours, peft, ...) so the machine's noise falls on both; each run's first ``--warmup``
steps are left out of the step time (median). Reported per variant, with gradient
checkpointing off and on: step time, target tokens per second, MFU (the step's useful FLOPs, forward
plus the backward that only needs input gradients, counted analytically from the real token counts,
over the float32 GEMM rate measured in this process on this model's own matmul shapes), peak memory
(a fresh process per variant: its peak RSS, reset before the first step, over the RSS then; the
CUDA allocator's peak on a GPU), the losses of the first steps (ours and peft's must agree), and where time goes
(``torch.profiler``, top operators by self CPU time). The ratio (peft's median step over ours) comes
with its spread: run r of peft over run r of ours, min / median / max over the ``--repeats``.

    python -m rospr_bench.bench_tune [--model small] [--steps 8] [--batch-size 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time

from rospr.errors import StateError
from rospr_bench.common import RESULTS, non_negative_int, positive_int, write_result, save_figure, script_logging
from rospr_bench.workload import model_dir

log = logging.getLogger(__name__)
SOURCES = ("builtin/animals", "builtin/nli", "builtin/sentiment", "builtin/topic", "builtin/fruit_choice")
VARIANTS = ("ours", "peft")


def check_peft_installed() -> None:
    """Refuse (``ValueError``, before any work) when peft is not installed."""
    import importlib.util

    if importlib.util.find_spec("peft") is None:
        raise ValueError("the tune benchmark needs peft (the peer it is measured against): pip install -e '.[test]'")


def rows(n: int):
    """``n`` labelled training examples, round-robin over the built-in tasks' first prompts."""
    from rospr_harness.tasks import get_task
    from rospr_harness.tasks.base import DataSettings

    per_task = []
    for name in SOURCES:
        task = get_task(name, DataSettings())
        data = task.load(task.prompts()[0], split="train", limit=n, training=True)
        per_task.append([ex for ex in data.examples if ex.labelled or ex.target_text])
    out = [ex for group in zip(*per_task) for ex in group]
    if len(out) < n:
        raise ValueError(f"--rows {n}: the built-in tasks give {len(out)} training rows; ask for fewer")
    return out[:n]


def settings_for(args, checkpointing: bool):
    from rospr.tuning import TuneSettings

    return TuneSettings(prompt_length=args.prompt_length, steps=args.steps, batch_size=args.batch_size,
                        threads=args.threads, gradient_checkpointing=checkpointing, device=args.device)


def batch_plan(tokenizer, examples, settings, seed: int):
    """What ``tune_prompt`` draws with ``seed``: its tokenised pairs, the rows of each step (its
    shuffle) and the pad id; ``_batch(pairs, idx, pad)`` makes a step's padded tensors."""
    import itertools

    from rospr.tuning import _encode_pairs, step_batches

    pairs = _encode_pairs(tokenizer, examples, settings)
    steps = list(itertools.islice(step_batches(pairs, settings, seed), settings.steps))
    return pairs, steps, tokenizer.pad_token_id or 0


def batches(tokenizer, examples, settings, seed: int):
    """The padded batches ``tune_prompt`` trains on with ``seed``, one per step."""
    from rospr.tuning import _batch

    pairs, steps, pad = batch_plan(tokenizer, examples, settings, seed)
    return [_batch(pairs, idx, pad) for idx in steps]


def step_flops(cfg, batch, p: int) -> float:
    """Useful FLOPs of one training step: forward (``rospr.flops.score_row`` per row, real tokens only)
    plus backward, which needs the input gradient of every matmul (as many FLOPs as its forward) and no
    weight gradient (the backbone is frozen): 2 x forward. Recomputation under checkpointing is not
    useful work and is not counted."""
    from rospr.flops import ModelShape, score_row

    shape = ModelShape.from_config(cfg.to_dict())
    _, am, _, tm = batch
    return 2.0 * sum(score_row(shape, int(s), p, [int(t)]) for s, t in zip(am.sum(-1), tm[:, 0].sum(-1)))


def gemm_rate(cfg, tokens: int, threads: int, repeats: int = 5) -> dict:
    """Best float32 matmul rate (FLOP/s) on the model's own shapes: ``tokens`` rows through the
    attention projections, the feed-forward and the LM head."""
    import torch

    torch.set_num_threads(threads)
    inner, d = cfg.num_heads * cfg.d_kv, cfg.d_model
    shapes = {"qkvo": (tokens, d, inner), "ff_in": (tokens, d, cfg.d_ff), "ff_out": (tokens, cfg.d_ff, d),
              "lm_head": (max(64, tokens // 16), d, cfg.vocab_size)}
    by_shape = {}
    for name, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        t = time.perf_counter()
        torch.matmul(a, b)
        loops = max(1, int(0.05 / max(time.perf_counter() - t, 1e-6)))  # ~50 ms per timing: small shapes too
        best = 0.0
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(loops):
                torch.matmul(a, b)
            best = max(best, 2.0 * m * k * n * loops / (time.perf_counter() - t))
        by_shape[f"{name} {m}x{k}x{n}"] = best
    return {"flops_per_s": max(by_shape.values()), "by_shape": by_shape, "threads": threads}


def peft_model(path, settings, init, device):
    """A fresh copy of the backbone wrapped by peft's prompt tuning, its prompt set to ``init``."""
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    base = AutoModelForSeq2SeqLM.from_pretrained(path).to(device)
    if settings.gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    pm = get_peft_model(base, PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=init.shape[0],
                                                 num_transformer_submodules=1))
    with torch.no_grad():
        pm.prompt_encoder["default"].embedding.weight.copy_(init.to(device))
    # Hugging Face checkpoints only in training mode; with dropout 0 (these models) train() changes no number
    pm.train() if settings.gradient_checkpointing else pm.eval()
    return pm


def peft_loop(pm, settings, plan, device, on_step):
    """peft's prompt tuning, a plain torch loop over ``plan`` (``batch_plan``; each step's batch
    collated in the step, as ours is): returns the losses."""
    from rospr.tuning import _batch, _optimizer

    param = pm.prompt_encoder["default"].embedding.weight
    opt = _optimizer(param, settings)
    losses = []
    pairs, steps, pad = plan
    for step, idx in enumerate(steps):
        ids, am, tgt, tm = _batch(pairs, idx, pad)
        labels = tgt[:, 0].masked_fill(tm[:, 0] == 0, -100).to(device)
        loss = pm(input_ids=ids.to(device), attention_mask=am.to(device), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        on_step(step, losses[-1])
    return losses


class Clock:
    """Step times from ``on_step`` callbacks: the time since the previous step ended."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.last = time.perf_counter()

    def __call__(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        self.times.append(now - self.last)
        self.last = now


def setup(variant: str, ctx: dict, settings):
    """Everything before ``variant``'s first step (peft: a fresh copy of the backbone wrapped, the
    batches made); returns ``go(clock)``, which trains and returns the losses."""
    from rospr.tuning import tune_prompt

    if variant == "ours":
        return lambda clock: tune_prompt(ctx["model"], ctx["tok"], ctx["rows"], settings, ctx["seed"],
                                         on_step=clock).losses
    pm = peft_model(ctx["path"], settings, ctx["init"], ctx["device"])
    plan = batch_plan(ctx["tok"], ctx["rows"], settings, ctx["seed"])  # tokenised before the clock (ours: in step 0)
    return lambda clock: peft_loop(pm, settings, plan, ctx["device"], clock)


def train_once(variant: str, ctx: dict, settings, clock=None) -> list[float]:
    """One training run of ``variant`` (``ours`` or ``peft``) with ``settings``; returns its losses.
    The clock starts at the call of the training function (ours tokenises inside it: counted)."""
    go = setup(variant, ctx, settings)
    clock = clock or Clock()
    clock.last = time.perf_counter()
    return go(clock)


def context(args) -> dict:
    import torch

    from rospr.backbone import load_backbone
    from rospr.tuning import init_prompt, place_backbone

    torch.set_num_threads(args.threads)
    path = model_dir(args.model)
    model, tok, _ = load_backbone(path)
    settings = settings_for(args, False)
    model = place_backbone(model, settings)
    seed = 0
    return {"path": path, "model": model, "tok": tok, "rows": rows(args.rows), "seed": seed,
            "device": next(model.parameters()).device, "init": init_prompt(model, settings, seed)}


def profile(variant: str, ctx: dict, settings, top: int = 12) -> list[dict]:
    """Top operators by self CPU time over a short run of ``variant``."""
    from dataclasses import replace

    from torch.profiler import ProfilerActivity, profile as torch_profile

    short = replace(settings, steps=min(3, settings.steps))
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train_once(variant, ctx, short)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1e3 / short.steps, 2),
             "share": round(e.self_cpu_time_total / total, 4), "calls_per_step": e.count / short.steps}
            for e in events[:top]]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise StateError("/proc/self/status has no VmHWM line: peak memory cannot be read here")


def memory_probe(args) -> dict:
    """Peak memory of one short run of ``args.probe`` in this (fresh) process."""
    import torch

    checkpointing = args.probe_checkpointing
    ctx = context(args)
    settings = settings_for(args, checkpointing)
    from dataclasses import replace

    settings = replace(settings, steps=min(2, settings.steps))
    go = setup(args.probe, ctx, settings)  # the weights (peft: its own copy) are loaded before the baseline
    if ctx["device"].type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        go(Clock())
        return {"peak_bytes": torch.cuda.max_memory_allocated() - before, "how": "cuda max_memory_allocated"}
    before = _rss_bytes()
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset the peak RSS (VmHWM), so loading does not count
        fh.write("5")
    go(Clock())
    peak = _peak_rss_bytes()
    return {"peak_bytes": max(0, peak - before), "how": "peak RSS (VmHWM, reset before the first step) over the "
                                                        "RSS before it (fresh process)"}


def probe_in_subprocess(args, variant: str, checkpointing: bool) -> dict:
    cmd = [sys.executable, "-m", "rospr_bench.bench_tune", "--model", args.model, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size), "--rows", str(args.rows), "--prompt-length", str(args.prompt_length),
           "--threads", str(args.threads), "--probe", variant] + (["--probe-checkpointing"] if checkpointing else [])
    if args.device:
        cmd += ["--device", args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe {variant} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from transformers import AutoConfig

    ctx = context(args)
    cfg = AutoConfig.from_pretrained(ctx["path"])
    p = args.prompt_length
    data = batches(ctx["tok"], ctx["rows"], settings_for(args, False), ctx["seed"])
    flops = [step_flops(cfg, b, p) for b in data]
    targets = [int(b[3].sum()) for b in data]
    tokens = max(int(b[1].sum()) + p * b[0].shape[0] for b in data)
    rate = gemm_rate(cfg, tokens, args.threads)
    log.info("GEMM rate on the model's shapes: %.1f GFLOP/s", rate["flops_per_s"] / 1e9)
    results = {}
    for checkpointing in (False, True):
        settings = settings_for(args, checkpointing)
        times = {v: [] for v in VARIANTS}
        per_run = {v: [] for v in VARIANTS}  # each run's median step: the spread between runs
        losses = {}
        for variant in VARIANTS:  # untimed: the first time a shape is seen costs more (kernel and allocator set-up)
            train_once(variant, ctx, settings)
        for r in range(args.repeats):
            for variant in VARIANTS:  # A B A B: the machine's drift falls on both
                clock = Clock()
                got = train_once(variant, ctx, settings, clock)
                losses.setdefault(variant, got)
                times[variant] += clock.times[args.warmup:]
                per_run[variant].append(statistics.median(clock.times[args.warmup:]))
                log.info("checkpointing %s, run %d, %s: median step %.3f s, first losses %s", checkpointing, r,
                         variant, statistics.median(clock.times[args.warmup:] or clock.times), got[:3])
        measured = [i for i in range(args.steps) if i >= args.warmup]
        mean_flops = statistics.mean(flops[i] for i in measured)
        mean_targets = statistics.mean(targets[i] for i in measured)
        for variant in VARIANTS:
            step = statistics.median(times[variant])
            results[f"{variant}{'_ckpt' if checkpointing else ''}"] = {
                "variant": variant, "gradient_checkpointing": checkpointing, "median_step_s": step,
                "step_times_s": times[variant], "target_tokens_per_s": mean_targets / step,
                "model_flops_per_step": mean_flops, "mfu": mean_flops / step / rate["flops_per_s"],
                "losses": losses[variant], "run_median_step_s": per_run[variant],
            }
        # run r of peft over run r of ours (they ran back to back): the ratio's spread over repeats
        results[f"ratio{'_ckpt' if checkpointing else ''}_by_run"] = [
            p / o for o, p in zip(per_run["ours"], per_run["peft"])]
    spread = {ck: results.pop(f"ratio{suffix}_by_run") for ck, suffix in (("off", ""), ("on", "_ckpt"))}
    for key, row in results.items():
        if row["mfu"] > 1.0:
            raise RuntimeError(f"{key}: MFU {row['mfu']:.2f} over 100%: the FLOP count or the GEMM rate is wrong")
    for key, row in results.items():
        row["peak_memory_bytes"] = probe_in_subprocess(args, row["variant"], row["gradient_checkpointing"])[
            "peak_bytes"] if args.memory else None
        if args.memory:
            log.info("%s: peak memory %.1f MB", key, row["peak_memory_bytes"] / 2**20)
    diffs = {ck: max(abs(a - b) for a, b in zip(results[f"ours{ck}"]["losses"], results[f"peft{ck}"]["losses"]))
             for ck in ("", "_ckpt")}
    return {
        "model": args.model, "rows": args.rows, "batch_size": args.batch_size, "steps": args.steps,
        "warmup": args.warmup, "repeats": args.repeats, "prompt_length": p, "threads": args.threads,
        "optimizer": "adafactor lr 0.3 (rospr.tuning defaults)", "gemm": rate, "variants": results,
        "max_loss_difference": {"off": diffs[""], "on": diffs["_ckpt"]},
        "ratio_peft_over_ours": {"off": results["peft"]["median_step_s"] / results["ours"]["median_step_s"],
                                 "on": results["peft_ckpt"]["median_step_s"] / results["ours_ckpt"]["median_step_s"]},
        "ratio_by_run": {ck: {"runs": r, "min": min(r), "median": statistics.median(r), "max": max(r)}
                         for ck, r in spread.items()},
        "profile": {v: profile(v, ctx, settings_for(args, False)) for v in VARIANTS} if args.profile else {},
    }


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = result["variants"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for key, style in (("ours", "o-"), ("peft", "x--")):
        axes[0].plot(v[key]["losses"], style, label=key)
    axes[0].set_title("loss per step (checkpointing off)")
    axes[0].set_xlabel("step")
    keys = ["ours", "peft", "ours_ckpt", "peft_ckpt"]
    labels = ["ours", "peft", "ours\n+ckpt", "peft\n+ckpt"]
    colors = ["tab:blue", "tab:orange"] * 2
    axes[1].bar(labels, [v[k]["median_step_s"] for k in keys], color=colors)
    for i, k in enumerate(keys):
        axes[1].text(i, v[k]["median_step_s"], f"MFU {100 * v[k]['mfu']:.0f}%", ha="center", va="bottom", fontsize=8)
    axes[1].set_title("median step time (s)")
    axes[2].bar(labels, [(v[k]["peak_memory_bytes"] or 0) / 2**20 for k in keys], color=colors)
    axes[2].set_title("peak memory over the loaded model (MB)")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend()
    r = result["ratio_peft_over_ours"]
    fig.suptitle(f"{result['model']} model, batch {result['batch_size']}, P={result['prompt_length']}: peft step / "
                 f"ours = {r['off']:.3f}x (runs {result['ratio_by_run']['off']['min']:.3f}-"
                 f"{result['ratio_by_run']['off']['max']:.3f}; checkpointing on: {r['on']:.3f}x); GEMM "
                 f"{result['gemm']['flops_per_s'] / 1e9:.0f} GFLOP/s, {result['threads']} threads")
    save_figure(fig, path)


def add_cli_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="small", choices=["tiny", "small"])
    ap.add_argument("--steps", type=positive_int, default=8, help="steps per run")
    ap.add_argument("--warmup", type=non_negative_int, default=2, help="first steps of each run left out of its time")
    ap.add_argument("--repeats", type=positive_int, default=5, help="runs of each variant, alternating")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--rows", type=positive_int, default=64, help="training rows (built-in tasks)")
    ap.add_argument("--prompt-length", type=positive_int, default=100)
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    ap.add_argument("--no-memory", dest="memory", action="store_false", help="skip the peak-memory probes")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler runs")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--probe", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: one memory probe, JSON out
    ap.add_argument("--probe-checkpointing", action="store_true", help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(ap)
    args = ap.parse_args(argv)
    if args.warmup >= args.steps:
        ap.error(f"--warmup {args.warmup} leaves no timed step of --steps {args.steps}; give fewer warm-up steps")
    args.threads = args.threads or os.cpu_count() or 1
    check_peft_installed()
    if args.probe:
        result = memory_probe(args)
        sys.stdout.write(json.dumps(result) + "\n")
        return result
    result = run(args)
    path = write_result("tune", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    script_logging("transformers", "torch", "peft")
    main()
