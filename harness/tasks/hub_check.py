"""Does the hub still hold what the catalog says? Metadata calls only, no rows.

For each catalog entry (``harness/data/datasets.yaml``) :func:`check_entry` asks the hub's metadata
API (``HF_ENDPOINT`` honoured, the token ``huggingface_hub`` keeps sent), every answer read by the one
bounded network reader (``rospr_harness.tasks.fetch.read_url``: a total deadline, ``$ROSPR_NET_TIMEOUT``,
however slowly the answer comes, and at most ``MAX_ANSWER_BYTES``), then parsed as strict JSON:

1. the repository (``GET /api/datasets/<repo>``: its card data holds the README's ``dataset_info``
   and ``configs``);
2. the revision: ``refs/convert/parquet`` among the repository's converts (``GET .../refs``), or
   another revision by name (``GET .../revision/<rev>``);
3. the config: on the export branch its folder (``GET .../tree/<rev>/<config>``), whose sub-folders
   are the splits; on another branch the card's ``configs`` (or a folder of that name);
4. the splits a run reads (train, eval, the held-out settings'); a folder ``val``/``dev`` counts as
   ``validation``, as ``datasets`` loads it (``datasets.data_files.SPLIT_KEYWORDS``);
5. the features of the card's ``dataset_info`` (as ``datasets.Features``): every column the
   templates read (:func:`rospr_harness.tasks.promptsource.template_fields`), under its hub name
   (``hub_schema.rename``), and for class labels the hub's class names in the order the catalog
   expects (``hub_schema.relabel``, else the feature's own names).

What the hub does not publish (a card without ``dataset_info``) is noted as unchecked, not counted
as a mismatch. ``datasets.load_dataset_builder`` is not used: on a parquet branch without a card it
learns the features only by reading a data file.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import quote

from rospr_harness.tasks.hub import offline_reason
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr_harness.tasks.catalog import PARQUET_EXPORT, DatasetSpec, dataset_spec
from rospr.artifacts import json_document
from rospr.parsing import decode_utf8

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 << 20  # one metadata answer; a card with every config's dataset_info is a few MB
DEFAULT_ENDPOINT = "https://huggingface.co"


class HubMetadata:
    """The hub's dataset metadata API at ``endpoint`` (default ``$HF_ENDPOINT``, else the hub). Each
    answer is read within ``timeout_s`` seconds in all (default ``$ROSPR_NET_TIMEOUT``) and at most
    ``max_bytes``; a 404 is ``None`` (not there). Refuses (``TaskError``): a late answer (``NetTimeout``,
    naming the URL and the wait), an oversized one, one that is not a JSON object (list for a tree)."""

    def __init__(self, endpoint: str | None = None, timeout_s: float | None = None,
                 max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.timeout_s, self.max_bytes = timeout_s, max_bytes

    def _get(self, path: str, expect: type = dict) -> Any:
        from rospr_harness.tasks.fetch import NotServed, read_url

        url = f"{self.endpoint}/api/datasets/{path}"
        try:
            raw = read_url(url, self.timeout_s, self.max_bytes, self._headers())
        except NotServed:
            return None
        fix = "is HF_ENDPOINT the hub?"
        return json_document(decode_utf8(raw, url, TaskError, fix), url, TaskError, fix, expect)

    @staticmethod
    def _headers() -> dict[str, str]:
        try:
            from huggingface_hub import get_token

            token = get_token()
        except ImportError:
            token = None
        return {"Accept": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}

    def dataset(self, repo: str, revision: str | None = None) -> dict | None:
        """The repository's info (``cardData``, ``siblings``), at ``revision`` when given."""
        return self._get(repo + (f"/revision/{quote(revision, safe='')}" if revision else ""))

    def converts(self, repo: str) -> list[str]:
        """The repository's convert refs (``refs/convert/parquet``)."""
        refs = self._get(f"{repo}/refs") or {}
        return [r.get("ref") for r in refs.get("converts") or [] if isinstance(r, dict)]

    def folders(self, repo: str, revision: str, path: str) -> set[str] | None:
        """The names of the folders directly under ``path`` at ``revision`` (None: no such path)."""
        entries = self._get(f"{repo}/tree/{quote(revision, safe='')}/{quote(path)}", list)
        if entries is None:
            return None
        return {e["path"].rsplit("/", 1)[-1] for e in entries
                if isinstance(e, dict) and e.get("type") == "directory" and isinstance(e.get("path"), str)}


@dataclass(frozen=True)
class HubVerdict:
    """The hub against one catalog entry: ``problems`` (mismatches) and ``notes`` (what could not
    be checked); ``where`` is ``hub_id[:config]@revision``."""

    folder: str
    where: str
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        """One tab-separated line: folder, where, ``ok`` or ``MISMATCH``, and the reasons."""
        said = "; ".join(self.problems + self.notes)
        return "\t".join([self.folder, self.where, "ok" if self.ok else "MISMATCH"] + ([said] if said else []))


def _where(spec: DatasetSpec) -> str:
    return spec.hub_id + (f":{spec.config}" if spec.config else "") + f"@{spec.revision or 'main'}"


def _split_present(split: str, folders: set[str]) -> bool:
    from datasets.data_files import SPLIT_KEYWORDS

    names = {split} | set(SPLIT_KEYWORDS.get(split, ()))
    return bool(names & {f.removeprefix("partial-") for f in folders})


def _card_infos(card: dict) -> dict[str, Any]:
    """The card's ``dataset_info`` per config name, as ``datasets.DatasetInfo``."""
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    return dict(DatasetInfosDict.from_dataset_card_data(DatasetCardData(**card)))


def _feature_problems(spec: DatasetSpec, fields: Iterable[str], features: Any) -> list[str]:
    """What the hub's ``features`` (``datasets.Features``) lack of what the templates read."""
    from datasets import ClassLabel

    problems = []
    hub = spec.hub_schema
    for field in sorted(f for f in fields if f in spec.features):
        column = hub.hub_column(field) if hub else field
        if column not in features:
            problems.append(f"column {column!r} (the templates read {field!r}) is not among the hub's "
                            f"{sorted(features)}")
            continue
        ours = spec.features[field]
        if not (isinstance(ours, dict) and "class_label" in ours):
            continue
        expected = [name for name, _ in hub.relabel[field]] if hub and field in hub.relabel else list(ours["class_label"])
        theirs = features[column]
        if not isinstance(theirs, ClassLabel):
            problems.append(f"column {column!r} is {theirs!r} on the hub, the catalog expects a class label")
        elif list(theirs.names) != expected:
            problems.append(f"column {column!r}: the hub's classes {theirs.names} are not the catalog's "
                            f"{expected} (fix features or hub_schema.relabel in harness/data/datasets.yaml)")
    return problems


def check_entry(hub: HubMetadata, spec: DatasetSpec, fields: Iterable[str], splits: Iterable[str]) -> HubVerdict:
    """The hub against ``spec``: repository, revision, config, ``splits`` and the columns ``fields``
    (what the templates read). Network failures propagate (``HubMetadata``'s)."""
    where = _where(spec)
    problems: list[str] = []
    notes: list[str] = []
    main = hub.dataset(spec.hub_id)
    if main is None:
        return HubVerdict(spec.folder, where, (f"repository {spec.hub_id} not found (fix hub_id)",))
    card = main.get("cardData") if isinstance(main.get("cardData"), dict) else {}
    config = spec.config or "default"

    if spec.revision == PARQUET_EXPORT:
        converts = hub.converts(spec.hub_id)
        if PARQUET_EXPORT not in converts:
            siblings = [s.get("rfilename") for s in main.get("siblings") or [] if isinstance(s, dict)]
            return HubVerdict(spec.folder, where, (
                f"no {PARQUET_EXPORT} branch among the repository's converts "
                f"({converts or 'none'}); main has {siblings[:8]}",))
        folders = hub.folders(spec.hub_id, spec.revision, config)
        if folders is None:
            return HubVerdict(spec.folder, where, (f"no folder {config}/ on {PARQUET_EXPORT} (fix config)",))
        problems += [f"split {s!r} not on {PARQUET_EXPORT} (folders {sorted(folders)} under {config}/)"
                     for s in splits if not _split_present(s, folders)]
    else:
        if spec.revision and hub.dataset(spec.hub_id, spec.revision) is None:
            return HubVerdict(spec.folder, where, (f"revision {spec.revision} not found (fix revision)",))
        configs = {c.get("config_name"): c for c in card.get("configs") or [] if isinstance(c, dict)}
        if spec.config and configs and spec.config not in configs:
            problems.append(f"config {spec.config!r} not among the card's configs {sorted(configs)}")
        listed = {d.get("split") for d in (configs.get(config) or {}).get("data_files") or [] if isinstance(d, dict)}
        info = _card_infos(card).get(config)
        listed |= set((info.splits or {}) if info is not None else ())
        listed.discard(None)
        if listed:
            problems += [f"split {s!r} not among the card's {sorted(listed)}" for s in splits
                         if not _split_present(s, listed)]
        else:
            notes.append("splits unchecked (the card lists none)")

    infos = _card_infos(card)
    info = infos.get(config) or (next(iter(infos.values())) if len(infos) == 1 else None)
    if info is None or not info.features:
        notes.append("features unchecked (the card has no dataset_info)")
    else:
        problems += _feature_problems(spec, fields, info.features)
    return HubVerdict(spec.folder, where, tuple(problems), tuple(notes))


def check_hub(names: list[str] | str, settings: DataSettings, hub: HubMetadata | None = None) -> list[HubVerdict]:
    """:func:`check_entry` for every catalogued promptsource dataset among ``names`` (tasks or
    groups), once per folder; the templates come from ``settings``.

    Refuses (``TaskError``, one line each): the hub switched off (``HF_HUB_OFFLINE`` /
    ``HF_DATASETS_OFFLINE``), an endpoint that cannot be reached, one that answers an error or not
    HTTP, an answer not complete within the deadline or over the byte limit (naming the URL), a task
    that is not a catalogued promptsource dataset.
    """
    from rospr_harness.tasks import expand, get_task
    from rospr_harness.tasks.promptsource import template_fields
    from rospr_harness.tasks.synth import splits_to_write
    from rospr_harness.tasks.templates import load_templates

    reason = offline_reason()
    if reason:
        raise TaskError(f"the hub is offline ({reason}): check-hub needs the hub's metadata API; unset "
                        f"{reason.partition('=')[0]} on a machine that can reach it")
    hub = hub or HubMetadata()
    specs: dict[str, DatasetSpec] = {}
    for name in expand(names):
        folder = get_task(name, settings).folder
        spec = dataset_spec(folder) if folder is not None else None
        if spec is None:
            raise TaskError(f"{name}: check-hub checks catalogued promptsource datasets "
                            "(harness/data/datasets.yaml); BIG-bench and builtin tasks have no hub entry")
        specs.setdefault(folder, spec)
    verdicts = []
    for folder, spec in specs.items():
        fields = template_fields(load_templates(settings.templates_dir, spec.dataset, spec.subset))
        try:
            verdicts.append(check_entry(hub, spec, fields, splits_to_write(spec)))
        except urllib.error.HTTPError as e:  # an answer, not a network failure
            raise TaskError(f"{folder}: the hub at {hub.endpoint} answered HTTP {e.code} {e.reason} ({e.url})") from e
        except http.client.HTTPException as e:
            raise TaskError(f"{folder}: {hub.endpoint} did not answer as HTTP ({type(e).__name__}: {e}); is "
                            "HF_ENDPOINT the hub?") from e
        except OSError as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            raise TaskError(f"cannot reach the hub at {hub.endpoint} ({reason}); check-hub needs network "
                            "access to it (HF_ENDPOINT names another endpoint)") from e
        log.debug("check-hub %s: %s", folder, verdicts[-1].line())
    return verdicts
