"""lm-evaluation-harness with our model (``--model rospr``) against its own ``hf`` seq2seq model, on
stock lm-eval multiple-choice tasks, side by side in one process.

The tasks are lm-eval's own YAMLs, ``bigbench_strategyqa_multiple_choice`` (2 choices) and
``bigbench_logical_deduction_multiple_choice`` (3, 5 or 7 choices), included unchanged by a YAML that
only points ``dataset_path`` at local JSON rows (``dataset_path: json``). The rows are the real BIG-bench
examples (BIG-bench's ``task.json`` from the data folder or the fetched sdist) in the schema of
lm-eval's ``hails/bigbench`` dataset (``inputs``, ``targets``, ``multiple_choice_targets``,
``multiple_choice_scores``), ``inputs`` rendered by our BIG-bench loader (BIG-bench's zero-shot "Q: ...
A:" framing) and stripped; the hub copy is not read (nothing is downloaded).

Both models score the same requests under the same convention (rospr's ``convention=lm-eval``, the
parity test's), on the same checkpoint (``build/<size>-t0``), with the same thread count. Each model
is built before its timing (our ONNX export happens once, outside it) and warmed up on a few requests.
Two times per model: ``evaluate_s``, ``simple_evaluate`` end to end with the built model (task
loading, request building, metrics: lm-eval's overhead, the same for both), and
``loglikelihood_s``, the time inside the model's ``loglikelihood`` only (model-side work: tokenising,
batching, the forward passes). ``--batch-size`` is lm-eval's batch size for both, which for ``hf``
counts requests (one per choice) and for ``rospr`` contexts (one per document, all its choices
together). Ours is timed before and after hf and the mean taken; the load average at start and end
is in the JSON (``machine``).

    python -m rospr_bench.bench_lmeval [--size small] [--limit 200] [--batch-size 8] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from rospr_bench.common import RESULTS, Timer, non_negative_int, positive_int, write_result
from rospr_bench.workload import _settings, model_dir

log = logging.getLogger(__name__)
# (lm-eval's stock task, the BIG-bench task our loader reads for its rows)
TASKS = (("bigbench_strategyqa_multiple_choice", "bigbench/strategyqa"),
         ("bigbench_logical_deduction_multiple_choice", "bigbench/logical_deduction"))


def stock_yaml(task: str) -> Path:
    """The YAML of one of lm-eval's bigbench multiple-choice tasks, in the installed lm-eval."""
    import lm_eval.tasks

    name = task.removeprefix("bigbench_").removesuffix("_multiple_choice")
    return Path(lm_eval.tasks.__file__).parent / "bigbench" / "multiple_choice" / f"{name}.yaml"


def bigbench_rows(name: str, limit: int) -> list[dict]:
    """The first ``limit`` examples of BIG-bench task ``name`` as rows of lm-eval's hails/bigbench
    schema. Refuses (``ValueError``) without the BIG-bench data."""
    from rospr_harness.tasks import get_task

    settings = _settings()
    if not settings.bigbench:
        raise ValueError("the lmeval benchmark reads BIG-bench: run `rospr data fetch bigbench`, or set "
                         "ROSPR_DATA_DIR to a folder with bigbench/ (e.g. ../shared/data)")
    task = get_task(name, settings)
    rows = []
    for i, ex in enumerate(task.load("bigbench", limit=limit).examples):
        scores = [int(s) for s in ex.target_scores]
        rows.append({"idx": i, "inputs": ex.input_text.strip(), "targets": [ex.choices[scores.index(1)]],
                     "multiple_choice_targets": list(ex.choices), "multiple_choice_scores": scores})
    return rows


def write_tasks(folder: Path, limit: int) -> list[str]:
    """One YAML per stock task in ``folder``: the stock YAML included, its dataset replaced by local rows."""
    import yaml

    names = []
    for task, source in TASKS:
        data = folder / f"{task}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in bigbench_rows(source, limit)))
        local = f"{task}_local"
        (folder / f"{local}.yaml").write_text(yaml.safe_dump({
            "include": str(stock_yaml(task)), "task": local, "tag": [], "dataset_path": "json", "dataset_name": None,
            "dataset_kwargs": {"data_files": {"default": str(data)}}}))
        names.append(local)
    return names


class TimedLoglikelihood:
    """Wraps ``lm.loglikelihood`` (the instance attribute lm-eval calls) to add up the time inside it."""

    def __init__(self, lm) -> None:
        self.lm, self.inner, self.seconds, self.requests = lm, lm.loglikelihood, 0.0, 0
        lm.loglikelihood = self

    def __call__(self, requests, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(requests, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.requests += len(requests)


def evaluate(lm, folder: Path, tasks: list[str]) -> dict:
    """``simple_evaluate`` of ``lm`` on ``tasks``: seconds end to end and inside loglikelihood, the
    accuracies, and per document the log-likelihoods."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    timed = TimedLoglikelihood(lm)
    try:
        with Timer() as t:
            out = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(folder)),
                                  log_samples=True, verbosity="ERROR")
    finally:
        lm.loglikelihood = timed.inner
    lls = {task: {s["doc_id"]: [r[0][0] for r in s["resps"]] for s in out["samples"][task]} for task in tasks}
    acc = {task: out["results"][task]["acc,none"] for task in tasks}
    return {"evaluate_s": t.s, "loglikelihood_s": timed.seconds, "requests": timed.requests, "acc": acc, "lls": lls}


def warm_up(lm) -> None:
    from lm_eval.api.instance import Instance

    lm.loglikelihood([Instance("loglikelihood", {}, ("Q: is it warm?\nA:", f" {c}"), i, ("warm", 0, 1))
                      for i, c in enumerate(("Yes", "No"))])


def compare(lls_a: dict, lls_b: dict) -> dict:
    """Largest |log-likelihood difference| and the fraction of documents with the same argmax."""
    diffs, same, n = [], 0, 0
    for task in lls_a:
        for doc, a in lls_a[task].items():
            b = lls_b[task][doc]
            diffs.append(float(np.max(np.abs(np.subtract(a, b)))))
            same += int(np.argmax(a) == np.argmax(b))
            n += 1
    return {"max_abs_loglikelihood_diff": max(diffs), "same_prediction": same / n, "documents": n}


def run(size: str, limit: int, batch_size: int, threads: int) -> dict:
    import torch
    from lm_eval.models.huggingface import HFLM

    from rospr_harness.lm_eval.model import RosprLM

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    torch.set_num_threads(threads)
    model = model_dir(size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tasks = write_tasks(folder, limit)
        with Timer() as t_build_ours:
            ours = RosprLM(pretrained=str(model), batch_size=batch_size, threads=threads, device="cpu")
            warm_up(ours)
        first = evaluate(ours, folder, tasks)
        with Timer() as t_build_hf:
            hf = HFLM(pretrained=str(model), backend="seq2seq", batch_size=batch_size, device="cpu")
            warm_up(hf)
        theirs = evaluate(hf, folder, tasks)
        again = evaluate(ours, folder, tasks)
    if again["lls"] != first["lls"]:
        raise RuntimeError("rospr: the log-likelihoods differ between two passes over the same requests")
    rows = []
    for system, runs, build in (("rospr (onnxruntime)", [first, again], t_build_ours.s), ("hf seq2seq", [theirs], t_build_hf.s)):
        row = {"system": system, "build_and_warm_up_s": build, "requests": runs[0]["requests"],
               "acc": runs[0]["acc"]}
        for key in ("evaluate_s", "loglikelihood_s"):
            row[key] = float(np.mean([r[key] for r in runs]))
            row[f"{key}_per_pass"] = [r[key] for r in runs]
        row["requests_per_s_in_loglikelihood"] = row["requests"] / row["loglikelihood_s"]
        rows.append(row)
    ours_row, hf_row = rows
    ratios = {"loglikelihood_hf_over_rospr": hf_row["loglikelihood_s"] / ours_row["loglikelihood_s"],
              "evaluate_hf_over_rospr": hf_row["evaluate_s"] / ours_row["evaluate_s"]}
    docs = {task: len(first["lls"][task]) for task in tasks}
    return {"model": size, "tasks": tasks, "documents": docs, "limit_per_task": limit, "batch_size": batch_size,
            "threads": threads, "convention": "lm-eval (hf seq2seq's tokenisation)", "rows": rows, "ratios": ratios,
            "agreement": compare(first["lls"], theirs["lls"])}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--limit", type=positive_int, default=200, help="documents per task")
    ap.add_argument("--batch-size", type=positive_int, default=8)
    ap.add_argument("--threads", type=non_negative_int, default=0, help="0: all cores")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    from rospr_bench.bench_peers import check_peers_installed

    check_peers_installed()
    result = run(args.size, args.limit, args.batch_size, args.threads or os.cpu_count() or 1)
    write_result("lmeval", result, args.out)
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
