"""``rospr tiny`` and ``rospr export``: build the offline model, export models to ONNX and Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rospr_harness.cli.common import err, setup_logging
from rospr.destination import claim_folder


def tiny(
    out: Path = typer.Option(..., "--out", help="checkpoint directory to write"),
    size: str = typer.Option("tiny", "--size", help="tiny (tests), small (t5-small sized, benchmarks) or large (T5 v1.1-large shape, 3.1 GB: scale tests)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build the offline T5 v1.1-style model and tokenizer (a Hugging Face checkpoint directory)."""
    setup_logging(False)
    from rospr_harness.tiny_model import build_tiny

    with claim_folder(out, "tiny-model", fix="choose a new or empty --out (rospr replaces only a model it wrote "
                      "there)"):
        path = build_tiny(out, size=size, seed=seed)
    err.print(f"wrote {size} model to {path}")


def export(
    model: str = typer.Option(..., "--model", help="checkpoint directory or hub name of the scorer (T0)"),
    retriever: Optional[str] = typer.Option(None, "--retriever", help="encoder checkpoint of the retriever"),
    out: Path = typer.Option(Path("model_repo_build"), "--out", help="model repository to build"),
    dtype: str = typer.Option("float32", "--dtype", help="float32, or float16 / bfloat16 for GPU serving"),
    prompt_dtype: Optional[str] = typer.Option(None, "--prompt-dtype", help="prompt_embeds input: float32 or float16"),
    external_data: Optional[bool] = typer.Option(None, "--external-data/--no-external-data",
                                                 help="weights beside the graph (default: when over 2 GB)"),
    device: str = typer.Option("cpu", "--device", help="where to trace (cuda for half precision)"),
) -> None:
    """Export the t0_scorer (and retriever) graphs, check them against PyTorch, write OUT/{onnx,triton,twin}."""
    setup_logging(False)
    from rospr_export.export import export_models
    from rospr_export.repository import write_repository

    with claim_folder(out, "model-repository", fix="choose a new or empty --out (rospr replaces only a model "
                      "repository it wrote there)", ours=_holds_export):
        res = export_models(model, out / "onnx", retriever=retriever, dtype=dtype, prompt_dtype=prompt_dtype,
                            external_data=external_data, device=device)
        write_repository(out / "onnx", out)
    for v in res.validations:
        err.print(f"{v.graph}: max |onnx - torch| = {v.max_abs_diff:.3g} over shapes {v.shapes} (tolerance {v.tolerance:g})")
    err.print(f"wrote {out}/triton (onnxruntime backend, NGC image), {out}/twin (python backend, `rospr serve`)")
    err.print(f"perf_analyzer input data and command: rospr perf-inputs --repo {out}", highlight=False)


def _holds_export(folder: Path) -> bool:
    """Whether ``folder`` holds a model repository of ours (one built before rospr marked its folders):
    a sealed export manifest in ``onnx/``, and nothing but what ``rospr export`` writes beside it."""
    from rospr.artifacts import holds_manifest
    from rospr_export.manifest import MANIFEST_FORMAT, MANIFEST_VERSION

    if not {p.name for p in folder.iterdir()} <= {"onnx", "triton", "twin", "perf_analyzer"}:
        return False
    return holds_manifest(folder / "onnx" / "manifest.json", MANIFEST_FORMAT, MANIFEST_VERSION)


def export_env(
    force: bool = typer.Option(False, "--force", help="make it even where this environment can export itself"),
) -> None:
    """Make, once, the environment rospr exports in where this one cannot run Optimum (transformers >= 4.58
    or no optimum-onnx; needs the package registry); prints its interpreter, or why none is needed. A run
    that needs an export makes it itself: this is the same step, taken ahead (before going offline)."""
    setup_logging(False)
    from rospr_export.isolated import environment, unable_here

    why = unable_here()
    if why is None and not force:
        typer.echo("this environment exports in process (transformers < 4.58 with optimum-onnx): none needed")
        return
    typer.echo(str(environment()))
    err.print(f"rospr exports there ({why or 'forced'})")


def perf_inputs(
    repo: Path = typer.Option(Path("model_repo_build"), "--repo", help="the folder `rospr export --out` wrote"),
    task: str = typer.Option("builtin/sentiment", "--task", help="the task whose rendered batch is sent (`rospr tasks`)"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="its prompt (default: the task's first)"),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="rows per request (perf_analyzer's -b)"),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="where <model>.json go (default REPO/perf_analyzer)"),
    model: Optional[str] = typer.Option(None, "--model", help="the exported checkpoint (default: the export's source)"),
    retriever: Optional[str] = typer.Option(None, "--retriever", help="the exported retriever (default: the export's)"),
    bank: Optional[Path] = typer.Option(None, "--bank", help="send a prompt of this prompt bank"),
    bank_prompt: Optional[str] = typer.Option(None, "--bank-prompt", help="its id (with --bank)"),
    prompt_length: int = typer.Option(100, "--prompt-length", help="without --bank: P sampled vocabulary embeddings"),
    no_prompt: bool = typer.Option(False, "--no-prompt", help="no soft prompt (the T0 baseline)"),
    url: str = typer.Option("127.0.0.1:8001", "--url", help="the server, for the printed command"),
    protocol: str = typer.Option("grpc", "--protocol", help="grpc or http, for the printed command"),
    metrics_url: str = typer.Option("127.0.0.1:8002/metrics", "--metrics-url",
                                    help="the server's metrics, for --collect-metrics ('' leaves it out)"),
) -> None:
    """Write perf_analyzer's input data (a real rendered batch: all six t0_scorer inputs, and the
    retriever's two when the export has one) and print the perf_analyzer commands that replay them,
    with every --shape."""
    setup_logging(False)
    from rospr.errors import SettingError
    from rospr.parsing import read_json
    from rospr_harness.perf_inputs import RETRIEVER, write_perf_inputs, write_retriever_inputs

    if protocol not in ("grpc", "http"):
        raise SettingError(f"--protocol {protocol!r}: give grpc or http")
    common = dict(url=url, protocol=protocol, metrics_url=metrics_url or None)
    out = (lambda name: out_dir / f"{name}.json") if out_dir else (lambda name: None)
    written = [write_perf_inputs(repo, task, prompt, batch_size, out("t0_scorer"), model, bank, bank_prompt,
                                 prompt_length, no_prompt, **common)]
    if RETRIEVER in read_json(repo / "onnx" / "manifest.json", SettingError,
                              "rebuild it with `rospr export`").get("graphs", {}):
        written.append(write_retriever_inputs(repo, task, written[0].prompt, batch_size, out(RETRIEVER), retriever,
                                              **common))
    for res in written:
        err.print(f"wrote {res.path}: {res.batch_size} rows of {res.task} / {res.prompt}"
                  + (f", soft prompt {res.soft_prompt}" if res.model != RETRIEVER else ""), highlight=False)
    for res in written:
        typer.echo(res.command_line())
