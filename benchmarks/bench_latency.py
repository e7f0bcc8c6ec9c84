"""Latency and throughput of the local Triton server by concurrency (the table perf_analyzer prints).

Requests of ``--request-batch`` examples each (every row with a soft prompt of ``--prompt-length``
vectors) go to a real server started by ``rospr serve``'s code (the python-backend twin running the
exported graph) with 1, 2, 4, 8 and 16 requests in flight, for ``--seconds`` per level after a
warm-up. Client side: p50/p90/p99 latency and requests and choices per second. Server side, from
Triton's statistics endpoint (the difference over the level): average request, queue, input,
compute and output time per request.

    python -m rospr_bench.bench_latency [--size small] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time

import numpy as np

from rospr_bench.common import (RESULTS, non_negative_float, non_negative_int, positive_float, positive_int,
                                save_figure, script_logging, write_result)
from rospr_bench.workload import examples, model_dir

log = logging.getLogger("bench_latency")
LEVELS = (1, 2, 4, 8, 16)
MODEL = "t0_scorer"


def _stats(raw: dict) -> dict:
    s = raw["model_stats"][0]["inference_stats"]
    return {k: (int(s[k].get("count", 0)), int(s[k].get("ns", 0))) for k in
            ("success", "queue", "compute_input", "compute_infer", "compute_output")}


async def _level(url: str, requests: list[dict], concurrency: int, seconds: float, warmup: float) -> dict:
    import tritonclient.grpc.aio as grpcclient

    client = grpcclient.InferenceServerClient(url)

    def inputs(feeds):
        out = []
        for name, arr in feeds.items():
            i = grpcclient.InferInput(name, list(arr.shape), "FP32" if arr.dtype == np.float32 else "INT64")
            i.set_data_from_numpy(arr)
            out.append(i)
        return out

    latencies: list[float] = []
    choices = 0
    stop = time.perf_counter() + warmup + seconds
    measuring_from = time.perf_counter() + warmup

    async def worker(k: int):
        nonlocal choices
        j = k
        while time.perf_counter() < stop:
            feeds, n_choices = requests[j % len(requests)]
            j += concurrency
            t = time.perf_counter()
            await client.infer(MODEL, inputs(feeds), outputs=[grpcclient.InferRequestedOutput("scores")])
            if t >= measuring_from:
                latencies.append(time.perf_counter() - t)
                choices += n_choices

    await asyncio.sleep(0)
    # warm-up shares the loop with the measured window: the window starts after `warmup` seconds
    before = None

    async def snapshot_after_warmup():
        nonlocal before
        await asyncio.sleep(max(0.0, measuring_from - time.perf_counter()))
        before = _stats(await client.get_inference_statistics(MODEL, as_json=True))

    await asyncio.gather(snapshot_after_warmup(), *(worker(k) for k in range(concurrency)))
    after = _stats(await client.get_inference_statistics(MODEL, as_json=True))
    await client.close()
    # requests finishing just after the snapshot are counted by the server but not the client:
    # the server-side figures are averages per request, which that does not bias
    n = max(1, after["success"][0] - before["success"][0])
    per = {k: (after[k][1] - before[k][1]) / n / 1e6 for k in after}
    lat = np.array(latencies)
    return {
        "concurrency": concurrency, "requests": len(lat),
        "requests_per_s": len(lat) / seconds, "choices_per_s": choices / seconds,
        "client_p50_ms": 1e3 * float(np.percentile(lat, 50)), "client_p90_ms": 1e3 * float(np.percentile(lat, 90)),
        "client_p99_ms": 1e3 * float(np.percentile(lat, 99)), "client_mean_ms": 1e3 * float(lat.mean()),
        "server_request_ms": per["success"], "server_queue_ms": per["queue"],
        "server_compute_input_ms": per["compute_input"], "server_compute_infer_ms": per["compute_infer"],
        "server_compute_output_ms": per["compute_output"],
    }


def run(size: str, request_batch: int, prompt_length: int, seconds: float, warmup: float, per_task: int) -> dict:
    from rospr_export.repository import write_repository
    from rospr_harness.backends.onnxruntime_backend import ensure_export
    from rospr_harness.serve import TritonServer
    from rospr.backbone import load_backbone
    from rospr.scoring import Convention, collate, encode_examples, plan_batches

    path = model_dir(size)
    _, tok, identity = load_backbone(path)
    encoded = encode_examples(tok, examples(per_task), Convention())
    prompt = (np.random.default_rng(0).normal(size=(prompt_length, identity.d_model)) * 0.5).astype(np.float32)
    requests = []
    for idx in plan_batches(encoded, request_batch, bucket=False):  # arrival order, not sorted
        b = collate([encoded[i] for i in idx], [prompt] * len(idx), identity.d_model)
        requests.append((b.feeds(), int(b.n_choices.sum())))
    build = write_repository(ensure_export(path), RESULTS.parent.parent / "model_repo_build" / f"bench-{size}")
    rows = []
    with TritonServer(build) as server:
        for c in LEVELS:
            row = asyncio.run(_level(server.grpc_url, requests, c, seconds, warmup))
            log.info("%s", {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()})
            rows.append(row)
    return {"model": size, "request_batch": request_batch, "prompt_length": prompt_length, "seconds_per_level": seconds,
            "server": "tritonserver 2.51 (nvidia-pytriton), python-backend twin running the ONNX graph, CPU, same host",
            "rows": rows}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    xs = [r["concurrency"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key in ("client_p50_ms", "client_p90_ms", "client_p99_ms", "server_request_ms", "server_queue_ms"):
        a.plot(xs, [r[key] for r in rows], "o-", label=key.replace("_ms", ""))
    a.set_ylabel("ms per request")
    b.plot(xs, [r["requests_per_s"] for r in rows], "o-")
    b.set_ylabel("requests / s")
    for ax in (a, b):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("requests in flight")
        ax.grid(alpha=0.3)
    a.legend(fontsize=7)
    fig.suptitle(f"Triton, {result['model']} model, {result['request_batch']} example(s) per request")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="small", choices=["tiny", "small"])
    ap.add_argument("--request-batch", type=positive_int, default=1)
    ap.add_argument("--prompt-length", type=non_negative_int, default=100)
    ap.add_argument("--seconds", type=positive_float, default=10.0)
    ap.add_argument("--warmup", type=non_negative_float, default=2.0)
    ap.add_argument("--per-task", type=positive_int, default=12)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    result = run(args.size, args.request_batch, args.prompt_length, args.seconds, args.warmup, args.per_task)
    path = write_result("latency", result, args.out)
    plot(result, path.with_suffix(".png"))
    return result


if __name__ == "__main__":
    script_logging()
    main()
