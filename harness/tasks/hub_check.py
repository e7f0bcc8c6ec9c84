"""Does the hub still hold what the catalog says? Metadata calls only, no rows.

For each catalog entry (``harness/data/datasets.yaml``) :func:`check_entry` asks the hub, through
``huggingface_hub.HfApi`` (``HF_ENDPOINT`` honoured):

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

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

from rospr_harness.tasks.hub import offline_reason
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr_harness.tasks.catalog import PARQUET_EXPORT, DatasetSpec, dataset_spec

log = logging.getLogger(__name__)


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


def check_entry(api: Any, spec: DatasetSpec, fields: Iterable[str], splits: Iterable[str]) -> HubVerdict:
    """The hub against ``spec``: repository, revision, config, ``splits`` and the columns ``fields``
    (what the templates read). ``api``: a ``huggingface_hub.HfApi``. Network failures propagate."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.hf_api import RepoFolder

    where = _where(spec)
    problems: list[str] = []
    notes: list[str] = []
    try:
        main = api.dataset_info(spec.hub_id)
    except RepositoryNotFoundError:
        return HubVerdict(spec.folder, where, (f"repository {spec.hub_id} not found (fix hub_id)",))
    card = main.card_data.to_dict() if main.card_data is not None else {}
    config = spec.config or "default"

    if spec.revision == PARQUET_EXPORT:
        refs = api.list_repo_refs(spec.hub_id, repo_type="dataset")
        if not any(ref.ref == PARQUET_EXPORT for ref in refs.converts):
            return HubVerdict(spec.folder, where, (
                f"no {PARQUET_EXPORT} branch among the repository's converts "
                f"({[ref.ref for ref in refs.converts] or 'none'}); main has {[s.rfilename for s in main.siblings or []][:8]}",))
        try:
            entries = list(api.list_repo_tree(spec.hub_id, path_in_repo=config, revision=spec.revision,
                                              repo_type="dataset"))
        except EntryNotFoundError:
            return HubVerdict(spec.folder, where, (f"no folder {config}/ on {PARQUET_EXPORT} (fix config)",))
        folders = {e.path.rsplit("/", 1)[-1] for e in entries if isinstance(e, RepoFolder)}
        problems += [f"split {s!r} not on {PARQUET_EXPORT} (folders {sorted(folders)} under {config}/)"
                     for s in splits if not _split_present(s, folders)]
    else:
        if spec.revision:
            try:
                api.dataset_info(spec.hub_id, revision=spec.revision)
            except RevisionNotFoundError:
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


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError]  # requests' ConnectionError and Timeout are OSErrors
    for module in ("httpx", "httpx2"):  # huggingface_hub 1.x talks through httpx, 2.x through httpx2
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def check_hub(names: list[str] | str, settings: DataSettings, api: Any = None) -> list[HubVerdict]:
    """:func:`check_entry` for every catalogued promptsource dataset among ``names`` (tasks or
    groups), once per folder; the templates come from ``settings``.

    Refuses (``TaskError``, one line each): the hub switched off (``HF_HUB_OFFLINE`` /
    ``HF_DATASETS_OFFLINE``), an endpoint that cannot be reached, a task that is not a catalogued
    promptsource dataset.
    """
    from rospr_harness.tasks import expand, get_task
    from rospr_harness.tasks.promptsource import template_fields
    from rospr_harness.tasks.synth import splits_to_write
    from rospr_harness.tasks.templates import load_templates

    reason = offline_reason()
    if reason:
        raise TaskError(f"the hub is offline ({reason}): check-hub needs the hub's metadata API; unset "
                        f"{reason.partition('=')[0]} on a machine that can reach it")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
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
            verdicts.append(check_entry(api, spec, fields, splits_to_write(spec)))
        except _network_errors() as e:
            from huggingface_hub.errors import HfHubHTTPError

            reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            if isinstance(e, HfHubHTTPError):  # an answer, not a network failure
                raise TaskError(f"{folder}: the hub at {api.endpoint} answered {reason}") from e
            raise TaskError(f"cannot reach the hub at {api.endpoint} ({reason}); check-hub needs network "
                            "access to it (HF_ENDPOINT names another endpoint)") from e
        log.debug("check-hub %s: %s", folder, verdicts[-1].line())
    return verdicts
