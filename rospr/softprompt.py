"""Soft prompts and the prompt bank: one trained P x D prompt per (source dataset, hard prompt).

A bank is a folder of ``rospr.store`` entries, one per prompt::

    prompts/<slug>/manifest.json       format "rospr-prompt-bank" version 3, sealed: the backbone's
                                       identity, the prompt's fields, the sha256 of its file
    prompts/<slug>/prompt.safetensors  one tensor "prompt", float32 [P, D]

A prompt's fields (``PromptBank.entries``) are its ``id`` (``"<source>/<template>"``), ``source``,
``template``, ``answer_choices`` of the template, ``P``, ``D``, ``dtype``, ``train_key`` (the content
address of everything that went into training it: a prompt is reused when its key is the one asked
for), ``steps``, ``final_loss``, ``seed`` and ``origin`` (the split and rows it was trained on, and
``source_key``: the digest of what those rows were rendered from, so a run can tell the prompt is
current without rendering them: ``rospr_harness.method.bank``), ``device`` and ``tune_dtype`` (the device
class and dtype it was tuned on: recorded, not in ``train_key``, docs/tuning.md); ``file`` and ``sha256``
say where its tensor is.

Each prompt is staged, sealed and published by the store on its own (a rename), so a tuning of N
prompts writes each once, an interrupted tuning leaves every prompt it finished (the next one reuses
them), and two tunings into one bank for different sources never touch each other's entries: there
is no bank-level file to merge. A link inside the bank is never written through (``ContentStore.path``).
Banks of the previous layout (one ``manifest.json`` for the bank, version 2) are moved into this one
the first time they are opened (``migrate``); a ``journal.jsonl`` of theirs (a tuning interrupted under
that layout) is dropped with a warning, and those prompts are tuned again.

Loading refuses, naming the file: a wrong shape or dtype, non-finite values, a backbone other than
the one asked for, and any file or manifest whose hash does not match (edited on disk).

Weights. A soft prompt is trained against one set of weights: T0-3B and T5-LM-adapt-XL share a
shape, not a bank. Each entry's ``backbone`` records the weights digest (``weights``:
``rospr.identity.weights_digest``) and a bank is used only with a backbone of the same digest and
architecture (``check_backbone``). Banks written before the digest was recorded (version 1) are
refused with the way to re-key one (``rekey``, ``rospr bank rekey``): the user, who knows which
checkpoint tuned it, names it; nothing is assumed. ``train_key`` keeps to the architecture fields
(``IDENTITY_KEYS``): within one bank the weights are fixed by the entries, and a re-keyed bank's
prompts stay valid.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from rospr.canonical import digest_json, sha256_text
from rospr.artifacts import ArtifactError, check_file, read_manifest
from rospr.store import ContentStore, fsync_dir

log = logging.getLogger(__name__)

BANK_FORMAT = "rospr-prompt-bank"
BANK_VERSION = 3  # 3: one store entry per prompt; 2: one manifest and a journal; 1: no weights digest
LEGACY_VERSION = 2  # the bank-level manifest that ``migrate`` moves into entries
LEGACY_MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"  # the previous layout's prompts added since its manifest (dropped by ``migrate``)
PROMPTS = "prompts"
PROMPT_FILE = "prompt.safetensors"
TENSOR = "prompt"
FIX = "remove that prompt's folder to tune it again"
# Architecture fields that must agree between a bank and the backbone it is used with (and that a
# prompt's train_key covers). The name may differ (a hub name vs a local copy); these may not.
IDENTITY_KEYS = ("config_hash", "d_model", "vocab_size", "n_parameters")
WEIGHTS_KEY = "weights"  # the backbone's weights digest: always compared, never optional
BACKBONE_KEYS = (*IDENTITY_KEYS, WEIGHTS_KEY)


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
    return f"{clean}__{sha256_text(pid)[:8]}"


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
    """Refuse (``ArtifactError``, naming both values) a bank trained for another backbone: the
    architecture fields of ``ModelIdentity`` that ``expected`` gives, and its weights digest, which it
    must give (an identity without one cannot show it is the same model)."""
    if expected is None:
        return
    for key in IDENTITY_KEYS:
        if key in expected and recorded.get(key) != expected.get(key):
            raise ArtifactError(
                f"{where}: trained for backbone {recorded.get('name')!r} ({key}={recorded.get(key)!r}), "
                f"not for {expected.get('name')!r} ({key}={expected.get(key)!r}); tune a bank for this "
                "model (another prompt_bank directory) or use the model it was trained for"
            )
    if not expected.get(WEIGHTS_KEY) or recorded.get(WEIGHTS_KEY) != expected.get(WEIGHTS_KEY):
        raise ArtifactError(
            f"{where}: trained on the weights {recorded.get(WEIGHTS_KEY)!r} of {recorded.get('name')!r}, the model "
            f"{expected.get('name')!r} has weights {expected.get(WEIGHTS_KEY)!r}: soft prompts belong to the weights "
            "they were tuned on, not to an architecture; point model.name_or_path at the checkpoint the bank was "
            "tuned on, or tune a bank for this model (another rospr.prompt_bank folder)"
        )
    if recorded.get("name") != expected.get("name"):
        log.info("%s: backbone recorded as %r, used with %r (same architecture)", where,
                 recorded.get("name"), expected.get("name"))


def bank_store(root: str | Path) -> ContentStore:
    """The store of the bank at ``root``: one entry ``prompts/<slug>`` per prompt."""
    return ContentStore(root, BANK_FORMAT, BANK_VERSION, fix=FIX)


def entry_name(pid: str) -> str:
    """The store entry of prompt ``pid``."""
    return f"{PROMPTS}/{_slug(pid)}"


class PromptBank:
    """The soft prompts of one bank folder. Use ``open``/``load``, not the constructor."""

    def __init__(self, root: Path, backbone: dict, entries: list[dict], prompts: dict[str, SoftPrompt]) -> None:
        self.root = Path(root)
        self.backbone = backbone
        self.entries = entries
        self.prompts = prompts

    # -- reading ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path, backbone: Mapping[str, Any] | None = None,
             ids: Iterable[str] | None = None) -> "PromptBank":
        """Load and check a bank (all prompts, or only ``ids``).

        ``backbone`` is the identity (``ModelIdentity.as_dict()``) of the model the prompts will be
        used with; a bank trained for another architecture is refused. Refuses (``ArtifactError``)
        a folder with no bank, a missing id, an edited file or manifest, a wrong shape or dtype and
        non-finite values.
        """
        root = Path(root)
        if not (root / PROMPTS).is_dir() and not (root / LEGACY_MANIFEST).exists():
            raise ArtifactError(f"{root}: no prompt bank here (no {PROMPTS}/ folder); tune one first (`rospr tune`)")
        bank = cls.open(root, backbone)
        for pid in bank.ids() if ids is None else list(ids):
            bank.get(pid)
        return bank

    @classmethod
    def open(cls, root: str | Path, backbone: Mapping[str, Any] | None) -> "PromptBank":
        """The bank at ``root`` for adding prompts: its entries read (manifests checked, prompts not
        read), or none yet (nothing is written). A bank of the previous layout is migrated first.
        Refuses (``ArtifactError``) entries of another backbone than ``backbone`` or of one another,
        and a new bank whose ``backbone`` has no weights digest."""
        root = Path(root)
        migrate(root)
        listed = _read_entries(root)
        if listed:
            for _entry, recorded, where in listed:
                check_backbone(recorded, backbone or listed[0][1], where)
            return cls(root, dict(listed[0][1]), [e for e, _, _ in listed], {})
        if backbone is None:
            return cls(root, {}, [], {})
        if not backbone.get(WEIGHTS_KEY):
            raise ArtifactError(f"{root}: a new bank needs the backbone's weights digest (field {WEIGHTS_KEY!r} of "
                                "its identity: rospr.identity.backbone_identity); none was given")
        return cls(root, dict(backbone), [], {})

    def entry(self, pid: str) -> dict | None:
        return next((e for e in self.entries if e["id"] == pid), None)

    def get(self, pid: str) -> SoftPrompt:
        """The prompt ``pid``, read (and checked) on first use."""
        if pid not in self.prompts:
            entry = self.entry(pid)
            if entry is None:
                raise ArtifactError(f"{self.root}: no prompt {pid!r}; tune it first (`rospr tune`)")
            self.prompts[pid] = _read_prompt(self.root, entry, self.backbone)
        return self.prompts[pid]

    def has_valid(self, pid: str, train_key: str) -> bool:
        """Whether ``pid`` is in the bank, trained from ``train_key`` or imported (``rospr.peft_adapter``:
        an imported prompt stands for its (source, template) whatever the settings; remove it from the
        bank to tune one instead). Refuses an edited prompt file."""
        entry = self.entry(pid)
        if entry is None or (entry.get("train_key") != train_key and not entry.get("imported_from")):
            return False
        self.get(pid)  # an edited file is refused, not silently retrained (entries are published whole)
        return True

    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    # -- writing ------------------------------------------------------------------------------
    def add(self, prompt: SoftPrompt, extra: Mapping[str, Any] | None = None) -> SoftPrompt:
        """Publish ``prompt`` as its own store entry (its file and fields, sealed), replacing the entry
        of its id."""
        from safetensors.numpy import save

        check_values(prompt.values, f"prompt {prompt.id}", int(self.backbone["d_model"]))
        p, d = prompt.values.shape
        fields = {
            "id": prompt.id, "source": prompt.source, "template": prompt.template,
            "answer_choices": list(prompt.answer_choices), "P": int(p), "D": int(d), "dtype": "float32",
            "train_key": prompt.train_key, "steps": int(prompt.steps),
            "final_loss": None if prompt.final_loss is None else float(prompt.final_loss),
            "seed": int(prompt.seed), **dict(extra or {}),
        }
        entry = self._publish(fields, save({TENSOR: np.ascontiguousarray(prompt.values)}, metadata={"id": prompt.id}))
        saved = SoftPrompt(prompt.id, prompt.source, prompt.template, tuple(prompt.answer_choices), prompt.values,
                           prompt.steps, prompt.final_loss, prompt.seed, prompt.train_key, entry["sha256"])
        self.prompts[prompt.id] = saved
        return saved

    def _publish(self, fields: dict, data: bytes) -> dict:
        """Stage the tensor file ``data`` and publish it with ``fields`` under the bank's backbone; the
        entry (``fields`` with ``file`` and ``sha256``) replaces the one of its id in ``entries``."""
        store = bank_store(self.root)
        name = entry_name(fields["id"])
        stage = store.stage(name)
        try:
            digest = stage.write_bytes(PROMPT_FILE, data)
        except BaseException:
            store.drop(stage)
            raise
        store.publish(stage, {"backbone": self.backbone, "prompt": fields})
        entry = {**fields, "file": f"{name}/{PROMPT_FILE}", "sha256": digest}
        self.entries = [e for e in self.entries if e["id"] != entry["id"]] + [entry]
        return entry

    def record_origins(self, origins: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the ``origin`` (what a prompt was trained from) of the entries ``origins`` names:
        each entry published anew with its file unchanged (checked first). The caller has shown that
        each prompt is the one that origin would train (``rospr_harness.method.bank``: its
        ``train_key`` matched). Refuses (``ArtifactError``) an id the bank lacks."""
        for pid in origins:
            if self.entry(pid) is None:
                raise ArtifactError(f"{self.root}: no prompt {pid!r}")
        for pid, origin in origins.items():
            entry = self.entry(pid)
            path = self.root / entry["file"]
            check_file(path, entry["sha256"], "prompt bank")
            fields = {k: v for k, v in entry.items() if k not in ("file", "sha256")}
            self._publish({**fields, "origin": dict(origin)}, path.read_bytes())

    def content_hash(self, ids: Iterable[str] | None = None) -> str:
        """sha256 over the backbone (architecture and weights) and the entries of ``ids`` (all by
        default): changes when any of those prompts does, or the weights they belong to."""
        wanted = set(self.ids() if ids is None else ids)
        return digest_json({"backbone": {k: self.backbone.get(k) for k in BACKBONE_KEYS},
                            "prompts": sorted((e["id"], e["sha256"]) for e in self.entries if e["id"] in wanted)})


def _read_entries(root: Path) -> list[tuple[dict, dict, str]]:
    """Every prompt entry of the bank at ``root`` as (fields with ``file`` and ``sha256``, backbone, the
    manifest's path), ordered by id; the store's stages and asides skipped. Refuses (``ArtifactError``)
    an edited manifest and two entries of one id; (``StoreError``) a link planted in the bank."""
    store = bank_store(root)
    folder = store.path(PROMPTS)
    if not folder.is_dir():
        return []
    out, seen = [], {}
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith(".") or sub.is_symlink() or not sub.is_dir():
            continue  # the store's stages and asides; the previous layout's files
        path = sub / store.manifest_name
        manifest = read_manifest(path, BANK_FORMAT, BANK_VERSION, fix=FIX)
        fields, files = manifest.get("prompt"), manifest.get("files")
        if not isinstance(fields, dict) or not isinstance(files, dict) or not isinstance(fields.get("id"), str) \
                or PROMPT_FILE not in files or not isinstance(manifest.get("backbone"), dict):
            raise ArtifactError(f"{path}: fields 'prompt', 'backbone' and 'files' are not a prompt entry's; {FIX}")
        if fields["id"] in seen:
            raise ArtifactError(f"{path}: a second entry for prompt {fields['id']!r} (the first: {seen[fields['id']]}); "
                                "remove the one that should not be there")
        seen[fields["id"]] = path
        entry = {**fields, "file": f"{PROMPTS}/{sub.name}/{PROMPT_FILE}", "sha256": files[PROMPT_FILE]}
        out.append((entry, manifest["backbone"], str(path)))
    return sorted(out, key=lambda item: item[0]["id"])


def migrate(root: str | Path, backbone: Mapping[str, Any] | None = None) -> bool:
    """Move a bank of the previous layout (a sealed ``manifest.json`` of version 2 listing
    ``prompts/<slug>.safetensors``) into one store entry per prompt; True when one was moved. Every
    file is checked against its sha256 first; the old manifest is removed once every entry is
    published (a migration stopped before that is done again: the same entries republished), then
    the old files and journal. ``backbone``: the backbone to record in place of a version-1
    manifest's (``rekey``). Refuses (``ArtifactError``) an edited manifest or file, and a version-1
    bank without ``backbone`` (``read_bank_manifest``)."""
    root = Path(root)
    path = root / LEGACY_MANIFEST
    if not path.exists():
        return False
    manifest = _old_manifest(path) if backbone is not None else read_bank_manifest(path)
    if manifest is None:
        raise ArtifactError(f"{path}: not a version-1 prompt bank; nothing to re-key")
    for entry in manifest["prompts"]:
        check_file(root / entry["file"], entry["sha256"], "prompt bank")
    bank = PromptBank(root, dict(backbone or manifest["backbone"]), [], {})
    for entry in manifest["prompts"]:
        bank._publish({k: v for k, v in entry.items() if k not in ("file", "sha256")}, (root / entry["file"]).read_bytes())
    if (root / JOURNAL).exists():
        log.warning("%s: the prompts of a tuning interrupted under the previous bank layout are not kept; the next "
                    "`rospr tune` (or run) trains them again", root / JOURNAL)
    path.unlink(missing_ok=True)  # the commit point: the folder is of the new layout from here
    fsync_dir(root)
    for entry in manifest["prompts"]:
        if entry["file"] == f"{PROMPTS}/{_slug(entry['id'])}.safetensors":  # never a file named elsewhere
            (root / entry["file"]).unlink(missing_ok=True)
    (root / JOURNAL).unlink(missing_ok=True)
    log.info("%s: moved %d prompts into one store entry each (bank version %d)", root, len(manifest["prompts"]),
             BANK_VERSION)
    return True


def read_bank_manifest(path: Path) -> dict:
    """The checked bank-level manifest of the previous layout (``read_manifest``, version 2). Refuses
    (``ArtifactError``) a version-1 bank, tuned before the backbone's weights were recorded, with the
    way to re-key it."""
    path = Path(path)
    try:
        return read_manifest(path, BANK_FORMAT, LEGACY_VERSION)
    except ArtifactError:
        old = _old_manifest(path)
        if old is None:
            raise
        raise ArtifactError(
            f"{path}: a bank tuned before rospr recorded the backbone's weights (version 1; backbone "
            f"{old['backbone'].get('name')!r}), so nothing shows which weights its prompts belong to; if it was tuned "
            f"on checkpoint M, re-key it: `rospr bank rekey --bank {path.parent} --model M`; else tune it again "
            "(another rospr.prompt_bank folder)") from None


def _old_manifest(path: Path) -> dict | None:
    """The sealed version-1 manifest at ``path``, or None when it is not one."""
    try:
        return read_manifest(path, BANK_FORMAT, 1)
    except ArtifactError:
        return None


def rekey(root: str | Path, backbone: Mapping[str, Any]) -> "PromptBank":
    """Record ``backbone``'s weights digest in the version-1 bank at ``root`` (``rospr bank rekey``):
    the user's statement that its prompts were tuned on those weights. The manifest must be intact
    and sealed, every prompt file must match its sha256, and the architecture fields must be
    ``backbone``'s. Returns the bank, moved into the current layout (``migrate``). Refuses
    (``ArtifactError``) a bank that is not version 1, an edited one, another architecture and a
    ``backbone`` without a weights digest."""
    root = Path(root)
    path = root / LEGACY_MANIFEST
    old = _old_manifest(path)
    if old is None:
        PromptBank.load(root, ids=[])  # refuses a missing, edited or unreadable bank with its own line
        raise ArtifactError(f"{root}: already records the weights of its backbone (version {BANK_VERSION}); "
                            "nothing to re-key")
    if not backbone.get(WEIGHTS_KEY):
        raise ArtifactError(f"{path}: re-keying needs the model's weights digest; none was given")
    for key in IDENTITY_KEYS:
        if old["backbone"].get(key) != backbone.get(key):
            raise ArtifactError(f"{path}: tuned for backbone {old['backbone'].get('name')!r} ({key}="
                                f"{old['backbone'].get(key)!r}), not {backbone.get('name')!r} ({key}="
                                f"{backbone.get(key)!r}); give the checkpoint it was tuned on")
    migrate(root, {**old["backbone"], WEIGHTS_KEY: backbone[WEIGHTS_KEY]})
    log.info("%s: re-keyed to the weights %s of %r", root, backbone[WEIGHTS_KEY], backbone.get("name"))
    return PromptBank.load(root, backbone, ids=[])


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
        raise ArtifactError(f"{path.parent / 'manifest.json'}: prompt {entry['id']}: dtype {entry.get('dtype')!r}, "
                            "expected float32")
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
