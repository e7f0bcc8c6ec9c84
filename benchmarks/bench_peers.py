"""Our onnxruntime scorer vs two peers on the same model and the same examples, in one process.

(a) a naive per-choice Hugging Face loop in the style of the T0 evaluation scripts: one forward
    with ``labels`` per (example, choice), so the encoder runs once per choice;
(b) lm-evaluation-harness (``lm-eval``): its Hugging Face seq2seq model on the local checkpoint, a
    task YAML generated for the same examples (``multiple_choice``, no target delimiter).

lm-eval's seq2seq model encodes the context with the tokenizer's special tokens (an EOS after it)
and the continuation without, and moves a context's trailing spaces to the continuation. For a
like-for-like comparison all three use that convention here (``input_eos=True, choice_eos=False``,
sums, no length normalisation) on inputs without trailing spaces; agreement is the fraction of
examples where each peer's argmax equals ours.

Two workloads (``rospr_bench.workload``): ``mixed``, the built-in and BIG-bench mix of the other
benchmarks (2-7 choices), and ``long``, BIG-bench inputs of 200 to 500 tokens with 3 to 11 choices.
Our time is split into tokenising and the onnxruntime session, to show where it goes.

    python -m rospr_bench.bench_peers [--size small] [--n-per-task 24] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from rospr_bench.common import RESULTS, Timer, non_negative_int, positive_int, product_backend, write_result
from rospr_bench.workload import examples as workload_examples
from rospr_bench.workload import long_examples, model_dir
from rospr_export.trace import EXPORT_VERSION

log = logging.getLogger(__name__)
MAX_TOKENS = 500


class Ours:
    """Our onnxruntime scorer on the cached export of ``model`` (exported outside any timed region)."""

    def __init__(self, model: Path, batch_size: int, threads: int) -> None:
        from transformers import AutoTokenizer

        self.scorer = product_backend("onnxruntime", model, threads=threads).scorer  # exported now, opened at the warm-up
        self.tok = AutoTokenizer.from_pretrained(model)
        self.batch_size = batch_size

    def __call__(self, exs):
        """Predictions, total seconds, and the seconds spent tokenising and in the session."""
        from rospr.scoring import Convention, encode_examples, score_encoded

        conv = Convention(input_eos=True, choice_eos=False)
        score_encoded(self.scorer, encode_examples(self.tok, exs[: self.batch_size], conv), None, self.batch_size)  # warm-up
        with Timer() as t:
            with Timer() as t_tok:
                enc = encode_examples(self.tok, exs, conv)
            scores = score_encoded(self.scorer, enc, None, self.batch_size)
        return [int(np.argmax(s)) for s in scores], t.s, {"tokenize_s": t_tok.s, "session_and_batching_s": t.s - t_tok.s}


def naive_loop(model: Path, exs, threads: int):
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


def lm_eval_peer(model: Path, exs, batch_size: int, threads: int):
    import torch
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "docs.jsonl"
        with data.open("w") as fh:
            for i, ex in enumerate(exs):
                fh.write(json.dumps({"i": i, "input": ex.input_text, "choices": list(ex.choices),
                                     "gold": ex.gold() or 0}) + "\n")
        task = {
            "task": "rospr_peer", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "{{input}}",
            "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}", "target_delimiter": "",
            "metric_list": [{"metric": "acc"}],
        }
        (Path(tmp) / "rospr_peer.yaml").write_text(yaml.safe_dump(task))
        lm = HFLM(pretrained=str(model), backend="seq2seq", batch_size=batch_size, device="cpu")
        with Timer() as t:
            out = simple_evaluate(model=lm, tasks=["rospr_peer"], task_manager=TaskManager(include_path=tmp),
                                  log_samples=True, verbosity="ERROR")
    samples = sorted(out["samples"]["rospr_peer"], key=lambda s: s["doc"]["i"])
    preds = [int(np.argmax([r[0][0] for r in s["resps"]])) for s in samples]
    return preds, t.s


def check_peers_installed() -> None:
    """Refuse (``ValueError``) at once, before minutes of timing, when the peers are not installed."""
    import importlib.util

    missing = [m for m in ("lm_eval", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ValueError(f"the peers benchmark needs {' and '.join(missing)}: pip install -e '.[bench]' "
                         "(lm-evaluation-harness and accelerate)")


def compare(name: str, exs, model: Path, ours: Ours, batch_size: int, threads: int) -> dict:
    """Time the three systems on ``exs``; rows with seconds, rates, speed-up and agreement."""
    n_choices = sum(len(e.choices) for e in exs)
    log.info("%s workload: %d examples, %d choices", name, len(exs), n_choices)
    # ours is timed before and after the peers and the mean taken: load that comes and goes during
    # the minutes the peers take then weighs on both sides of the ratio (both times are recorded)
    p_ours, t_first, parts = ours(exs)
    p_naive, t_naive = naive_loop(model, exs, threads)
    p_lm, t_lm = lm_eval_peer(model, exs, batch_size, threads)
    p_again, t_again, parts_again = ours(exs)
    if p_again != p_ours:
        raise RuntimeError(f"{name}: our predictions differ between two passes over the same examples")
    t_ours = (t_first + t_again) / 2
    parts = {k: (parts[k] + parts_again[k]) / 2 for k in parts}
    parts["seconds_per_pass"] = [t_first, t_again]
    agree = lambda p: float(np.mean([a == b for a, b in zip(p, p_ours)]))  # noqa: E731
    rows = [
        {"system": "rospr onnxruntime", "seconds": t_ours, "agreement_with_ours": 1.0, **parts},
        {"system": "naive per-choice HF loop", "seconds": t_naive, "agreement_with_ours": agree(p_naive)},
        {"system": "lm-evaluation-harness", "seconds": t_lm, "agreement_with_ours": agree(p_lm)},
    ]
    for r in rows:
        r["examples_per_s"] = len(exs) / r["seconds"]
        r["choices_per_s"] = n_choices / r["seconds"]
        r["ours_speedup"] = r["seconds"] / t_ours
    same = all(r["agreement_with_ours"] == 1.0 for r in rows)
    return {"workload": name, "n_examples": len(exs), "n_choices": n_choices,
            "mean_input_tokens": float(np.mean([len(ours.tok(e.input_text).input_ids) for e in exs])),
            "rows": rows,
            "targets": {"identical_predictions": same,
                        "ours_vs_lm_eval_at_least_5x": t_lm / t_ours >= 5,
                        "ours_vs_naive_at_least_5x": t_naive / t_ours >= 5}}


def run(size: str, n_per_task: int, batch_size: int, threads: int, workloads=("mixed", "long")) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    model = model_dir(size)
    ours = Ours(model, batch_size, threads)
    results = []
    if "mixed" in workloads:
        # lm-eval left-truncates contexts to the model's n_positions (512 for T5 configs): keep only
        # examples that fit, so that all three systems score exactly the same tokens.
        exs = [replace(e, input_text=e.input_text.rstrip()) for e in workload_examples(n_per_task)]
        exs = [e for e in exs if len(ours.tok(e.input_text).input_ids) <= MAX_TOKENS]
        results.append(compare("mixed", exs, model, ours, batch_size, threads))
    if "long" in workloads:
        exs = [replace(e, input_text=e.input_text.rstrip())
               for e in long_examples(ours.tok, n_per_task, max_tokens=MAX_TOKENS)]
        results.append(compare("long", exs, model, ours, batch_size, threads))
    return {"model": size, "batch_size": batch_size, "threads": threads, "export_version": EXPORT_VERSION,
            "convention": "input_eos=True, choice_eos=False, sum (lm-eval's seq2seq)", "workloads": results}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wls = result["workloads"]
    fig, axes = plt.subplots(len(wls), 1, figsize=(7, 2.6 * len(wls)), squeeze=False)
    for ax, w in zip(axes[:, 0], wls):
        rows = w["rows"][::-1]
        ax.barh([r["system"] for r in rows], [r["choices_per_s"] for r in rows])
        for i, r in enumerate(rows):
            ax.text(r["choices_per_s"], i, f"  {r['choices_per_s']:.0f}/s, {r['ours_speedup']:.1f}x "
                    f"({r['agreement_with_ours']:.0%} agree)", va="center", fontsize=8)
        ax.set_title(f"{w['workload']}: {result['model']} model, {w['n_examples']} examples "
                     f"({w['n_choices']} choices, {w['mean_input_tokens']:.0f} input tokens on average), "
                     f"{result['threads']} threads", fontsize=9)
        ax.set_xlim(0, max(r["choices_per_s"] for r in rows) * 1.7)
    axes[-1, 0].set_xlabel("scored choices per second")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--n-per-task", type=positive_int, default=24)
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--workloads", nargs="+", default=["mixed", "long"], choices=["mixed", "long"])
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    check_peers_installed()
    result = run(args.size, args.n_per_task, args.batch_size, args.threads or os.cpu_count() or 1, args.workloads)
    path = write_result("peers", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
