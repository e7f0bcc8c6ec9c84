"""``rospr tiny`` and ``rospr export``: build the offline model, export models to ONNX and Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rospr_harness.cli.common import err, setup_logging


def tiny(
    out: Path = typer.Option(..., "--out", help="checkpoint directory to write"),
    size: str = typer.Option("tiny", "--size", help="tiny (tests), small (t5-small sized, benchmarks) or large (T5 v1.1-large shape, 3.1 GB: scale tests)"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Build the offline T5 v1.1-style model and tokenizer (a Hugging Face checkpoint directory)."""
    setup_logging(False)
    from rospr_harness.tiny_model import build_tiny

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

    res = export_models(model, out / "onnx", retriever=retriever, dtype=dtype, prompt_dtype=prompt_dtype,
                        external_data=external_data, device=device)
    write_repository(out / "onnx", out)
    for v in res.validations:
        err.print(f"{v.graph}: max |onnx - torch| = {v.max_abs_diff:.3g} over shapes {v.shapes} (tolerance {v.tolerance:g})")
    err.print(f"wrote {out}/triton (onnxruntime backend, NGC image), {out}/twin (python backend, `rospr serve`)")
