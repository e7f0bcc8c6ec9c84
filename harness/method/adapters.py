"""``rospr bank import-peft`` / ``export-peft``: peft PROMPT_TUNING adapters into and out of a prompt bank.

The format and its checks are ``rospr.peft_adapter``'s; here the harness supplies what an adapter
does not carry: the backbone's identity (loaded from ``model``) and the answer choices of the
(source, template) it was trained on, rendered from the source's training split exactly as tuning
records them (``bank.tuning_jobs``), so an imported prompt is used by the library and a run like
one trained here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rospr_harness.tasks import get_task
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr.peft_adapter import export_prompt, import_adapter, model_shape
from rospr.softprompt import PromptBank, SoftPrompt, _slug

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterSource:
    """One adapter to import: its folder and the (source dataset, template) it was trained on."""

    adapter: Path
    source: str
    template: str


def template_choices(source: str, template: str, settings: DataSettings, split: str = "train",
                     rows: int | None = None) -> tuple[str, ...]:
    """The answer choices of ``template`` on ``source``'s ``split`` (first ``rows``): shared by every
    labelled row, else () (a template whose choices vary by row, or a generation template). Refuses
    (``TaskError``) an unknown source or template and a split without labelled rows."""
    task = get_task(source, settings)
    data = task.load(template, split=split, limit=rows, training=True)
    examples = [ex for ex in data.examples if ex.labelled or ex.target_text]
    if not examples:
        raise TaskError(f"{source} / {template}: no labelled {split} rows; an imported prompt's library keys are "
                        "its source's training inputs (give --split, or rows with `rospr data synth`)")
    first = examples[0].choices
    return tuple(first) if all(ex.choices == first for ex in examples) else ()


def import_peft(model: str, bank_dir: str | Path, items: Sequence[AdapterSource], settings: DataSettings,
                split: str = "train", rows: int | None = None, check_base_name: bool = True) -> list[SoftPrompt]:
    """Import every adapter of ``items`` into the bank ``bank_dir`` (created for ``model`` when absent).
    Returns the saved prompts. Refuses (``SettingError``) two items for one (source, template), before
    anything is imported; (``ArtifactError``) a bank of another backbone and every
    adapter ``rospr.peft_adapter.read_adapter`` refuses; (``TaskError``) an unknown (source, template)."""
    from rospr.backbone import load_backbone  # torch: only when adapters are imported
    from rospr.softprompt import prompt_id

    _each_once([prompt_id(i.source, i.template) for i in items], "--source/--template",
               "a bank holds one prompt per (source, template): give one adapter for it")
    loaded, _, identity = load_backbone(model)
    shape = model_shape(loaded.config.to_dict())
    bank = PromptBank.open(bank_dir, identity.as_dict())
    saved = []
    for item in items:
        choices = template_choices(item.source, item.template, settings, split, rows)
        saved.append(import_adapter(bank, item.adapter, item.source, item.template, choices, shape, split, rows,
                                    check_base_name))
    return saved


def _each_once(keys: list[str], option: str, fix: str) -> None:
    """Refuse (``SettingError``) a key given twice, before anything is done: every count reported is then of
    distinct prompts (two adapters for one prompt would be reported as two, and one kept)."""
    from rospr.errors import SettingError

    twice = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
    if twice is not None:
        raise SettingError(f"{option}: prompt {twice} is given {keys.count(twice)} times; {fix}")


def export_peft(bank_dir: str | Path, out: str | Path, ids: Sequence[str] = (), model: str | None = None) -> list[Path]:
    """Write bank prompts as peft adapters: one id into the folder ``out``, several (or all, when
    ``ids`` is empty) into ``out/<slug of the id>/``. With ``model`` (a checkpoint or hub name) the
    bank is checked against its config and the adapters name it and carry its layer and head counts.
    Returns the adapter folders. Refuses (``SettingError``) an id given twice, before anything is written;
    (``ArtifactError``) an unknown id, an edited bank and a
    ``model`` the bank was not trained for."""
    from rospr.softprompt import check_backbone

    bank = PromptBank.load(bank_dir, ids=[])
    shape, base = None, None
    if model is not None:
        from transformers import AutoConfig

        from rospr.identity import config_digest, display_name, weights_digest

        config = AutoConfig.from_pretrained(model).to_dict()
        # the hash of config.json as written, as every backbone identity (rospr.identity.backbone_identity)
        check_backbone(bank.backbone, {"name": display_name(model), "config_hash": config_digest(model),
                                       "d_model": config.get("d_model"), "weights": weights_digest(model)},
                       str(bank_dir))
        shape, base = model_shape(config), model
    _each_once(list(ids), "--id", "give each prompt once")
    wanted = list(ids) or bank.ids()
    single = len(ids) == 1
    return [export_prompt(bank, pid, Path(out) if single else Path(out) / _slug(pid), shape, base) for pid in wanted]
