"""GPU readiness in one command: install the CUDA packages, export float16 and bfloat16, check them
against float32 PyTorch on the GPU, and measure throughput and latency with I/O binding.

On a machine without an NVIDIA GPU it stops before importing or installing anything (``NoGPUError``:
one line, non-zero exit). ``--no-install`` runs ``gpu_check`` instead: only what the machine has (no
registry, no Optimum), on random weights of T0-3B's shape. Without it, on a machine with a GPU:

1. **Packages**: the wheels of PyPI for CUDA 12, replacing the CPU builds in
   the environment: ``onnxruntime-gpu[cuda,cudnn]==1.26.0`` (the last onnxruntime-gpu on PyPI built for
   CUDA 12; 1.28 and later are CUDA 13) instead of ``onnxruntime``, ``faiss-gpu-cu12`` instead of
   ``faiss-cpu``, and PyPI's CUDA build of the installed torch version when torch sees no GPU. The
   environment's other packages are held at their versions (a pip constraints file of ``pip freeze``).
2. **Exports** of the scorer in float32, float16 and bfloat16 (``rospr_export.export.export_models`` with the
   CUDA provider; each graph is validated there against float32 PyTorch at the export tolerance).
3. **Parity** on the benchmark workload: every dtype's graph on the CUDA provider against float32
   ``PromptedT5`` on the GPU (``gpu_check.parity`` and ``TOLERANCE``). Predictions must be identical
   wherever float32's margin between the best and the second-best choice exceeds twice the tolerance;
   closer calls may flip legitimately and are counted, not failed.
4. **Throughput** (examples and choices per second at several batch sizes) and **latency** (one
   example per call: p50/p90/p99) of each graph through ``OnnxScorer`` with I/O binding, with float32
   PyTorch on the GPU as the reference row; a FAISS GPU exact index against the CPU one.
5. **Tuning** (``tuning_check``): a few prompt-tuning steps of the same prompt, seed and batches,
   float32 on the CPU (the reference), float32 on the GPU, and bfloat16 with gradient checkpointing and
   micro-batches on the GPU: the step time of each (first step apart: kernels, allocator), the peak GPU
   memory, and each run's losses against the reference (``gpu_check.TUNING_TOLERANCE``).

Writes ``results/gpu.json``.

    rospr bench gpu [--size small] [--batch-sizes 1 8 32 128]
    rospr bench gpu --no-install [--size t0-3b] [--device cuda]   # PYTHONPATH=. python -m benchmarks gpu ...
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from rospr.errors import SettingError, StateError
from rospr_bench.common import RESULTS, Timer, positive_int, product_backend, write_result
from rospr_bench.gpu_check import (TOLERANCE, TUNING_TOLERANCE, CheckSettings, NoGPUError, check, cuda_gpus,
                                   faiss_check, parity, timed_tune)

log = logging.getLogger(__name__)

ORT_GPU = "onnxruntime-gpu[cuda,cudnn]==1.26.0"
FAISS_GPU = "faiss-gpu-cu12"
DTYPES = ("float32", "float16", "bfloat16")


def _probe(code: str) -> str:
    """Run ``code`` in a fresh interpreter of this environment (packages may have just changed)."""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else ""


def _pip(*args: str) -> None:
    log.info("pip %s", " ".join(args))
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def ensure_packages() -> dict:
    """Make onnxruntime's CUDA provider, FAISS on the GPU and torch's CUDA available, installing each
    that is missing; returns what each reports. Refuses (``StateError``) one still missing after installing."""
    checks = {
        "onnxruntime": ("import onnxruntime as o; print('CUDAExecutionProvider' in o.get_available_providers())",
                        lambda: _swap("onnxruntime", ORT_GPU)),
        "faiss": ("import faiss; print(faiss.get_num_gpus() > 0)", lambda: _swap("faiss-cpu", FAISS_GPU)),
        "torch": ("import torch; print(torch.cuda.is_available())", _torch_cuda),
    }
    for name, (code, fix) in checks.items():
        if _probe(code) == "True":
            continue
        fix()
        if _probe(code) != "True":
            raise StateError(f"rospr bench gpu: {name} still cannot use the GPU after installing; check that the "
                             "driver supports CUDA 12 (nvidia-smi shows 'CUDA Version: 12.x' or later), or run "
                             "rospr bench gpu --no-install (what the machine has)")
    return {"onnxruntime": _probe("import onnxruntime as o; print(o.__version__)"),
            "faiss": _probe("import faiss; print(faiss.__version__)"),
            "torch": _probe("import torch; print(torch.__version__, torch.version.cuda)")}


def _constraints(skip: tuple[str, ...]) -> str:
    """A pip constraints file holding every installed package but ``skip`` at its version."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    keep = [line for line in frozen.splitlines()
            if "==" in line and not line.split("==")[0].lower().replace("_", "-").startswith(skip)]
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"rospr-gpu-constraints-{os.getpid()}.txt"
    path.write_text("\n".join(keep) + "\n")
    return str(path)


def _swap(cpu_package: str, gpu_requirement: str) -> None:
    # The CPU and GPU builds install the same module: the CPU one must go first.
    c = _constraints((cpu_package, "onnxruntime", "faiss", "nvidia-"))
    _pip("uninstall", "-y", cpu_package)
    _pip("install", gpu_requirement, "-c", c)


def _torch_cuda() -> None:
    base = _probe("import torch; print(torch.__version__.split('+')[0])")
    c = _constraints(("torch", "nvidia-", "triton"))
    _pip("install", "--force-reinstall", f"torch=={base}", "-c", c)  # PyPI's build of that version has CUDA


def _session(path: Path):
    """An ``OnnxScorer`` with I/O binding on the CUDA provider; refuses (``RuntimeError``) a session
    that onnxruntime quietly put on the CPU (it does when the CUDA libraries fail to load). Built here,
    not by ``create_backend``: each dtype's export is traced on CUDA into a folder of its own, which the
    backend's on-demand (CPU-traced, cached) export does not make."""
    from rospr_harness.backends.onnxruntime_backend import OnnxScorer, make_session

    scorer = OnnxScorer(make_session(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]),
                        io_binding=True)
    if not scorer.on_cuda:
        raise StateError(f"{path}: onnxruntime fell back to {scorer.session.get_providers()[0]}; its CUDA "
                         "provider did not load (check the driver supports CUDA 12 and cuDNN 9 is installed)")
    return scorer


def _torch_reference(model: Path):
    """The torch backend's ``TorchScorer`` on the GPU in float32 (the parity reference), built by
    ``create_backend`` as a run builds it; TF32 is turned off so that float32 means float32."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return product_backend("torch", model, device="cuda").scorer


def throughput(scorer, enc, batch_sizes) -> list[dict]:
    from rospr.scoring import score_encoded

    rows = []
    n_choices = sum(len(e.choice_ids) for e in enc)
    for bs in batch_sizes:
        score_encoded(scorer, enc[:bs], None, bs)  # warm-up: kernels, arena
        with Timer() as t:
            score_encoded(scorer, enc, None, bs)
        rows.append({"batch_size": bs, "seconds": t.s, "examples_per_s": len(enc) / t.s,
                     "choices_per_s": n_choices / t.s})
    return rows


def latency(scorer, enc, n: int) -> dict:
    import numpy as np

    from rospr.scoring import score_encoded

    times = []
    for e in (enc * (n // len(enc) + 1))[:n]:
        t0 = time.perf_counter()
        score_encoded(scorer, [e], None, 1)
        times.append(1000 * (time.perf_counter() - t0))
    return {"requests": n, **{f"p{q}_ms": float(np.percentile(times, q)) for q in (50, 90, 99)}}


# (name, device: None = the checked device, dtype, gradient checkpointing, micro-batch) of the tuning check
TUNING_RUNS = (("float32 cpu (reference)", "cpu", "float32", False, None), ("float32", None, "float32", False, None),
               ("bfloat16 checkpointed", None, "bfloat16", True, 4))


def tuning_check(model: str | Path, rows, device: str = "cuda", steps: int = 5, batch_size: int = 8) -> dict:
    """``steps`` tuning steps of one prompt on ``rows`` (their targets) per ``TUNING_RUNS`` entry,
    the same seed and batches each time; returns per run the step times, the losses, the peak memory of
    ``device`` (CUDA only) and the worst loss difference to float32 on the CPU, and ``ok`` when every
    run is within ``TUNING_TOLERANCE``. ``device=cpu`` runs the same code on the CPU (the tests)."""
    import torch

    from rospr.tuning import TuneSettings, TuneWorker

    out, reference = [], None
    for name, where, dtype, ckpt, micro in TUNING_RUNS:
        settings = TuneSettings(prompt_length=20, steps=steps, batch_size=batch_size, device=where or device,
                                dtype=dtype, gradient_checkpointing=ckpt, micro_batch_size=micro, threads=os.cpu_count() or 1)
        worker = TuneWorker(str(model), settings)
        on_cuda = worker.device.type == "cuda"
        if on_cuda:
            torch.cuda.reset_peak_memory_stats(worker.device)
        result, first, step = timed_tune(worker.model, worker.tokenizer, rows, settings)
        row = {"run": name, "device": str(worker.device), "dtype": dtype, "gradient_checkpointing": ckpt,
               "micro_batch_size": micro, "first_step_s": first, "step_s": step, "losses": result.losses,
               "peak_memory_bytes": torch.cuda.max_memory_allocated(worker.device) if on_cuda else None}
        if reference is None:
            reference = result.losses
        diff = max(abs(a - b) for a, b in zip(result.losses, reference))
        allowed = TUNING_TOLERANCE[dtype] * (max(reference) if dtype == "bfloat16" else 1.0)
        row.update(max_loss_diff=diff, tolerance=allowed, ok=diff <= allowed)
        out.append(row)
        del worker
        log.info("tuning %s: %.3f s/step, max |loss diff| %.2g", name, row["step_s"], diff)
    return {"steps": steps, "batch_size": batch_size, "prompt_length": 20, "runs": out,
            "ok": all(r["ok"] for r in out)}


def run(size: str, batch_sizes: list[int], latency_requests: int, work: Path, tuning_steps: int = 5) -> dict:
    gpus = cuda_gpus()  # first: no GPU, no installs
    versions = ensure_packages()
    import onnxruntime as ort
    from transformers import AutoTokenizer

    from rospr_bench.workload import examples, model_dir
    from rospr_export.export import export_models
    from rospr.scoring import Convention, encode_examples, score_encoded

    if hasattr(ort, "preload_dlls"):  # the CUDA/cuDNN libraries of the nvidia-* wheels (onnxruntime >= 1.21),
        ort.preload_dlls()            # before any session: exports are validated on the CUDA provider too
    model = model_dir(size)
    tok = AutoTokenizer.from_pretrained(model)
    enc = encode_examples(tok, examples(), Convention())
    reference = _torch_reference(model)
    ref_scores = score_encoded(reference, enc, None, 32)
    rows = [{"system": "torch float32 (reference)", "throughput": throughput(reference, enc, batch_sizes),
             "latency": latency(reference, enc, latency_requests)}]
    for dtype in DTYPES:
        out = work / f"{size}-{dtype}"
        try:
            # float32 is traced on the CPU (Optimum leaves a model it exported on the device, and the
            # float32 export validates against that same model object); half precision must be traced on CUDA.
            res = export_models(model, out, dtype=dtype, device="cpu" if dtype == "float32" else "cuda",
                                providers=["CUDAExecutionProvider"])
        except Exception as exc:  # one dtype failing (an op without a kernel, say) must not hide the others
            log.warning("%s: export failed: %s", dtype, exc)
            rows.append({"system": f"onnxruntime {dtype}", "error": f"{type(exc).__name__}: {exc}"[:500]})
            continue
        scorer = _session(res.scorer_path)
        got = score_encoded(scorer, enc, None, 32)
        rows.append({"system": f"onnxruntime {dtype}", "export_validation": res.manifest["graphs"]["t0_scorer"]["validation"],
                     "parity": parity(ref_scores, got, TOLERANCE[dtype]),
                     "throughput": throughput(scorer, enc, batch_sizes),
                     "latency": latency(scorer, enc, latency_requests)})
        log.info("%s: %s", dtype, rows[-1]["parity"])
    tuning = tuning_check(model, examples(), "cuda", tuning_steps)
    return {"model": size, "gpus": gpus, "packages_gpu": versions, "n_examples": len(enc),
            "n_choices": sum(len(e.choice_ids) for e in enc), "io_binding": True, "rows": rows,
            "faiss": faiss_check(), "tuning": tuning,
            "parity_ok": all(r.get("parity", {}).get("ok", False) for r in rows[1:]), "tuning_ok": tuning["ok"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "small", "t0-3b"],
                    help="the model: a checkpoint built by `rospr tiny` (default small); with --no-install the "
                         "shape of random weights (default t0-3b)")
    ap.add_argument("--no-install", action="store_true",
                    help="use only what this machine has (gpu_check): no installs, no export, random weights")
    ap.add_argument("--device", default="cuda", help="--no-install: where the check runs (cpu: the tests' stand-in)")
    ap.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--latency-requests", type=positive_int, default=200)
    ap.add_argument("--work", default="build/gpu-exports", help="where the exports go")
    ap.add_argument("--tuning-steps", type=positive_int, default=5, help="prompt-tuning steps per tuning run")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if args.no_install:
        result = check(CheckSettings.of_size(args.size or "t0-3b", device=args.device, steps=args.tuning_steps))
    elif args.size == "t0-3b":
        raise SettingError("--size t0-3b: random weights are the --no-install check's; the full path exports a "
                           "checkpoint: choose tiny or small, or add --no-install")
    else:
        result = run(args.size or "small", args.batch_sizes, args.latency_requests, Path(args.work), args.tuning_steps)
    write_result("gpu", result, args.out)
    if not result.get("ok", True):
        raise StateError(f"rospr bench gpu: the check failed (losses or scores outside their tolerance); see "
                         f"{Path(args.out) / 'gpu.json'}")
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        main()
    except NoGPUError as exc:
        sys.exit(str(exc))
