"""``rospr tune``, ``rospr bank ...`` and ``rospr library build``: the prompt bank and the library."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from rospr_harness.cli.common import err, setup_logging
from rospr.destination import claim_folder
from rospr.errors import SettingError

bank_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="The prompt bank: peft PROMPT_TUNING adapters in and out, re-keying an old bank.")
library_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The Source Prompt Library.")


def tune(
    model: str = typer.Option("build/tiny-t0", "--model", help="backbone: hub name or checkpoint directory"),
    sources: str = typer.Option("builtin", "--sources", help="groups (t0_train, builtin, ...) and task names, comma-separated"),
    out: Path = typer.Option(Path("prompts"), "--out", help="prompt bank directory (created or extended)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a data root (promptsource/templates/, bigbench/, rows/, hub/, manual/; docs/data.md)"),
    set_: List[str] = typer.Option([], "--set", help="a tuning setting: key=value (keys of rospr.tune in a run config)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train one soft prompt per (source dataset, hard prompt); resumes an interrupted tuning."""
    setup_logging(verbose)
    from rospr_harness.method.bank import tune_sources
    from rospr_harness.tasks.base import DataSettings

    names = [s.strip() for s in sources.split(",") if s.strip()]
    settings = _tune_settings(set_)
    done = []

    def on_done(p, reused: bool) -> None:  # a prompt tuned now has its progress line (tune_pool.reporting)
        done.append(reused)
        if reused:
            loss = "imported, not trained here" if p.final_loss is None else f"final loss {p.final_loss:.3f}"
            err.print(f"reused  {p.id}: {loss}")

    bank = tune_sources(model, names, str(out), settings, DataSettings.from_env(data_dir), on_done=on_done)
    err.print(f"prompt bank {out}: {len(bank.prompts)} prompts ({done.count(False)} tuned now)")


def _tune_settings(set_: list[str]):
    """The tuning settings of the ``--set`` flags; refuses (``ConfigError``, naming the flag) bad ones."""
    from pydantic import ValidationError

    from rospr_harness.config import ConfigError, TuneConfig, apply_overrides, format_validation_error

    try:
        return TuneConfig.model_validate(apply_overrides({}, set_))
    except ValidationError as exc:  # the line names the --set flag, not a config file
        raise ConfigError(format_validation_error(exc, "--set", set_, TuneConfig)) from None


@bank_app.command("import-peft")
def bank_import_peft(
    adapter: List[Path] = typer.Option(..., "--adapter", help="a peft PROMPT_TUNING adapter folder (repeatable: "
                                       "the n-th --adapter goes with the n-th --source and --template)"),
    source: List[str] = typer.Option(..., "--source", help="the source dataset it was trained on, e.g. glue/mrpc"),
    template: List[str] = typer.Option(..., "--template", help="the hard prompt (template name) it was trained with"),
    bank: Path = typer.Option(Path("prompts"), "--bank", help="prompt bank directory (created or extended)"),
    model: str = typer.Option("build/tiny-t0", "--model", help="the backbone the adapters and the bank are for"),
    split: str = typer.Option("train", "--split", help="the source split whose inputs become the library keys"),
    rows: Optional[int] = typer.Option(None, "--rows", min=1, help="its first rows (all by default)"),
    ignore_base_name: bool = typer.Option(False, "--ignore-base-name", help="accept an adapter whose "
                                          "base_model_name_or_path names another model of the same shape"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a data root (promptsource/templates/, bigbench/, rows/, hub/, manual/; docs/data.md)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Put peft PROMPT_TUNING adapters into a prompt bank, each as the prompt of its (source, template)."""
    setup_logging(verbose)
    from rospr_harness.method.adapters import AdapterSource, import_peft
    from rospr_harness.tasks.base import DataSettings

    if not len(adapter) == len(source) == len(template):
        raise SettingError(f"{len(adapter)} --adapter, {len(source)} --source and {len(template)} --template: give "
                           "one --source and one --template per --adapter, in the same order")
    items = [AdapterSource(a, s, t) for a, s, t in zip(adapter, source, template)]
    saved = import_peft(model, bank, items, DataSettings.from_env(data_dir), split, rows, not ignore_base_name)
    for p in saved:
        err.print(f"imported {p.id}: P={p.shape[0]}, D={p.shape[1]}, {len(p.answer_choices)} answer choices")
    err.print(f"prompt bank {bank}: {len(saved)} adapter(s) imported")


@bank_app.command("export-peft")
def bank_export_peft(
    bank: Path = typer.Option(Path("prompts"), "--bank", help="prompt bank directory"),
    ids: List[str] = typer.Option([], "--id", help="a prompt id (<source>/<template>; repeatable; all by default)"),
    out: Path = typer.Option(..., "--out", help="the adapter folder (one --id), else a folder of adapter folders"),
    model: Optional[str] = typer.Option(None, "--model", help="the backbone: checked against the bank, named in "
                                        "each adapter_config.json (default: the bank's backbone name)"),
) -> None:
    """Write bank prompts as peft PROMPT_TUNING adapters (PeftModel.from_pretrained loads them)."""
    setup_logging(False)
    from rospr_harness.method.adapters import export_peft

    with claim_folder(out, "peft-adapters", fix="choose a new or empty --out (rospr replaces only adapters it "
                      "wrote there)"):
        folders = export_peft(bank, out, ids, model)
    for folder in folders:
        typer.echo(str(folder))
    err.print(f"wrote {len(folders)} peft adapter(s) under {out}")


@bank_app.command("rekey")
def bank_rekey(
    bank: Path = typer.Option(..., "--bank", help="a prompt bank tuned before rospr recorded the backbone's weights"),
    model: str = typer.Option(..., "--model", help="the checkpoint (folder or hub name) the bank was tuned on"),
) -> None:
    """Record the weights digest of MODEL in an old (version 1) bank: your word that its prompts were
    tuned on those weights. The architecture must be MODEL's and every prompt file intact."""
    setup_logging(False)
    from rospr.backbone import load_backbone  # torch: the model's identity counts its parameters
    from rospr.softprompt import rekey

    identity = load_backbone(model)[2].as_dict()
    rekeyed = rekey(bank, identity)
    err.print(f"prompt bank {bank}: {len(rekeyed.ids())} prompt(s) now keyed to the weights {identity['weights']} "
              f"of {identity['name']}")


@library_app.command("build")
def library_build(
    prompts: Path = typer.Option(Path("prompts"), "--prompts", help="prompt bank directory (rospr tune --out)"),
    retriever: str = typer.Option("build/tiny-t0", "--retriever", help="encoder checkpoint of the dense retriever"),
    out: Path = typer.Option(Path("library"), "--out", help="library directory to write"),
    n: int = typer.Option(100, "--n", min=1, help="training instances per prompt"),
    index: str = typer.Option("flat", "--index", help="flat (exact inner product), ivf or hnsw"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="a data root (promptsource/templates/, bigbench/, rows/, hub/, manual/; docs/data.md)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Embed n training instances of every prompt of a bank and write the FAISS library."""
    setup_logging(verbose)
    from rospr_harness.method.library import build_library_from_bank
    from rospr_harness.tasks.base import DataSettings
    from rospr.backbone import check_checkpoint

    check_checkpoint(retriever, "--retriever")
    with claim_folder(out, "library", fix="choose a new or empty --out (rospr replaces only a library it wrote there)",
                      ours=_holds_library):
        lib = build_library_from_bank(str(prompts), retriever, str(out), n, _index_config(index),
                                      data_settings=DataSettings.from_env(data_dir))
    err.print(f"library {out}: {len(lib)} keys of {len(lib.prompt_ids)} prompts")


def _holds_library(folder: Path) -> bool:
    """Whether ``folder`` holds a sealed library of ours (one built before rospr marked its folders)."""
    from rospr.artifacts import holds_manifest
    from rospr.library import LIBRARY_FORMAT, LIBRARY_VERSION

    return holds_manifest(folder / "manifest.json", LIBRARY_FORMAT, LIBRARY_VERSION)


def _index_config(index: str):
    """The index settings of ``--index``; refuses (``SettingError``) a type that is none of ours."""
    from pydantic import ValidationError

    from rospr_harness.config import IndexConfig

    try:
        return IndexConfig(type=index)
    except ValidationError:
        raise SettingError(f"--index {index!r}: choose flat, ivf or hnsw") from None
