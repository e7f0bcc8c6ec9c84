"""Soft prompts and the prompt bank: one trained P x D prompt per (source dataset, hard prompt).

A bank is a directory::

    manifest.json               format "rospr-prompt-bank", the backbone's identity, one entry per prompt
    prompts/<slug>.safetensors  one tensor "prompt", float32 [P, D]

Each manifest entry holds the prompt's ``id`` (``"<source>/<template>"``), ``source``, ``template``,
``answer_choices`` of the template, ``P``, ``D``, ``dtype``, the file and its ``sha256``,
``train_key`` (the content address of everything that went into training it), ``steps``,
``final_loss`` and ``seed``. The manifest is sealed by ``manifest_hash``. Prompts are added one at a
time (file first, then the manifest, both atomic), so an interrupted tuning leaves a valid bank
holding the prompts finished so far.

Loading refuses, naming the file: a wrong shape or dtype, non-finite values, a backbone other than
the one asked for, and any file or manifest whose hash does not match (edited on disk).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from rospr.identity import digest_json
from rospr.artifacts import ArtifactError, check_file, read_manifest, sha256_file, write_manifest, atomic_write_bytes

log = logging.getLogger(__name__)

BANK_FORMAT = "rospr-prompt-bank"
BANK_VERSION = 1
TENSOR = "prompt"
# Identity fields that must agree between a bank and the backbone it is used with. The name may
# differ (a hub name vs a local copy of the same checkpoint); the architecture may not.
IDENTITY_KEYS = ("config_hash", "d_model", "vocab_size", "n_parameters")


@dataclass(frozen=True)
class SoftPrompt:
    """A trained soft prompt: ``values`` float32 [P, D] and where it came from."""

    id: str
    source: str
    template: str
    answer_choices: tuple[str, ...]
    values: np.ndarray = field(repr=False, compare=False)
    steps: int = 0
    final_loss: float | None = None
    seed: int = 0
    train_key: str = ""
    sha256: str = ""  # of its safetensors file, once saved

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)  # type: ignore[return-value]


def prompt_id(source: str, template: str) -> str:
    return f"{source}/{template}"


def _slug(pid: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", pid)[:80].strip("_")
    return f"{clean}__{hashlib.sha256(pid.encode()).hexdigest()[:8]}"


def check_values(values: np.ndarray, where: str, d_model: int | None = None, length: int | None = None) -> None:
    """Refuse (``ArtifactError``) anything but a finite float32 [P, D] array of the expected sizes."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float32:
        raise ArtifactError(f"{where}: dtype {getattr(values, 'dtype', type(values))}, expected float32")
    if values.ndim != 2:
        raise ArtifactError(f"{where}: shape {values.shape}, expected [P, D]")
    if length is not None and values.shape[0] != length:
        raise ArtifactError(f"{where}: {values.shape[0]} prompt vectors, the manifest says P={length}")
    if d_model is not None and values.shape[1] != d_model:
        raise ArtifactError(f"{where}: vectors of size {values.shape[1]}, the backbone's d_model is {d_model}")
    if not np.isfinite(values).all():
        raise ArtifactError(f"{where}: non-finite values (NaN or inf); retrain this prompt")


def check_backbone(recorded: Mapping[str, Any], expected: Mapping[str, Any] | None, where: str) -> None:
    """Refuse a bank trained for another backbone (architecture fields of ``ModelIdentity``)."""
    if expected is None:
        return
    for key in IDENTITY_KEYS:
        if key in expected and recorded.get(key) != expected.get(key):
            raise ArtifactError(
                f"{where}: trained for backbone {recorded.get('name')!r} ({key}={recorded.get(key)!r}), "
                f"not for {expected.get('name')!r} ({key}={expected.get(key)!r}); tune a bank for this "
                "model (another prompt_bank directory) or use the model it was trained for"
            )
    if recorded.get("name") != expected.get("name"):
        log.info("%s: backbone recorded as %r, used with %r (same architecture)", where,
                 recorded.get("name"), expected.get("name"))


class PromptBank:
    """A directory of soft prompts with its sealed manifest. Use ``open``/``load``, not the constructor."""

    def __init__(self, root: Path, backbone: dict, entries: list[dict], prompts: dict[str, SoftPrompt],
                 manifest_hash: str = "") -> None:
        self.root = Path(root)
        self.backbone = backbone
        self.entries = entries
        self.prompts = prompts
        self.manifest_hash = manifest_hash

    # -- reading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path, backbone: Mapping[str, Any] | None = None,
             ids: Iterable[str] | None = None) -> "PromptBank":
        """Load and check a bank (all prompts, or only ``ids``).

        ``backbone`` is the identity (``ModelIdentity.as_dict()``) of the model the prompts will be
        used with; a bank trained for another architecture is refused. Refuses (``ArtifactError``)
        a missing id, an edited file or manifest, a wrong shape or dtype and non-finite values.
        """
        root = Path(root)
        path = root / "manifest.json"
        manifest = read_manifest(path, BANK_FORMAT, BANK_VERSION)
        check_backbone(manifest["backbone"], backbone, str(path))
        entries = {e["id"]: e for e in manifest["prompts"]}
        wanted = list(entries) if ids is None else list(ids)
        prompts = {}
        for pid in wanted:
            if pid not in entries:
                raise ArtifactError(f"{path}: no prompt {pid!r}; tune it first (`rospr tune`)")
            prompts[pid] = _read_prompt(root, entries[pid], manifest["backbone"])
        return cls(root, manifest["backbone"], manifest["prompts"], prompts, manifest["manifest_hash"])

    @classmethod
    def open(cls, root: str | Path, backbone: Mapping[str, Any]) -> "PromptBank":
        """Open a bank for adding prompts: load it if it exists (checked, prompts not read), else
        start an empty one for ``backbone``."""
        root = Path(root)
        if (root / "manifest.json").exists():
            manifest = read_manifest(root / "manifest.json", BANK_FORMAT, BANK_VERSION)
            check_backbone(manifest["backbone"], backbone, str(root / "manifest.json"))
            return cls(root, manifest["backbone"], manifest["prompts"], {}, manifest["manifest_hash"])
        return cls(root, dict(backbone), [], {})

    def entry(self, pid: str) -> dict | None:
        return next((e for e in self.entries if e["id"] == pid), None)

    def get(self, pid: str) -> SoftPrompt:
        """The prompt ``pid``, read (and checked) on first use."""
        if pid not in self.prompts:
            entry = self.entry(pid)
            if entry is None:
                raise ArtifactError(f"{self.root / 'manifest.json'}: no prompt {pid!r}")
            self.prompts[pid] = _read_prompt(self.root, entry, self.backbone)
        return self.prompts[pid]

    def has_valid(self, pid: str, train_key: str) -> bool:
        """Whether ``pid`` is in the bank, trained from ``train_key`` or imported (``rospr.peft_adapter``:
        an imported prompt stands for its (source, template) whatever the settings; remove it from the
        bank to tune one instead). Refuses an edited prompt file."""
        entry = self.entry(pid)
        if entry is None or (entry.get("train_key") != train_key and not entry.get("imported_from")):
            return False
        self.get(pid)  # an edited file is refused, not silently retrained (writes are atomic)
        return True

    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    # -- writing ------------------------------------------------------------------------------
    def add(self, prompt: SoftPrompt, extra: Mapping[str, Any] | None = None) -> SoftPrompt:
        """Save ``prompt`` (file, then manifest; both atomic), replacing an entry with its id."""
        from safetensors.numpy import save

        check_values(prompt.values, f"prompt {prompt.id}", int(self.backbone["d_model"]))
        rel = f"prompts/{_slug(prompt.id)}.safetensors"
        path = self.root / rel
        atomic_write_bytes(path, save({TENSOR: np.ascontiguousarray(prompt.values)}, metadata={"id": prompt.id}))
        digest = sha256_file(path)
        p, d = prompt.values.shape
        entry = {
            "id": prompt.id, "source": prompt.source, "template": prompt.template,
            "answer_choices": list(prompt.answer_choices), "P": int(p), "D": int(d), "dtype": "float32",
            "file": rel, "sha256": digest, "train_key": prompt.train_key, "steps": int(prompt.steps),
            "final_loss": None if prompt.final_loss is None else float(prompt.final_loss),
            "seed": int(prompt.seed), **dict(extra or {}),
        }
        self.entries = [e for e in self.entries if e["id"] != prompt.id] + [entry]
        sealed = write_manifest(self.root / "manifest.json", {
            "format": BANK_FORMAT, "version": BANK_VERSION, "backbone": self.backbone, "prompts": self.entries,
        })
        self.manifest_hash = sealed["manifest_hash"]
        saved = SoftPrompt(prompt.id, prompt.source, prompt.template, tuple(prompt.answer_choices), prompt.values,
                           prompt.steps, prompt.final_loss, prompt.seed, prompt.train_key, digest)
        self.prompts[prompt.id] = saved
        return saved

    def content_hash(self, ids: Iterable[str] | None = None) -> str:
        """sha256 over the entries of ``ids`` (all by default): changes when any of those prompts does."""
        wanted = set(self.ids() if ids is None else ids)
        return digest_json({"backbone": {k: self.backbone.get(k) for k in IDENTITY_KEYS},
                            "prompts": sorted((e["id"], e["sha256"]) for e in self.entries if e["id"] in wanted)})


def _read_prompt(root: Path, entry: dict, backbone: Mapping[str, Any]) -> SoftPrompt:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = root / entry["file"]
    check_file(path, entry["sha256"], "prompt bank")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path}: not a readable safetensors file ({exc}); retrain the prompt") from None
    if set(tensors) != {TENSOR}:
        raise ArtifactError(f"{path}: tensors {sorted(tensors)}, expected exactly {TENSOR!r}")
    values = tensors[TENSOR]
    if entry.get("dtype") != "float32":
        raise ArtifactError(f"{root / 'manifest.json'}: prompt {entry['id']}: dtype {entry.get('dtype')!r}, expected float32")
    check_values(values, str(path), int(backbone["d_model"]), int(entry["P"]))
    if values.shape[1] != int(entry["D"]):
        raise ArtifactError(f"{path}: D={values.shape[1]}, the manifest says {entry['D']}")
    return SoftPrompt(entry["id"], entry["source"], entry["template"], tuple(entry["answer_choices"]), values,
                      int(entry["steps"]), entry.get("final_loss"), int(entry.get("seed", 0)),
                      entry.get("train_key", ""), entry["sha256"])


def mix(prompts: list[SoftPrompt], weights: list[float]) -> np.ndarray:
    """The weighted sum of prompts of one shape (INTER). Weights need not be normalised here."""
    if not prompts or len(prompts) != len(weights):
        raise ValueError(f"{len(prompts)} prompts for {len(weights)} weights")
    shapes = {p.shape for p in prompts}
    if len(shapes) != 1:
        raise ValueError(f"cannot interpolate prompts of different shapes {sorted(shapes)}")
    out = np.zeros(prompts[0].shape, dtype=np.float64)
    for p, w in zip(prompts, weights):
        out += float(w) * p.values.astype(np.float64)
    return out.astype(np.float32)
