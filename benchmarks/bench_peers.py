"""Our onnxruntime scorer against two peers on the same model and examples, on four workload shapes.

Peers: (a) a naive per-choice Hugging Face loop in the style of the T0 evaluation scripts, one
forward with ``labels`` per (example, choice), so the encoder runs once per choice; (b)
lm-evaluation-harness (``lm-eval``), its ``hf`` model (seq2seq backend) on the local checkpoint and
a task YAML generated for the same examples (``multiple_choice``, ``target_delimiter: ""``).

Shapes (``SHAPES``, BIG-bench tasks, ``--n`` examples each, 100 by default): ``long``, inputs of 250
to 500 tokens with 2 or 3 choices; ``many``, 5 to 11 choices; ``short``, inputs of at most 100
tokens with 2 choices; ``heldout``, any input up to 500 tokens and any number of choices from the five
of the 14 BIG-bench tasks the other shapes do not use (a held-out-like mix: at 100 examples, 2 to 6
choices, 221 input tokens on average). Inputs over 500 tokens are left out everywhere: lm-eval
left-truncates a context to the model's 512 positions.

**The bound.** Per shape, ``bound`` (``gemm_bound``) is the best whole-process time any scorer of
ours could reach here: our batches' GEMMs at onnxruntime's own MatMul rate plus our fixed cost as
measured; ``fraction_of_bound`` is that time over ours (1.0: nothing left but the fixed cost and
GEMMs at peak). Timings are as noisy as the machine: each shape records ``machine_load``
(``os.getloadavg()`` when it finished).

**Whole process and model only.** Every system runs in a fresh process of its own (``--side``)
that reads the examples from a JSONL file, imports what it needs, loads the model (ours: the
product's backend on the cached export and its onnxruntime session opened, before the model-only
timer, as lm-eval's ``HFLM`` and the naive loop load theirs before theirs) and writes its predictions. The
whole-process time is the parent's wall clock from starting that process to its exit (interpreter
start, imports, model load, tokenising, scoring); the model-only time is measured inside it, from
the texts to the scores: ours ``encode_examples`` + ``score_encoded``; the naive loop its loop,
tokenising included; lm-eval the time inside ``HFLM.loglikelihood`` (its tokenising, batching and
forwards; not its task building or metrics). Ours runs before and after the peers (the mean is
taken, both are recorded), so load that comes and goes during the peers' minutes weighs on both
sides of a ratio.

**When lm-eval's predictions equal ours.** lm-eval's seq2seq model encodes the context with the
tokenizer's special tokens (an EOS after it) and the continuation without them, and moves a
context's trailing whitespace to the front of the continuation (``HFLM._encode_pair``). So its
scores are ours under the convention ``input_eos=True, choice_eos=False`` (summed log-probabilities,
no length normalisation) exactly when the context has no trailing whitespace and the target
delimiter is empty: the ``plain`` format, inputs right-stripped, on which every figure's speed and
the identical-predictions target are measured. On BIG-bench's own format (``bigbench``: the input as
the task renders it, e.g. ending in "A: "), lm-eval scores "…A:" + EOS against " choice" while we
score "…A: " against "choice": the agreement there is reported, not required.

    python -m rospr_bench.bench_peers [--size small] [--n 100] [--shapes long many short]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rospr_bench.common import RESULTS, Timer, non_negative_int, positive_int, write_result
from rospr_bench.workload import model_dir

log = logging.getLogger("bench_peers")
MAX_TOKENS = 500
# shape: (tasks, min input tokens (exclusive), max input tokens, min choices, max choices)
SHAPES = {
    "long": (("bigbench/vitaminc_fact_verification", "bigbench/formal_fallacies_syllogisms_negation",
              "bigbench/movie_dialog_same_or_different"), 250, MAX_TOKENS, 2, 3),
    "many": (("bigbench/language_identification", "bigbench/logical_deduction", "bigbench/novel_concepts"),
             0, MAX_TOKENS, 5, 99),
    "short": (("bigbench/strategyqa", "bigbench/known_unknowns", "bigbench/misconceptions"), 0, 100, 2, 2),
    "heldout": (("bigbench/code_line_description", "bigbench/conceptual_combinations", "bigbench/hindu_knowledge",
                 "bigbench/logic_grid_puzzle", "bigbench/winowhy"), 0, MAX_TOKENS, 2, 99),
}
CONVENTION = "input_eos=True, choice_eos=False, sum, no length normalisation (lm-eval's seq2seq)"
SIDES = ("ours", "naive", "lm-eval")


def shape_examples(tokenizer, shape: str, n: int) -> list[dict]:
    """``n`` examples of ``shape`` (about equal parts from each of its tasks, in file order), each as
    {input (BIG-bench's rendering), choices, gold}. Lengths are counted on the right-stripped input."""
    from rospr_bench.workload import _settings
    from rospr_harness.tasks import get_task

    tasks, lo, hi, cmin, cmax = SHAPES[shape]
    settings = _settings()
    if not settings.bigbench:
        raise ValueError("the peers benchmark needs BIG-bench: run `rospr data fetch bigbench`, or set "
                         "ROSPR_DATA_DIR to a folder with bigbench/ (e.g. ../shared/data)")
    out: list[dict] = []
    for j, name in enumerate(tasks):
        want = (n - len(out)) // (len(tasks) - j)
        if want < 1:
            continue
        task = get_task(name, settings)
        kept = 0
        for e in task.load("bigbench").examples:
            if cmin <= len(e.choices) <= cmax and lo < len(tokenizer(e.input_text.rstrip()).input_ids) <= hi:
                out.append({"task": name, "input": e.input_text, "choices": list(e.choices), "gold": e.gold() or 0})
                kept += 1
                if kept == want:
                    break
    if len(out) < n:
        log.warning("%s: only %d examples (asked for %d)", shape, len(out), n)
    return out


def read_examples(path: Path, fmt: str):
    from rospr.data import Example

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [Example(r["task"], "bigbench", i, r["input"] if fmt == "bigbench" else r["input"].rstrip(),
                    tuple(r["choices"])) for i, r in enumerate(rows)]


# --- the three sides, each run in a process of its own -------------------------------------------

def side_ours(model: Path, exs, threads: int, batch_size: int | None, batch_tokens: int | None) -> tuple[list[int], float]:
    """Our product scorer (``create_backend`` on the cached export), scoring defaults of the run
    config unless ``batch_size``/``batch_tokens`` are given."""
    from rospr.scoring import Convention, encode_examples, score_encoded
    from rospr.tokenizer import load_tokenizer
    from rospr_harness.config import ScoringConfig
    from rospr_bench.common import product_backend

    defaults = ScoringConfig()
    bs = batch_size or defaults.batch_size
    budget = batch_tokens if batch_tokens is not None else defaults.batch_tokens
    scorer = product_backend("onnxruntime", model, threads=threads).scorer
    tok = load_tokenizer(model)  # as a run loads it: tokenizers, no transformers (nor torch) import
    scorer.prompt_dim  # opens the session (lazily opened at the first score) before the model-only timer, as the
    # peers load their model before theirs: a model-only time that counted our session's open was not model time
    with Timer() as t:
        enc = encode_examples(tok, exs, Convention(input_eos=True, choice_eos=False))
        scores = score_encoded(scorer, enc, None, bs, max_tokens=budget)
    return [int(np.argmax(s)) for s in scores], t.s


def side_naive(model: Path, exs, threads: int) -> tuple[list[int], float]:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForSeq2SeqLM.from_pretrained(model).eval()
    preds = []
    with Timer() as t, torch.inference_mode():
        for ex in exs:
            ids = tok(ex.input_text, return_tensors="pt").input_ids  # with EOS, like lm-eval
            scores = []
            for choice in ex.choices:
                labels = tok(choice, add_special_tokens=False, return_tensors="pt").input_ids
                loss = m(input_ids=ids, labels=labels).loss
                scores.append(-float(loss) * labels.shape[1])
            preds.append(int(np.argmax(scores)))
    return preds, t.s


def side_lm_eval(model: Path, exs, threads: int, batch_size: int) -> tuple[list[int], float]:
    import torch
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(threads)
    spent = [0.0]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "docs.jsonl"
        data.write_text("".join(json.dumps({"i": i, "input": ex.input_text, "choices": list(ex.choices), "gold": 0})
                                + "\n" for i, ex in enumerate(exs)))
        task = {
            "task": "rospr_peer", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{input}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}", "target_delimiter": "",
            "metric_list": [{"metric": "acc"}],
        }
        (Path(tmp) / "rospr_peer.yaml").write_text(yaml.safe_dump(task))
        lm = HFLM(pretrained=str(model), backend="seq2seq", batch_size=batch_size, device="cpu")
        inner = lm.loglikelihood

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t
        lm.loglikelihood = timed
        out = simple_evaluate(model=lm, tasks=["rospr_peer"], task_manager=TaskManager(include_path=tmp),
                              log_samples=True, verbosity="ERROR")
    samples = sorted(out["samples"]["rospr_peer"], key=lambda s: s["doc"]["i"])
    return [int(np.argmax([r[0][0] for r in s["resps"]])) for s in samples], spent[0]


def side_main(args) -> None:
    """``--side``: run one system on ``--examples`` and write {predictions, model_s} to ``--result``."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    model = model_dir(args.size)
    exs = read_examples(Path(args.examples), args.format)
    if args.side == "ours":
        preds, model_s = side_ours(model, exs, args.threads, args.batch_size, args.batch_tokens)
    elif args.side == "naive":
        preds, model_s = side_naive(model, exs, args.threads)
    else:
        preds, model_s = side_lm_eval(model, exs, args.threads, args.peer_batch_size)
    Path(args.result).write_text(json.dumps({"predictions": preds, "model_s": model_s}))


# --- the parent: shapes, processes, ratios ------------------------------------------------------

def run_side(side: str, examples: Path, fmt: str, size: str, threads: int, opts: dict) -> dict:
    """One fresh process of ``side``; its whole-process seconds, model-only seconds, predictions."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "rospr_bench.bench_peers", "--side", side, "--examples", str(examples),
               "--format", fmt, "--result", str(result), "--size", size, "--threads", str(threads),
               "--peer-batch-size", str(opts["peer_batch_size"])]
        if opts.get("batch_size"):
            cmd += ["--batch-size", str(opts["batch_size"])]
        if opts.get("batch_tokens") is not None:
            cmd += ["--batch-tokens", str(opts["batch_tokens"])]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        t = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        whole = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(f"{side} ({fmt}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        out = json.loads(result.read_text())
    log.info("  %s (%s): whole process %.2f s, model only %.2f s", side, fmt, whole, out["model_s"])
    return {"whole_s": whole, "model_s": out["model_s"], "predictions": out["predictions"]}


def compare(shape: str, rows: list[dict], tok, size: str, threads: int, opts: dict, tmp: Path) -> dict:
    path = tmp / f"{shape}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    n_choices = sum(len(r["choices"]) for r in rows)
    log.info("%s: %d examples, %d choices", shape, len(rows), n_choices)
    first = run_side("ours", path, "plain", size, threads, opts)
    naive = run_side("naive", path, "plain", size, threads, opts)
    lm = run_side("lm-eval", path, "plain", size, threads, opts)
    again = run_side("ours", path, "plain", size, threads, opts)
    if again["predictions"] != first["predictions"]:
        raise RuntimeError(f"{shape}: our predictions differ between two runs on the same examples")
    lm_bb = run_side("lm-eval", path, "bigbench", size, threads, opts)
    ours_bb = run_side("ours", path, "bigbench", size, threads, opts)
    ours = {k: (first[k] + again[k]) / 2 for k in ("whole_s", "model_s")}
    preds = first["predictions"]
    same = lambda p, q: sum(a == b for a, b in zip(p, q))  # noqa: E731
    systems = {"rospr onnxruntime": {**ours, "runs_whole_s": [first["whole_s"], again["whole_s"]],
                                     "runs_model_s": [first["model_s"], again["model_s"]]},
               "naive per-choice HF loop": naive, "lm-evaluation-harness": lm}
    out_rows = []
    for name, r in systems.items():
        out_rows.append({"system": name, "whole_s": r["whole_s"], "model_s": r["model_s"],
                         "whole_speedup": r["whole_s"] / ours["whole_s"], "model_speedup": r["model_s"] / ours["model_s"],
                         "choices_per_s_model": n_choices / r["model_s"],
                         "same_predictions": same(r.get("predictions", preds), preds),
                         **({k: r[k] for k in ("runs_whole_s", "runs_model_s")} if "runs_whole_s" in r else {})})
    gold = [r["gold"] for r in rows]
    bound = gemm_bound(rows, size, threads, opts, ours, {"naive": naive["whole_s"], "lm_eval": lm["whole_s"]})
    return {
        "shape": shape, "tasks": list(SHAPES[shape][0]), "n_examples": len(rows), "n_choices": n_choices,
        "mean_input_tokens": float(np.mean([len(tok(r["input"].rstrip()).input_ids) for r in rows])),
        "mean_choices": n_choices / len(rows), "rows": out_rows,
        "bigbench_format": {"same_predictions_lm_eval_vs_ours": same(lm_bb["predictions"], ours_bb["predictions"]),
                            "ours_changed_vs_plain": len(rows) - same(ours_bb["predictions"], preds),
                            "accuracy_ours": float(np.mean([p == g for p, g in zip(ours_bb["predictions"], gold)])),
                            "accuracy_lm_eval": float(np.mean([p == g for p, g in zip(lm_bb["predictions"], gold)])),
                            "lm_eval_whole_s": lm_bb["whole_s"], "ours_whole_s": ours_bb["whole_s"]},
        "accuracy_plain_ours": float(np.mean([p == g for p, g in zip(preds, gold)])),
        "bound": bound, "fraction_of_bound": bound["fraction_of_bound"], "machine_load": os.getloadavg(),
        "targets": {"identical_predictions_plain": all(r["same_predictions"] == len(rows) for r in out_rows),
                    "fraction_of_bound_at_least_0.90": bound["fraction_of_bound"] >= 0.90,
                    "whole_process_vs_lm_eval_at_least_6x": lm["whole_s"] / ours["whole_s"] >= 6,
                    "whole_process_vs_naive_at_least_6x": naive["whole_s"] / ours["whole_s"] >= 6},
    }


def gemm_bound(rows: list[dict], size: str, threads: int, opts: dict, ours: dict, peers_whole: dict) -> dict:
    """What no scorer of ours could beat on this machine: our batches' GEMMs at onnxruntime's own MatMul
    rate on their shapes (``ceiling.py``, best of 5, measured now) plus our fixed cost as measured (whole
    process minus model only: interpreter, imports, session open, writing). ``best_whole_speedup``: each
    peer's whole-process time over that best time; a target above it cannot be met by faster code of
    ours, only by less work (the peers' own work is what it is). Also our model-only MFU on the shape."""
    from rospr.data import Example
    from rospr.flops import ModelShape
    from rospr.scoring import Convention, encode_examples, plan_batches
    from rospr_bench.bench_throughput import batch_gemms, example_flops
    from rospr_bench.ceiling import Ceiling, workload_ceiling
    from rospr.tokenizer import load_tokenizer
    from rospr_harness.config import ScoringConfig

    model = model_dir(size)
    shape = ModelShape.from_config(json.loads((model / "config.json").read_text()), str(model / "config.json"))
    exs = [Example(r["task"], "bigbench", i, r["input"].rstrip(), tuple(r["choices"])) for i, r in enumerate(rows)]
    enc = encode_examples(load_tokenizer(model), exs, Convention(input_eos=True, choice_eos=False))
    defaults = ScoringConfig()
    plan = plan_batches(enc, opts.get("batch_size") or defaults.batch_size,
                        max_tokens=opts["batch_tokens"] if opts.get("batch_tokens") is not None else defaults.batch_tokens)
    ceil = workload_ceiling(Ceiling(threads), batch_gemms(shape, enc, plan, 0))
    fixed = ours["whole_s"] - ours["model_s"]
    best = fixed + ceil["gemm_seconds"]
    useful = example_flops(shape, enc, 0)
    return {"useful_flops": useful, "executed_gemm_flops": ceil["executed_flops"],
            "ceiling_flops_per_s": ceil["flops_per_s"], "gemm_s_at_ceiling": ceil["gemm_seconds"],
            "ours_fixed_s": fixed, "best_whole_s": best, "fraction_of_bound": best / ours["whole_s"],
            "model_fraction_of_bound": ceil["gemm_seconds"] / ours["model_s"],
            "ours_model_mfu": useful / ours["model_s"] / ceil["flops_per_s"],
            "best_whole_speedup": {name: w / best for name, w in peers_whole.items()}}


def run(size: str, n: int, shapes, threads: int, opts: dict, on_shape=None) -> dict:
    """Every shape in turn; ``on_shape(result so far)`` after each (the JSON is written as it goes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    from rospr_export.trace import EXPORT_VERSION
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr_harness.config import ScoringConfig

    model = model_dir(size)
    ensure_export(model)  # exported (or found in the cache) before anything is timed
    tok = AutoTokenizer.from_pretrained(model)
    defaults = ScoringConfig()
    result = {"model": size, "threads": threads, "export_version": EXPORT_VERSION, "convention": CONVENTION,
              "ours_batch_size": opts.get("batch_size") or defaults.batch_size,
              "ours_batch_tokens": opts["batch_tokens"] if opts.get("batch_tokens") is not None else defaults.batch_tokens,
              "lm_eval_batch_size": opts["peer_batch_size"], "shapes": []}
    with tempfile.TemporaryDirectory() as tmp:
        for s in shapes:
            result["shapes"].append(compare(s, shape_examples(tok, s, n), tok, size, threads, opts, Path(tmp)))
            if on_shape is not None:
                on_shape(result)
    return result


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = result["shapes"]
    fig, axes = plt.subplots(len(shapes), 2, figsize=(12, 2.4 * len(shapes)), squeeze=False)
    for (a, b), w in zip(axes, shapes):
        rows = w["rows"][::-1]
        for ax, key, speed in ((a, "whole_s", "whole_speedup"), (b, "model_s", "model_speedup")):
            ax.barh([r["system"] for r in rows], [r[key] for r in rows])
            for i, r in enumerate(rows):
                ax.text(r[key], i, f"  {r[key]:.1f} s ({r[speed]:.1f}x)", va="center", fontsize=8)
            ax.set_xlim(0, max(r[key] for r in rows) * 1.5)
        a.set_title(f"{w['shape']}: {w['n_examples']} examples, {w['mean_choices']:.1f} choices, "
                    f"{w['mean_input_tokens']:.0f} tokens: whole process", fontsize=9)
        b.set_title("model only", fontsize=9)
    axes[-1, 0].set_xlabel("seconds")
    axes[-1, 1].set_xlabel("seconds")
    fig.suptitle(f"{result['model']} model, {result['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def check_peers_installed() -> None:
    """Refuse (``ValueError``) at once, before minutes of timing, when the peers are not installed."""
    import importlib.util

    missing = [m for m in ("lm_eval", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"the peers benchmark needs {' and '.join(missing)}: pip install -e '.[bench]' "
                         "(lm-evaluation-harness and accelerate)")


def main(argv: list[str] | None = None) -> dict | None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--n", type=positive_int, default=100, help="examples per shape")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--batch-size", type=positive_int, default=None, help="ours; default: scoring.batch_size")
    ap.add_argument("--batch-tokens", type=positive_int, default=None, help="ours; default: scoring.batch_tokens")
    ap.add_argument("--peer-batch-size", type=positive_int, default=4, help="lm-eval's batch size")
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--examples", help=argparse.SUPPRESS)
    ap.add_argument("--format", choices=["plain", "bigbench"], default="plain", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.threads = args.threads or os.cpu_count() or 1
    if args.side:
        side_main(args)
        return None
    check_peers_installed()
    opts = {"batch_size": args.batch_size, "batch_tokens": args.batch_tokens, "peer_batch_size": args.peer_batch_size}
    result = run(args.size, args.n, args.shapes, args.threads, opts,
                 on_shape=lambda partial: write_result("peers", partial, args.out))
    path = write_result("peers", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("transformers", "optimum", "torch", "datasets", "lm_eval"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    main()
