"""Bank prompts as Hugging Face peft PROMPT_TUNING adapters, out and back in (no peft needed).

A peft prompt-tuning adapter is a folder::

    adapter_config.json         peft_type "PROMPT_TUNING", task_type "SEQ_2_SEQ_LM", num_virtual_tokens P,
                                token_dim D, num_transformer_submodules, num_layers, num_attention_heads,
                                base_model_name_or_path, ...
    adapter_model.safetensors   one tensor "prompt_embeddings" [P * num_transformer_submodules, D]

For a seq2seq model peft's prompt tuning prepends the first P rows to the encoder's input embeddings
and extends the attention mask by P ones; the decoder is untouched (a second block of P rows, written
when ``num_transformer_submodules`` is 2, peft's default for seq2seq, is never read by its prompt
tuning forward). That is exactly ``PromptedT5.encode`` with a [P, D] prompt, so a bank prompt goes out
as ``num_transformer_submodules: 1`` and comes back from either layout as its encoder rows.

Reading refuses (``ArtifactError`` naming the file and the field): another ``peft_type`` or
``task_type``, a ``token_dim``, ``num_layers`` or ``num_attention_heads`` that is not the backbone's,
a ``base_model_name_or_path`` that names another model (unless told to accept it), a
``num_transformer_submodules`` other than 1 or 2, a missing or extra tensor, a shape that does not
match the config, and non-finite values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from rospr.artifacts import ArtifactError, atomic_write_bytes, sha256_file
from rospr.canonical import digest_json
from rospr.parsing import read_json
from rospr.softprompt import PromptBank, SoftPrompt, check_values, prompt_id

log = logging.getLogger(__name__)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
TENSOR = "prompt_embeddings"
PEFT_TYPE = "PROMPT_TUNING"
TASK_TYPE = "SEQ_2_SEQ_LM"
IMPORT_FORMAT = "peft"
# how safetensors names the dtypes a peft adapter may hold; each is read exactly into float32
READABLE_DTYPES = ("F32", "F16", "BF16", "F64")


@dataclass(frozen=True)
class PeftAdapter:
    """An adapter as read: the encoder prompt ``values`` float32 [P, D], its config, where it was."""

    path: Path
    values: np.ndarray = field(repr=False)
    config: dict = field(repr=False)
    sha256: str  # of adapter_model.safetensors


def model_shape(config: Mapping[str, Any]) -> dict:
    """The fields of a checkpoint config (``PretrainedConfig.to_dict()``) that an adapter config
    repeats: ``num_layers`` (encoder layers) and ``num_attention_heads``."""
    layers = config.get("num_layers", config.get("num_hidden_layers"))
    heads = config.get("num_heads", config.get("num_attention_heads"))
    return {"num_layers": None if layers is None else int(layers),
            "num_attention_heads": None if heads is None else int(heads)}


def adapter_config(p: int, d: int, base_model_name_or_path: str | None, shape: Mapping[str, Any] | None) -> dict:
    """The ``adapter_config.json`` of a [P, D] encoder prompt: the keys peft 0.21 writes for a
    PROMPT_TUNING seq2seq adapter (``peft_version`` left out: peft fills in its own when it loads)."""
    shape = dict(shape or {})
    return {
        "auto_mapping": None, "base_model_name_or_path": base_model_name_or_path, "inference_mode": True,
        "modules_to_save": None, "num_attention_heads": shape.get("num_attention_heads"),
        "num_layers": shape.get("num_layers"), "num_transformer_submodules": 1, "num_virtual_tokens": int(p),
        "peft_type": PEFT_TYPE, "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "revision": None,
        "task_type": TASK_TYPE, "token_dim": int(d), "tokenizer_kwargs": None, "tokenizer_name_or_path": None,
    }


def write_adapter(values: np.ndarray, out_dir: str | Path, base_model_name_or_path: str | None,
                  shape: Mapping[str, Any] | None = None) -> Path:
    """Write ``values`` (float32 [P, D]) as a peft PROMPT_TUNING adapter folder ``out_dir`` (created;
    both files written atomically). ``shape``: ``model_shape`` of the backbone (null fields otherwise,
    which peft fills in from the model it is loaded on). Returns ``out_dir``. Refuses
    (``ArtifactError``) values that are not a finite float32 [P, D] array."""
    from safetensors.numpy import save

    out = Path(out_dir)
    check_values(values, f"prompt for {out}")
    p, d = values.shape
    atomic_write_bytes(out / WEIGHTS_FILE, save({TENSOR: np.ascontiguousarray(values)}, metadata={"format": "pt"}))
    config = adapter_config(p, d, base_model_name_or_path, shape)
    atomic_write_bytes(out / CONFIG_FILE, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    return out


def _same_model(a: str, b: str) -> bool:
    """Whether two model names can be the same checkpoint: equal, or the same last path component
    (a hub id ``org/T0_3B`` and a local copy ``/models/T0_3B``)."""
    return a == b or Path(a.rstrip("/")).name == Path(b.rstrip("/")).name


def _read_config(path: Path) -> dict:
    fix = "give the folder of a peft PROMPT_TUNING adapter (adapter_config.json + adapter_model.safetensors)"
    if not path.is_file():
        raise ArtifactError(f"{path}: no adapter config; {fix}")
    return read_json(path, ArtifactError, fix)


def _int_field(config: dict, name: str, where: Path) -> int:
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ArtifactError(f"{where}: field {name!r} is {value!r}, expected a whole number of 1 or more")
    return value


def check_config(config: dict, where: Path, backbone: Mapping[str, Any], shape: Mapping[str, Any] | None = None,
                 check_base_name: bool = True) -> tuple[int, int]:
    """Refuse (``ArtifactError`` naming ``where`` and the field) an adapter config that is not a
    seq2seq PROMPT_TUNING adapter for ``backbone`` (``ModelIdentity.as_dict()``; ``shape``:
    ``model_shape`` of its checkpoint config, when known). Returns (num_virtual_tokens,
    num_transformer_submodules)."""
    if config.get("peft_type") != PEFT_TYPE:
        raise ArtifactError(f"{where}: field 'peft_type' is {config.get('peft_type')!r}; only {PEFT_TYPE} adapters "
                            "are soft prompts (prefix tuning, p-tuning and LoRA change the model itself)")
    if config.get("task_type") != TASK_TYPE:
        raise ArtifactError(f"{where}: field 'task_type' is {config.get('task_type')!r}, expected {TASK_TYPE!r} "
                            "(a prompt for an encoder-decoder such as T0)")
    p = _int_field(config, "num_virtual_tokens", where)
    d = _int_field(config, "token_dim", where)
    if d != int(backbone["d_model"]):
        raise ArtifactError(f"{where}: field 'token_dim' is {d}, the backbone {backbone.get('name')!r} has d_model "
                            f"{backbone['d_model']}; this adapter was trained for another model")
    for name, value in (shape or {}).items():
        if config.get(name) is not None and value is not None and config[name] != value:
            raise ArtifactError(f"{where}: field {name!r} is {config[name]!r}, the backbone "
                                f"{backbone.get('name')!r} has {value}; this adapter was trained for another model")
    base = config.get("base_model_name_or_path")
    if check_base_name and base and backbone.get("name") and not _same_model(str(base), str(backbone["name"])):
        raise ArtifactError(f"{where}: field 'base_model_name_or_path' is {base!r}, the backbone is "
                            f"{backbone['name']!r}; use the model it was trained on, or accept it as the same "
                            "checkpoint under another name (--ignore-base-name)")
    subs = config.get("num_transformer_submodules")
    if subs not in (1, 2) or isinstance(subs, bool):
        raise ArtifactError(f"{where}: field 'num_transformer_submodules' is {subs!r}; a seq2seq prompt-tuning "
                            "adapter has 1 (encoder prompt only) or 2 (peft's default: encoder and an unused copy)")
    return p, subs


def _read_tensor(path: Path) -> np.ndarray:
    """The one tensor ``prompt_embeddings`` of ``path`` as float32 (any float dtype safetensors
    stores, bfloat16 included, converted exactly). Refuses a missing file, another tensor set."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ArtifactError(f"{path}: no adapter weights; a peft adapter folder holds {WEIGHTS_FILE}")
    try:
        with safe_open(str(path), framework="np") as fh:
            names = sorted(fh.keys())
            if names != [TENSOR]:
                raise ArtifactError(f"{path}: tensors {names}, expected exactly [{TENSOR!r}]")
            sl = fh.get_slice(TENSOR)
            dtype, shape = sl.get_dtype(), list(sl.get_shape())
    except SafetensorError as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc}); export the adapter again") from None
    if dtype not in READABLE_DTYPES:
        raise ArtifactError(f"{path}: tensor {TENSOR!r} has dtype {dtype}, expected one of {', '.join(READABLE_DTYPES)}")
    if dtype == "BF16":  # numpy has no bfloat16: read through torch, exact in float32
        from safetensors.torch import load_file

        return load_file(str(path))[TENSOR].float().numpy().reshape(shape)
    from safetensors.numpy import load_file as load_np

    return load_np(str(path))[TENSOR].astype(np.float32)


def read_adapter(adapter_dir: str | Path, backbone: Mapping[str, Any], shape: Mapping[str, Any] | None = None,
                 check_base_name: bool = True) -> PeftAdapter:
    """Read the peft PROMPT_TUNING adapter folder ``adapter_dir`` for ``backbone``
    (``ModelIdentity.as_dict()``; ``shape``: ``model_shape`` of its checkpoint config, checked when
    given). Returns its encoder prompt as float32 [P, D] (the first P rows, all that peft's seq2seq
    prompt tuning feeds the model). Refuses what the module docstring lists (``ArtifactError``)."""
    folder = Path(adapter_dir)
    config_path, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    config = _read_config(config_path)
    p, subs = check_config(config, config_path, backbone, shape, check_base_name)
    values = _read_tensor(weights)
    d = int(config["token_dim"])
    if values.ndim != 2 or tuple(values.shape) != (p * subs, d):
        raise ArtifactError(f"{weights}: tensor {TENSOR!r} has shape {list(values.shape)}, {CONFIG_FILE} says "
                            f"[num_virtual_tokens * num_transformer_submodules, token_dim] = [{p * subs}, {d}]")
    values = np.ascontiguousarray(values[:p], dtype=np.float32)
    check_values(values, str(weights), d, p)
    if subs == 2:
        log.debug("%s: num_transformer_submodules 2; rows %d.. are not used by prompt tuning, read rows 0..%d",
                  weights, p, p - 1)
    return PeftAdapter(folder, values, config, sha256_file(weights))


def import_adapter(bank: PromptBank, adapter_dir: str | Path, source: str, template: str,
                   answer_choices: Sequence[str], shape: Mapping[str, Any] | None = None, split: str = "train",
                   rows: int | None = None, check_base_name: bool = True) -> SoftPrompt:
    """Add the adapter at ``adapter_dir`` to ``bank`` (opened for its backbone) as the prompt of
    (``source``, ``template``) with the template's ``answer_choices``. Returns the saved prompt.

    An imported prompt was not trained here: ``steps`` 0, no loss, ``train_key``
    ``digest_json({"imported": "peft", "sha256": <weights' sha256>})``; its entry records
    ``imported_from`` ``"peft:<absolute adapter folder>"`` and the adapter's sha256, and ``origin``
    the source split (and rows) whose training inputs become its library keys. A bank that holds an
    imported prompt keeps it for its (source, template) whatever the tuning settings (tuning does not
    replace it). Refuses (``ArtifactError``) what ``read_adapter`` refuses.
    """
    adapter = read_adapter(adapter_dir, bank.backbone, shape, check_base_name)
    pid = prompt_id(source, template)
    key = digest_json({"imported": IMPORT_FORMAT, "sha256": adapter.sha256})
    prompt = SoftPrompt(pid, source, template, tuple(answer_choices), adapter.values, 0, None, 0, key)
    return bank.add(prompt, {"origin": {"split": split, "rows": rows},
                             "imported_from": f"{IMPORT_FORMAT}:{adapter.path.resolve()}",
                             "adapter_sha256": adapter.sha256, "first_loss": None, "n_examples": 0})


def export_prompt(bank: PromptBank, pid: str, out_dir: str | Path, shape: Mapping[str, Any] | None = None,
                  base_model_name_or_path: str | None = None) -> Path:
    """Write the bank prompt ``pid`` as a peft adapter folder ``out_dir``; ``base_model_name_or_path``
    defaults to the bank's backbone name. Returns ``out_dir``. Refuses (``ArtifactError``) an unknown
    id and an edited prompt file."""
    prompt = bank.get(pid)
    return write_adapter(prompt.values, out_dir, base_model_name_or_path or bank.backbone.get("name"), shape)


