"""Length-grouped tuning batches (``rospr.tune.group_by_length``) against shuffled ones, ours and peft's.

For each setting (off, on):

- the tokens of a whole tuning job (``--count-steps`` steps, the paper's 1000 by default) on the
  benchmark's rows: the rows' real input tokens against the tokens the encoder runs once each
  micro-batch is padded to its longest input, counted by ``rospr plan``'s own
  ``harness/runner/estimate.tuning_cost`` (the tuner's batches replayed), with its FLOPs;
- the step time on the tiny or small model, ours (``rospr.tuning.tune_prompt``) against peft's prompt
  tuning on the same batches (``bench_tune``'s loops and clock, reused), runs alternating
  ours-off, peft-off, ours-on, peft-on so the machine's drift falls on all four; each run's first
  ``--warmup`` steps left out, the median step reported, with the padded input tokens of the steps timed.

The rows are ``bench_tune.rows`` (the built-in tasks' training rows, round-robin: mixed lengths).

    python -m rospr_bench.bench_grouping [--model small] [--steps 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
from dataclasses import replace

from rospr_bench.bench_tune import VARIANTS, Clock, batch_plan, check_peft_installed, context, settings_for, train_once
from rospr_bench.common import RESULTS, non_negative_int, positive_int, script_logging, write_result

log = logging.getLogger(__name__)
SETTINGS = {"off": False, "on": True}


def token_counts(ctx: dict, settings, steps: int) -> dict:
    """Real and padded input tokens, and FLOPs, of ``steps`` steps of tuning on ``ctx``'s rows."""
    from transformers import AutoConfig

    from rospr.flops import ModelShape
    from rospr.tuning import _encode_pairs
    from rospr_harness.runner.estimate import tuning_cost

    shape = ModelShape.from_config(AutoConfig.from_pretrained(ctx["path"]).to_dict())
    pairs = _encode_pairs(ctx["tok"], ctx["rows"], settings)
    cost = tuning_cost(shape, pairs, replace(settings, steps=steps), ctx["seed"])
    return {"steps": steps, "input_tokens": cost.input_tokens, "padded_input_tokens": cost.padded_input_tokens,
            "padding_fraction": 1 - cost.input_tokens / cost.padded_input_tokens, "flops": cost.flops.total}


def timed_tokens(ctx: dict, settings, warmup: int) -> int:
    """Padded input tokens of the steps a run times (its steps after ``warmup``)."""
    pairs, steps, _pad = batch_plan(ctx["tok"], ctx["rows"], settings, ctx["seed"])
    return sum(len(idx) * max(len(pairs[i][0]) for i in idx) for idx in steps[warmup:])


def step_times(args, ctx: dict, settings_of: dict) -> dict:
    """Median step time of each (setting, variant), the runs alternating over ``args.repeats``."""
    times = {(g, v): [] for g in settings_of for v in VARIANTS}
    losses = {}
    for g in settings_of:  # untimed: the first time a batch shape is seen costs more
        for v in VARIANTS:
            train_once(v, ctx, settings_of[g])
    for r in range(args.repeats):
        for g in settings_of:
            for v in VARIANTS:
                clock = Clock()
                losses.setdefault((g, v), train_once(v, ctx, settings_of[g], clock))
                times[(g, v)] += clock.times[args.warmup:]
                log.info("run %d, grouping %s, %s: median step %.3f s", r, g, v,
                         statistics.median(clock.times[args.warmup:]))
    return {g: {v: {"median_step_s": statistics.median(times[(g, v)]), "step_times_s": times[(g, v)],
                    "losses": losses[(g, v)]} for v in VARIANTS} for g in settings_of}


def run(args) -> dict:
    ctx = context(args)
    settings_of = {g: replace(settings_for(args, False), group_by_length=on) for g, on in SETTINGS.items()}
    tokens = {g: token_counts(ctx, s, args.count_steps) for g, s in settings_of.items()}
    times = step_times(args, ctx, settings_of)
    for g, s in settings_of.items():
        times[g]["padded_input_tokens_timed"] = timed_tokens(ctx, s, args.warmup)
        times[g]["peft_over_ours"] = times[g]["peft"]["median_step_s"] / times[g]["ours"]["median_step_s"]
        diff = max(abs(a - b) for a, b in zip(times[g]["ours"]["losses"], times[g]["peft"]["losses"]))
        times[g]["max_loss_difference"] = diff
    return {
        "model": args.model, "rows": args.rows, "batch_size": args.batch_size, "prompt_length": args.prompt_length,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads,
        "load_average": os.getloadavg(), "tokens": tokens, "step_time": times,
        "padded_tokens_on_over_off": tokens["on"]["padded_input_tokens"] / tokens["off"]["padded_input_tokens"],
        "ours_step_on_over_off": times["on"]["ours"]["median_step_s"] / times["off"]["ours"]["median_step_s"],
    }


def add_cli_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="small", choices=["tiny", "small"])
    ap.add_argument("--steps", type=positive_int, default=8, help="steps per timed run")
    ap.add_argument("--warmup", type=non_negative_int, default=2, help="first steps of each run left out of its time")
    ap.add_argument("--repeats", type=positive_int, default=3, help="runs of each (setting, variant), alternating")
    ap.add_argument("--count-steps", type=positive_int, default=1000, help="steps of the token count (a whole job)")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--rows", type=positive_int, default=64, help="training rows (built-in tasks)")
    ap.add_argument("--prompt-length", type=positive_int, default=100)
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    ap.add_argument("--out", default=str(RESULTS))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_cli_args(ap)
    args = ap.parse_args(argv)
    if args.warmup >= args.steps:
        ap.error(f"--warmup {args.warmup} leaves no timed step of --steps {args.steps}; give fewer warm-up steps")
    args.threads = args.threads or os.cpu_count() or 1
    check_peft_installed()
    result = run(args)
    write_result("grouping", result, args.out)
    return result


if __name__ == "__main__":
    script_logging("transformers", "torch", "peft")
    main()
