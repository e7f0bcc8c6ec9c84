"""The dataset catalog: hub ids, splits and hub schemas of the datasets rospr knows.

The table is ``harness/data/datasets.yaml`` (package data; its header documents every key and the
feature notation). It is read and validated once, on first use; a malformed table is refused with a
``TaskError`` naming the key and the fix. This module exposes it as typed objects:

- :class:`DatasetSpec` per promptsource folder (``<dataset>[/<subset>]``): where its rows live on the
  hub (:meth:`DatasetSpec.load_kwargs` gives the ``datasets.load_dataset`` arguments), which split
  plays which role, the schema its rows must follow (:meth:`DatasetSpec.check_row`), and, where the
  hub's copy names columns or orders classes otherwise than the templates expect, the mapping from
  one to the other (:class:`HubSchema`: :meth:`DatasetSpec.from_hub`, :meth:`DatasetSpec.to_hub`);
- the named groups (``t0_train``: T0's 38 training folders; ``heldout``: the 11 evaluation settings);
- :class:`HeldoutSetting` per evaluation setting (``rte``, ``anli_r1``, ...).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from rospr_harness.tasks.base import TaskError
from rospr.parsing import load_yaml, read_text

log = logging.getLogger(__name__)

TABLE_VERSION = 1
PARQUET_EXPORT = "refs/convert/parquet"  # the hub's parquet export branch (one folder per config)

SCALARS: Mapping[str, type | tuple[type, ...]] = MappingProxyType(
    {
        "string": str,
        "int8": int,
        "int16": int,
        "int32": int,
        "int64": int,
        "float32": (int, float),
        "float64": (int, float),
        "bool": bool,
    }
)
_SPECIAL = ("class_label", "list", "sequence")  # one-key mappings with a meaning of their own
_ENTRY_KEYS = ("hub_id", "config", "revision", "splits", "manual", "evidence", "features")
_OPTIONAL_KEYS = ("hub_schema",)


def _table_path() -> Path:
    return Path(str(resources.files("rospr_harness") / "data" / "datasets.yaml"))


# --------------------------------------------------------------------------------------------
# Features: validation of the notation, and checking a value against it
# --------------------------------------------------------------------------------------------


def _validate_feature(feature: Any, key: str, source: str) -> None:
    """Refuse (``TaskError`` naming ``source`` and ``key``) a feature outside the table's notation."""
    if isinstance(feature, str):
        if feature not in SCALARS:
            raise TaskError(
                f"{source}: key '{key}': unknown type {feature!r}; use one of {sorted(SCALARS)}, "
                "{class_label: [...]}, {list: ...}, {sequence: {...}} or a mapping of fields"
            )
        return
    if not isinstance(feature, dict) or not feature:
        raise TaskError(f"{source}: key '{key}': a feature is a type name or a non-empty mapping, got {feature!r}")
    if len(feature) == 1 and next(iter(feature)) in _SPECIAL:
        kind, inner = next(iter(feature.items()))
        if kind == "class_label":
            if not (isinstance(inner, list) and inner and all(isinstance(n, str) for n in inner)):
                raise TaskError(
                    f"{source}: key '{key}.class_label': must be a non-empty list of class names (strings)"
                )
        elif kind == "list":
            _validate_feature(inner, f"{key}.list", source)
        else:  # sequence: HF's Sequence of a dict, i.e. a dict of lists
            if not isinstance(inner, dict) or not inner or any(k in _SPECIAL for k in inner):
                raise TaskError(
                    f"{source}: key '{key}.sequence': must be a mapping of field -> feature (a Sequence "
                    "of a dict); for a plain list write {list: <feature>}"
                )
            for name, sub in inner.items():
                _validate_feature(sub, f"{key}.sequence.{name}", source)
        return
    for name, sub in feature.items():
        if not isinstance(name, str):
            raise TaskError(f"{source}: key '{key}': field names must be strings, got {name!r}")
        _validate_feature(sub, f"{key}.{name}", source)


def describe(feature: Any) -> str:
    """A short human description of ``feature`` (for error messages)."""
    if isinstance(feature, str):
        return feature
    if len(feature) == 1 and next(iter(feature)) in _SPECIAL:
        kind, inner = next(iter(feature.items()))
        if kind == "class_label":
            return f"a class label (int 0..{len(inner) - 1} for {inner}, or -1)"
        if kind == "list":
            return f"a list of {describe(inner)}"
        return "a dict of lists " + "{" + ", ".join(f"{k}: [{describe(v)}]" for k, v in inner.items()) + "}"
    return "a mapping {" + ", ".join(f"{k}: {describe(v)}" for k, v in feature.items()) + "}"


def example(feature: Any) -> Any:
    """A small value of ``feature`` (for error messages: 'e.g. ...')."""
    if isinstance(feature, str):
        return {"string": "some text", "bool": True}.get(feature, 0 if SCALARS[feature] is int else 0.5)
    if len(feature) == 1 and next(iter(feature)) in _SPECIAL:
        kind, inner = next(iter(feature.items()))
        if kind == "class_label":
            return 0
        if kind == "list":
            return [example(inner)]
        return {k: [example(v)] for k, v in inner.items()}
    return {k: example(v) for k, v in feature.items()}


def _problem(value: Any, feature: Any, path: str) -> tuple[str, Any] | None:
    """The first place where ``value`` breaks ``feature``: (path, feature there), or ``None``."""
    if isinstance(feature, str):
        kind = SCALARS[feature]
        ok = isinstance(value, kind) and (feature == "bool" or not isinstance(value, bool))
        return None if ok else (path, feature)
    if len(feature) == 1 and next(iter(feature)) in _SPECIAL:
        kind, inner = next(iter(feature.items()))
        if kind == "class_label":
            ok = isinstance(value, int) and not isinstance(value, bool) and -1 <= value < len(inner)
            return None if ok else (path, feature)
        if kind == "list":
            if not isinstance(value, list):
                return (path, feature)
            for i, item in enumerate(value):
                found = _problem(item, inner, f"{path}[{i}]")
                if found:
                    return found
            return None
        if not isinstance(value, Mapping):
            return (path, feature)
        for name, sub in inner.items():
            if name not in value or not isinstance(value[name], list):
                return (f"{path}.{name}", {"list": sub})
            for i, item in enumerate(value[name]):
                found = _problem(item, sub, f"{path}.{name}[{i}]")
                if found:
                    return found
        return None
    if not isinstance(value, Mapping):
        return (path, feature)
    for name, sub in feature.items():
        if name not in value:
            return (f"{path}.{name}", sub)
        found = _problem(value[name], sub, f"{path}.{name}")
        if found:
            return found
    return None


# --------------------------------------------------------------------------------------------
# The table's objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSchema:
    """How the hub's rows of a dataset differ from the schema the templates read (``features``).

    ``rename``: hub column -> template column. ``relabel``: template column -> the hub's class
    names in the hub's index order, each paired with the template class name it stands for (several
    hub classes may share one template class). A relabelled column is always a renamed one, so a
    row's column names say which order its labels are in.
    """

    rename: Mapping[str, str]
    relabel: Mapping[str, tuple[tuple[str, str], ...]]

    def hub_column(self, column: str) -> str:
        """The hub's name of template column ``column`` (itself when not renamed)."""
        return next((hub for hub, ours in self.rename.items() if ours == column), column)


def _relabel_value(value: Any, table: tuple[tuple[str, str], ...], names: list[str], where: str,
                   column: str) -> int:
    """The template class index of hub class index ``value`` (-1, unlabelled, stays -1)."""
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < len(table):
        raise TaskError(
            f"{where}: field {column!r} is {value!r}; the hub's class label there is an int 0..{len(table) - 1} "
            f"(for {[hub for hub, _ in table][:6]}...) or -1"
        )
    return -1 if value == -1 else names.index(table[value][1])


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the table, named by its promptsource folder ``<dataset>[/<subset>]``.

    ``hub_id``/``config``/``revision``: where the rows live on the hub; ``splits``: role (``train``,
    ``eval``) -> hub split name; ``features``: the hub schema (the table's notation); ``manual``: how
    to obtain a dataset that cannot be downloaded, or ``None``; ``evidence``: where the id was
    confirmed (or why it is not).
    """

    folder: str
    hub_id: str
    config: str | None
    revision: str | None
    splits: Mapping[str, str]
    features: Mapping[str, Any] = field(repr=False)
    manual: str | None
    evidence: str = field(repr=False)
    hub_schema: HubSchema | None = field(default=None, repr=False)

    @property
    def dataset(self) -> str:
        """The folder before ``/`` (``super_glue`` for ``super_glue/rte``)."""
        return self.folder.split("/", 1)[0]

    @property
    def subset(self) -> str | None:
        """The folder after ``/`` (``rte`` for ``super_glue/rte``), or ``None``."""
        parts = self.folder.split("/", 1)
        return parts[1] if len(parts) == 2 else None

    def split(self, role: str) -> str:
        """The hub split name of ``role`` (``train`` / ``eval``).

        Refuses (``TaskError`` naming the folder) a role the dataset has no split for.
        """
        try:
            return self.splits[role]
        except KeyError:
            raise TaskError(
                f"dataset {self.folder!r} has no {role!r} split in the catalog "
                f"(harness/data/datasets.yaml: splits {dict(self.splits)}); use one of "
                f"{sorted(self.splits)}"
            ) from None

    def load_kwargs(self, split: str) -> dict[str, Any]:
        """The ``datasets.load_dataset`` keyword arguments for ``split`` of this dataset.

        On the hub's parquet export branch a config is a folder, not a declared config, so it is
        passed as ``data_dir``; elsewhere it is ``name``.
        """
        kwargs: dict[str, Any] = {"path": self.hub_id, "split": split}
        if self.revision:
            kwargs["revision"] = self.revision
        if self.config is not None:
            if self.revision == PARQUET_EXPORT:
                kwargs["data_dir"] = self.config
            else:
                kwargs["name"] = self.config
        return kwargs

    def from_hub(self, row: Mapping[str, Any], where: str) -> dict[str, Any]:
        """``row`` in the schema the templates read (``features``): the one mapping step every row
        passes through when it loads (local rows, a manual download, a hub or snapshot load).

        With a :class:`HubSchema`, a row that has the hub's column names is renamed and its class
        labels re-indexed by class name; a row that already has the template's names (none of the
        hub's) is returned as it is. Refuses (``TaskError`` naming ``where`` and the field) a label
        outside the hub's classes.
        """
        hub = self.hub_schema
        if hub is None or not any(col in row for col in hub.rename):
            return dict(row)
        out = {hub.rename.get(k, k): v for k, v in row.items()}
        for column, table in hub.relabel.items():
            if column in out:
                names = self.features[column]["class_label"]
                out[column] = _relabel_value(out[column], table, names, where, hub.hub_column(column))
        return out

    def to_hub(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The inverse of :meth:`from_hub`: a template-schema row in the hub's names and class order
        (where several hub classes share a template class, the first of them; :meth:`from_hub`
        maps it back to the same class)."""
        hub = self.hub_schema
        if hub is None:
            return dict(row)
        out = dict(row)
        for column, table in hub.relabel.items():
            if isinstance(out.get(column), int) and out[column] >= 0:
                name = self.features[column]["class_label"][out[column]]
                out[column] = next(i for i, (_, ours) in enumerate(table) if ours == name)
        back = {ours: theirs for theirs, ours in hub.rename.items()}
        return {back.get(k, k): v for k, v in out.items()}

    def check_row(self, row: Mapping[str, Any], where: str) -> None:
        """Refuse a row that is not in the schema the templates read (``features``, after
        :meth:`from_hub`); extra fields are fine.

        Raises ``TaskError`` naming ``where``, the field, what the schema wants there and an example
        value: for a missing field, or a wrong type (a class label must be an int, not a bool, in
        range or -1; a string a ``str``; a list a ``list``; a sequence of dicts a dict of lists;
        structs are checked field by field).
        """
        if not isinstance(row, Mapping):
            raise TaskError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        for name, feature in self.features.items():
            if name not in row:
                raise TaskError(
                    f"{where} lacks field {name!r}; {self.folder} rows (hub schema) need "
                    f"{list(self.features)}: {name!r} is {describe(feature)}, e.g. "
                    f"{example(feature)!r}"
                )
            found = _problem(row[name], feature, name)
            if found:
                path, wanted = found
                got = _lookup(row, path)
                raise TaskError(
                    f"{where}: field {path!r} is {got}; the hub schema of {self.folder} has "
                    f"{describe(wanted)} there, e.g. {example(wanted)!r}"
                )


def _lookup(row: Mapping[str, Any], path: str) -> str:
    """'type value' of what sits at ``path`` in ``row`` ('missing' when absent)."""
    value: Any = row
    for part in path.replace("]", "").replace("[", ".").split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return "missing"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


@dataclass(frozen=True)
class HeldoutSetting:
    """A T0 evaluation setting: the ``original_task`` templates of ``folder`` on ``split``.

    ``n_prompts``: how many such templates T0 evaluated.
    """

    name: str
    folder: str
    split: str
    n_prompts: int


@dataclass(frozen=True)
class Catalog:
    """The whole table: datasets by folder, groups by name, held-out settings by name."""

    datasets: Mapping[str, DatasetSpec]
    groups: Mapping[str, tuple[str, ...]]
    heldout: Mapping[str, HeldoutSetting]
    source: str


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------


def _parse_hub_schema(raw: Any, features: Mapping[str, Any], key: str, source: str) -> HubSchema | None:
    """Validate an entry's ``hub_schema`` (``None`` when absent); ``TaskError`` naming ``key`` otherwise."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not set(raw) <= {"rename", "relabel"} or "rename" not in raw:
        raise TaskError(f"{source}: key {key!r} must be a mapping with 'rename' (hub -> template column) "
                        "and optionally 'relabel'")
    rename = raw["rename"]
    if not isinstance(rename, dict) or not rename or not all(
            isinstance(a, str) and isinstance(b, str) for a, b in rename.items()):
        raise TaskError(f"{source}: key '{key}.rename' must map hub column names to template column names")
    missing = [ours for ours in rename.values() if ours not in features]
    if missing:
        raise TaskError(f"{source}: key '{key}.rename' renames to {missing}, which are not under 'features'")
    relabel: dict[str, tuple[tuple[str, str], ...]] = {}
    for column, names in (raw.get("relabel") or {}).items():
        where = f"{key}.relabel.{column}"
        feature = features.get(column)
        if not (isinstance(feature, dict) and "class_label" in feature):
            raise TaskError(f"{source}: key {where!r}: {column!r} is not a class_label under 'features'")
        if column not in rename.values():
            raise TaskError(f"{source}: key {where!r}: relabel only a renamed column (add it to "
                            f"'{key}.rename'), so that a row's column names say which class order it has")
        if isinstance(names, list):  # the same names, in the hub's order
            names = {n: n for n in names}
        if not isinstance(names, dict) or not names:
            raise TaskError(f"{source}: key {where!r} must list the hub's class names in its index order, "
                            "or map each (in that order) to a class name of the feature")
        unknown = [ours for ours in names.values() if ours not in feature["class_label"]]
        if unknown:
            raise TaskError(f"{source}: key {where!r} maps to {unknown}, which are not among the feature's "
                            f"class names {feature['class_label']}")
        relabel[column] = tuple((str(hub), ours) for hub, ours in names.items())
    return HubSchema(MappingProxyType(dict(rename)), MappingProxyType(relabel))


def parse_table(data: Any, source: str) -> Catalog:
    """Validate a parsed table (the YAML's top-level mapping) and build the :class:`Catalog`.

    Refuses (``TaskError`` naming ``source`` and the key): a wrong ``version``, missing or mistyped
    entry keys, features outside the notation, splits that are not role -> name, groups or held-out
    settings that name unknown folders or splits.
    """
    if not isinstance(data, dict):
        raise TaskError(f"{source}: the table must be a mapping with version, datasets, groups, heldout")
    if data.get("version") != TABLE_VERSION:
        raise TaskError(f"{source}: key 'version' is {data.get('version')!r}; this code reads version {TABLE_VERSION}")
    raw_datasets = data.get("datasets")
    if not isinstance(raw_datasets, dict) or not raw_datasets:
        raise TaskError(f"{source}: key 'datasets' must be a non-empty mapping of folder -> entry")
    specs: dict[str, DatasetSpec] = {}
    for folder, entry in raw_datasets.items():
        key = f"datasets.{folder}"
        if not isinstance(folder, str) or not folder or folder.count("/") > 1:
            raise TaskError(f"{source}: key {key!r}: a folder is <dataset>[/<subset>]")
        if not isinstance(entry, dict):
            raise TaskError(f"{source}: key {key!r} must be a mapping with keys {list(_ENTRY_KEYS)}")
        missing = [k for k in _ENTRY_KEYS if k not in entry]
        if missing:
            raise TaskError(f"{source}: key {key!r} lacks {missing}; every entry has {list(_ENTRY_KEYS)}")
        unknown = sorted(set(entry) - set(_ENTRY_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise TaskError(
                f"{source}: key {key!r} has unknown keys {unknown}; allowed: {list(_ENTRY_KEYS + _OPTIONAL_KEYS)}"
            )
        if not isinstance(entry["hub_id"], str) or not entry["hub_id"]:
            raise TaskError(f"{source}: key '{key}.hub_id' must be a non-empty string")
        for name in ("config", "revision", "manual"):
            if entry[name] is not None and not isinstance(entry[name], str):
                raise TaskError(f"{source}: key '{key}.{name}' must be a string or null, got {entry[name]!r}")
        if not isinstance(entry["evidence"], str) or not entry["evidence"].strip():
            raise TaskError(f"{source}: key '{key}.evidence' must say where the id was confirmed (or 'unconfirmed: ...')")
        splits = entry["splits"]
        if (
            not isinstance(splits, dict)
            or not splits
            or not all(isinstance(r, str) and isinstance(s, str) and s for r, s in splits.items())
        ):
            raise TaskError(f"{source}: key '{key}.splits' must map roles (train, eval) to hub split names")
        features = entry["features"]
        if not isinstance(features, dict) or not features:
            raise TaskError(f"{source}: key '{key}.features' must be a mapping of field -> feature")
        for name, feature in features.items():
            _validate_feature(feature, f"{key}.features.{name}", source)
        hub_schema = _parse_hub_schema(entry.get("hub_schema"), features, f"{key}.hub_schema", source)
        specs[folder] = DatasetSpec(
            folder=folder,
            hub_id=entry["hub_id"],
            config=entry["config"],
            revision=entry["revision"],
            splits=MappingProxyType(dict(splits)),
            features=MappingProxyType(dict(features)),
            manual=entry["manual"],
            evidence=entry["evidence"],
            hub_schema=hub_schema,
        )

    raw_heldout = data.get("heldout")
    if not isinstance(raw_heldout, dict) or not raw_heldout:
        raise TaskError(f"{source}: key 'heldout' must be a mapping of setting -> {{dataset, split, prompts}}")
    heldout: dict[str, HeldoutSetting] = {}
    for name, entry in raw_heldout.items():
        key = f"heldout.{name}"
        if not isinstance(entry, dict) or set(entry) != {"dataset", "split", "prompts"}:
            raise TaskError(f"{source}: key {key!r} must have exactly the keys dataset, split, prompts")
        if entry["dataset"] not in specs:
            raise TaskError(f"{source}: key '{key}.dataset' names {entry['dataset']!r}, which is not under 'datasets'")
        if not isinstance(entry["split"], str) or not entry["split"]:
            raise TaskError(f"{source}: key '{key}.split' must be a hub split name")
        if not isinstance(entry["prompts"], int) or isinstance(entry["prompts"], bool) or entry["prompts"] < 1:
            raise TaskError(f"{source}: key '{key}.prompts' must be a positive int")
        heldout[name] = HeldoutSetting(name, entry["dataset"], entry["split"], entry["prompts"])

    raw_groups = data.get("groups")
    if not isinstance(raw_groups, dict) or not raw_groups:
        raise TaskError(f"{source}: key 'groups' must be a mapping of group -> list of names")
    groups: dict[str, tuple[str, ...]] = {}
    for name, members in raw_groups.items():
        key = f"groups.{name}"
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members) or not members:
            raise TaskError(f"{source}: key {key!r} must be a non-empty list of names")
        unknown = [m for m in members if m not in specs and m not in heldout]
        if unknown:
            raise TaskError(
                f"{source}: key {key!r} names {unknown}, which are neither dataset folders nor "
                "held-out settings of the table"
            )
        if len(set(members)) != len(members):
            raise TaskError(f"{source}: key {key!r} lists a name twice")
        groups[name] = tuple(members)
    return Catalog(
        datasets=MappingProxyType(specs),
        groups=MappingProxyType(groups),
        heldout=MappingProxyType(heldout),
        source=source,
    )


def load_table(path: str | Path) -> Catalog:
    """Read and validate a catalog YAML file (``TaskError`` naming the file for any fault)."""
    path = Path(path)
    fix = "fix the dataset catalog"
    try:
        text = read_text(path, TaskError, fix)
    except OSError as e:
        raise TaskError(f"{path}: cannot read the dataset catalog: {e}") from e
    return parse_table(load_yaml(text, str(path), TaskError, fix), str(path))


@functools.lru_cache(maxsize=1)
def catalog() -> Catalog:
    """The package's catalog, read and validated once per process."""
    table = load_table(_table_path())
    log.debug("dataset catalog: %d datasets, groups %s", len(table.datasets), list(table.groups))
    return table


# --------------------------------------------------------------------------------------------
# Public look-ups
# --------------------------------------------------------------------------------------------


def dataset_spec(folder: str) -> DatasetSpec | None:
    """The table's entry for promptsource folder ``folder``, or ``None`` when it has none."""
    return catalog().datasets.get(folder)


def known_datasets() -> list[str]:
    """Every folder of the table, in table order."""
    return list(catalog().datasets)


def groups() -> list[str]:
    """The names of the table's groups (``t0_train``, ``heldout``)."""
    return list(catalog().groups)


def group(name: str) -> tuple[str, ...]:
    """The members of group ``name``: folders (``t0_train``) or held-out setting names (``heldout``).

    Refuses (``TaskError``) an unknown group, listing the known ones.
    """
    try:
        return catalog().groups[name]
    except KeyError:
        raise TaskError(
            f"unknown task group {name!r}; groups of the catalog ({_table_path()}): {groups()}"
        ) from None


def heldout_settings() -> dict[str, HeldoutSetting]:
    """The 11 held-out evaluation settings by name, in table order."""
    return dict(catalog().heldout)
