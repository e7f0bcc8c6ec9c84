"""Soft prompts and the prompt bank: one trained P x D prompt per (source dataset, hard prompt).

A bank is a directory::

    manifest.json               format "rospr-prompt-bank", the backbone's identity, one entry per prompt
    journal.jsonl               prompts added since the manifest was written (while tuning)
    prompts/<slug>.safetensors  one tensor "prompt", float32 [P, D]

Each manifest entry holds the prompt's ``id`` (``"<source>/<template>"``), ``source``, ``template``,
``answer_choices`` of the template, ``P``, ``D``, ``dtype``, the file and its ``sha256``,
``train_key`` (the content address of everything that went into training it), ``steps``,
``final_loss``, ``seed`` and ``origin`` (the split and rows it was trained on, and ``source_key``: the
digest of what those rows were rendered from, so a run can tell the prompt is current without
rendering them: ``rospr_harness.method.prepare``). The manifest is sealed by ``manifest_hash``.

Prompts are added one at a time, the file first (atomic), then one line appended to the journal
(fsynced): ``{"entry": ..., "chain": ...}``, where ``chain`` is the digest of the previous line's chain
(the manifest's ``manifest_hash`` for the first line) and the entry. So a tuning of N prompts writes
each entry once, not the whole manifest N times, and an interrupted tuning leaves a valid bank holding
the prompts finished so far. ``compact`` (called when a tuning or an import ends) folds the journal
into a new sealed manifest and removes it. A reader takes the manifest, then the journal's lines in
order (an entry replaces the one of its id); a line that does not follow from the manifest and the
lines before it (edited, reordered, or left from another manifest) is refused, and a torn last line
(a crash mid-append, no newline) is ignored and cut off by the next ``add``.

Loading refuses, naming the file: a wrong shape or dtype, non-finite values, a backbone other than
the one asked for, and any file or manifest whose hash does not match (edited on disk).

Weights. A soft prompt is trained against one set of weights: T0-3B and T5-LM-adapt-XL share a
shape, not a bank. The manifest's ``backbone`` records the weights digest (``weights``:
``rospr.identity.weights_digest``) and a bank is used only with a backbone of the same digest and
architecture (``check_backbone``). Banks written before the digest was recorded (version 1) are
refused with the way to re-key one (``rekey``, ``rospr bank rekey``): the user, who knows which
checkpoint tuned it, names it; nothing is assumed. ``train_key`` keeps to the architecture fields
(``IDENTITY_KEYS``): within one bank the weights are fixed by the manifest, and a re-keyed bank's
prompts stay valid.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from rospr.canonical import digest_json, sha256_text
from rospr.artifacts import (ArtifactError, atomic_write_bytes, check_file, read_manifest, sha256_file, strict_loads,
                             write_manifest)

log = logging.getLogger(__name__)

BANK_FORMAT = "rospr-prompt-bank"
BANK_VERSION = 2  # 2: the backbone's weights digest recorded and checked
JOURNAL = "journal.jsonl"
TENSOR = "prompt"
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


class PromptBank:
    """A directory of soft prompts with its sealed manifest. Use ``open``/``load``, not the constructor."""

    def __init__(self, root: Path, backbone: dict, entries: list[dict], prompts: dict[str, SoftPrompt],
                 manifest_hash: str = "", chain: str = "") -> None:
        self.root = Path(root)
        self.backbone = backbone
        self.entries = entries
        self.prompts = prompts
        self.manifest_hash = manifest_hash  # "" until the first manifest is written
        self.chain = chain or manifest_hash  # the journal's last link

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
        manifest = read_bank_manifest(path)
        check_backbone(manifest["backbone"], backbone, str(path))
        listed, chain = _with_journal(root, manifest)
        entries = {e["id"]: e for e in listed}
        wanted = list(entries) if ids is None else list(ids)
        prompts = {}
        for pid in wanted:
            if pid not in entries:
                raise ArtifactError(f"{path}: no prompt {pid!r}; tune it first (`rospr tune`)")
            prompts[pid] = _read_prompt(root, entries[pid], manifest["backbone"])
        return cls(root, manifest["backbone"], listed, prompts, manifest["manifest_hash"], chain)

    @classmethod
    def open(cls, root: str | Path, backbone: Mapping[str, Any]) -> "PromptBank":
        """Open a bank for adding prompts: load it if it exists (checked, prompts not read), else
        start an empty one for ``backbone``."""
        root = Path(root)
        if (root / "manifest.json").exists():
            manifest = read_bank_manifest(root / "manifest.json")
            check_backbone(manifest["backbone"], backbone, str(root / "manifest.json"))
            listed, chain = _with_journal(root, manifest)
            return cls(root, manifest["backbone"], listed, {}, manifest["manifest_hash"], chain)
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
        """Save ``prompt`` (its file, atomic; then its entry: a journal line, or the first manifest),
        replacing an entry with its id."""
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
        self.entries = _replaced(self.entries, entry)
        if self.manifest_hash:
            self.chain = _append(self.root / JOURNAL, self.chain, entry)
        else:
            self.compact()
        saved = SoftPrompt(prompt.id, prompt.source, prompt.template, tuple(prompt.answer_choices), prompt.values,
                           prompt.steps, prompt.final_loss, prompt.seed, prompt.train_key, digest)
        self.prompts[prompt.id] = saved
        return saved

    def record_origins(self, origins: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the ``origin`` (what a prompt was trained from) of the entries ``origins`` names, in
        place, their files untouched, and write the sealed manifest (``compact``). The caller has shown
        that each prompt is the one that origin would train (``rospr_harness.method.prepare``: its
        ``train_key`` matched). Refuses (``ArtifactError``) an id the bank lacks."""
        for pid, origin in origins.items():
            if self.entry(pid) is None:
                raise ArtifactError(f"{self.root / 'manifest.json'}: no prompt {pid!r}")
        self.entries = [{**e, "origin": dict(origins[e["id"]])} if e["id"] in origins else e for e in self.entries]
        self.compact()

    def compact(self) -> None:
        """Write every entry into a new sealed manifest (atomic) and remove the journal: the bank's
        state is the same before and after, in one file."""
        sealed = write_manifest(self.root / "manifest.json", {
            "format": BANK_FORMAT, "version": BANK_VERSION, "backbone": self.backbone, "prompts": self.entries,
        })
        self.manifest_hash = self.chain = sealed["manifest_hash"]
        (self.root / JOURNAL).unlink(missing_ok=True)

    def content_hash(self, ids: Iterable[str] | None = None) -> str:
        """sha256 over the backbone (architecture and weights) and the entries of ``ids`` (all by
        default): changes when any of those prompts does, or the weights they belong to."""
        wanted = set(self.ids() if ids is None else ids)
        return digest_json({"backbone": {k: self.backbone.get(k) for k in BACKBONE_KEYS},
                            "prompts": sorted((e["id"], e["sha256"]) for e in self.entries if e["id"] in wanted)})


def _replaced(entries: list[dict], entry: dict) -> list[dict]:
    return [e for e in entries if e["id"] != entry["id"]] + [entry]


def _link(previous: str, entry: dict) -> str:
    return digest_json({"previous": previous, "entry": entry})


def _with_journal(root: Path, manifest: dict) -> tuple[list[dict], str]:
    """The manifest's entries with the journal's applied in order, and the journal's last link.
    Refuses (``ArtifactError``) a line that is not JSON or does not follow from the ones before."""
    path = root / JOURNAL
    entries, chain = list(manifest["prompts"]), manifest["manifest_hash"]
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return entries, chain
    *lines, torn = data.split(b"\n")
    if torn:
        log.warning("%s: an incomplete last line (a tuning stopped while writing it) is ignored", path)
    fix = (f"remove the folder to tune again, or delete {path} and tune the prompts it listed again "
           "(their entries are lost, the manifest's stay)")
    for i, raw in enumerate(lines, 1):
        try:
            line = strict_loads(raw.decode("utf-8"), path, ArtifactError, fix, line=i)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{path}: line {i} is not JSON ({exc}); {fix}") from None
        entry = line.get("entry") if isinstance(line, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or line.get("chain") != _link(chain, entry):
            raise ArtifactError(f"{path}: line {i} does not follow from the manifest and the lines before it (edited, "
                                f"reordered, or from another manifest); {fix}")
        chain = line["chain"]
        entries = _replaced(entries, entry)
    return entries, chain


def _append(path: Path, chain: str, entry: dict) -> str:
    """Append ``entry``'s journal line (cutting off a torn last line first) and fsync; its link."""
    link = _link(chain, entry)
    line = (json.dumps({"entry": entry, "chain": link}, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        data_len = os.fstat(fd).st_size
        if data_len:
            os.lseek(fd, max(data_len - 65536, 0), os.SEEK_SET)
            tail = os.read(fd, 65536)
            cut = data_len - (len(tail) - (tail.rfind(b"\n") + 1))
            if cut != data_len:
                os.ftruncate(fd, cut)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return link


def read_bank_manifest(path: Path) -> dict:
    """The checked manifest of a bank (``read_manifest``). Refuses (``ArtifactError``) a version-1 bank,
    tuned before the backbone's weights were recorded, with the way to re-key it."""
    path = Path(path)
    try:
        return read_manifest(path, BANK_FORMAT, BANK_VERSION)
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
    ``backbone``'s. Returns the bank, now version 2. Refuses (``ArtifactError``) a bank that is not
    version 1, an edited one, another architecture and a ``backbone`` without a weights digest."""
    root = Path(root)
    path = root / "manifest.json"
    old = _old_manifest(path)
    if old is None:
        read_bank_manifest(path)  # refuses a missing, edited or unreadable one with its own line
        raise ArtifactError(f"{path}: already records the weights of its backbone (version {BANK_VERSION}); "
                            "nothing to re-key")
    if not backbone.get(WEIGHTS_KEY):
        raise ArtifactError(f"{path}: re-keying needs the model's weights digest; none was given")
    for key in IDENTITY_KEYS:
        if old["backbone"].get(key) != backbone.get(key):
            raise ArtifactError(f"{path}: tuned for backbone {old['backbone'].get('name')!r} ({key}="
                                f"{old['backbone'].get(key)!r}), not {backbone.get('name')!r} ({key}="
                                f"{backbone.get(key)!r}); give the checkpoint it was tuned on")
    for entry in old["prompts"]:
        check_file(root / entry["file"], entry["sha256"], "prompt bank")
    write_manifest(path, {"format": BANK_FORMAT, "version": BANK_VERSION,
                          "backbone": {**old["backbone"], WEIGHTS_KEY: backbone[WEIGHTS_KEY]}, "prompts": old["prompts"]})
    log.info("%s: re-keyed to the weights %s of %r", path, backbone[WEIGHTS_KEY], backbone.get("name"))
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
