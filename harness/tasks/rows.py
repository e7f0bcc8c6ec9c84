"""Where a promptsource dataset's rows come from, and reading them.

For one (dataset folder, split), in this order:

1. **local rows**: ``<rows_dir>/<dataset>[/<subset>]/<split>.jsonl`` (one hub-schema object a line) or
   ``<split>.json`` (a list), when that file exists (``rospr data synth`` writes this layout);
2. **a manual download** (StoryCloze): the files the dataset's owners hand out, under
   ``<manual_dir>/<dataset>[/<subset>]/``, converted to the hub schema (:data:`MANUAL_READERS`);
3. **the hub**: ``datasets.load_dataset(hub_id, config, split=..., revision=...)`` with the catalog's id
   (``harness/data/datasets.yaml``), or the promptsource names themselves for a dataset the catalog
   lacks. With ``hub_dir`` set, ``<hub_dir>/<hub_id>`` (a snapshot of the hub repository: parquet
   files and its README's ``configs``) is passed to ``load_dataset`` instead of the id: the same code
   path, no network.

:func:`locate` says which applies without reading anything (``rospr data status``); :func:`read` reads,
and passes every row, whatever its source, through the catalog's one mapping step
(:meth:`DatasetSpec.from_hub`: column renames and label re-indexing where the hub's copy differs from
what the templates read, e.g. trec).
"""

from __future__ import annotations

import csv
import glob
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rospr_harness.tasks import hub
from rospr_harness.tasks.base import DataSettings, TaskError
from rospr_harness.tasks.catalog import DatasetSpec
from rospr.destination import is_synthetic
from rospr_harness.tasks.common import read_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RowSource:
    """Where the rows of one (folder, split) come from now.

    ``kind``: ``local`` | ``synthetic`` (local rows ``rospr data synth`` wrote: never the real dataset) | ``manual`` | ``hub_dir`` | ``hub`` | ``datasets-cache`` (the hub while
    ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE``: ``rospr_harness.tasks.hub``) | ``missing`` (a manual download not provided);
    ``where``: the file, folder or ``hub_id[:config]@revision``; ``note``: what is missing and how to fix it.
    """

    folder: str
    split: str
    kind: str
    where: str
    note: str = ""


def _split_folder(folder: str) -> tuple[str, str | None]:
    dataset, _, subset = folder.partition("/")
    return dataset, subset or None


def local_file(settings: DataSettings, folder: str, split: str) -> Path | None:
    """The local rows file of ``folder``/``split`` under ``rows_dir`` (``.jsonl`` preferred), or None."""
    if settings.rows_dir is None:
        return None
    base = Path(settings.rows_dir) / folder
    for suffix in (".jsonl", ".json"):
        path = base / f"{split}{suffix}"
        if path.is_file():
            return path
    return None


def load_kwargs(spec: DatasetSpec | None, folder: str, split: str, settings: DataSettings) -> dict[str, Any]:
    """The ``datasets.load_dataset`` keyword arguments for ``folder``/``split``: the catalog's
    (:meth:`DatasetSpec.load_kwargs`), or the promptsource names for an uncatalogued dataset; with
    ``path`` replaced by ``<hub_dir>/<hub_id>`` when that snapshot folder exists (a snapshot is one
    revision already, so ``revision`` is dropped then)."""
    if spec is not None:
        kwargs = spec.load_kwargs(split)
    else:
        dataset, subset = _split_folder(folder)
        kwargs = {"path": dataset, "split": split, **({"name": subset} if subset else {})}
    if settings.hub_dir is not None:
        snapshot = Path(settings.hub_dir) / kwargs["path"]
        if snapshot.is_dir():
            kwargs = {**kwargs, "path": str(snapshot)}
            kwargs.pop("revision", None)
    return kwargs


def _describe(kwargs: dict[str, Any]) -> str:
    config = kwargs.get("name") or kwargs.get("data_dir")
    return kwargs["path"] + (f":{config}" if config else "") + (f"@{kwargs['revision']}" if kwargs.get("revision") else "")


def locate(spec: DatasetSpec | None, folder: str, split: str, settings: DataSettings) -> RowSource:
    """Where the rows of ``folder``/``split`` would come from, without reading or downloading them."""
    path = local_file(settings, folder, split)
    if path is not None:
        return RowSource(folder, split, "synthetic" if is_synthetic(path.parent) else "local", str(path))
    if folder in MANUAL_READERS:
        found = manual_files(settings, folder, split)
        if found:
            return RowSource(folder, split, "manual", str(found[0]))
        expected = _manual_expected(settings, folder)
        how = spec.manual if spec is not None and spec.manual else "a manual download"
        return RowSource(
            folder, split, "missing", expected,
            f"{folder} is a manual download ({how}); put its files in {expected}, or hub-schema rows in "
            f"<rows_dir>/{folder}/{split}.jsonl",
        )
    kwargs = load_kwargs(spec, folder, split, settings)
    note = "" if spec is not None else "not in the dataset catalog: the promptsource names are tried as a hub id"
    kind = "hub_dir" if settings.hub_dir is not None and Path(kwargs["path"]).is_dir() else "hub"
    if kind == "hub" and (offline := hub.offline_reason()):  # HF_*_OFFLINE: the datasets cache only, no hub
        return RowSource(folder, split, "datasets-cache", _describe(kwargs), hub.offline_note(folder, split, kwargs["path"], offline))
    return RowSource(folder, split, kind, _describe(kwargs), note)


def read(spec: DatasetSpec | None, folder: str, split: str, settings: DataSettings,
         limit: int | None = None) -> tuple[list[dict], str]:
    """The rows of ``folder``/``split`` (first ``limit``) in the schema the templates read, and a
    description of their source.

    Every row passes through :meth:`DatasetSpec.from_hub` (a no-op for a dataset whose hub copy
    matches its templates, or one the catalog lacks). Refuses (``TaskError``): unreadable or malformed
    local files (file and line named), a manual download that is not there (where to put it), a hub
    load that fails (the dataset, the id, the error and the local-rows fallback), a label outside the
    hub's classes. Rows are not schema-checked here (the task does it).
    """
    source = locate(spec, folder, split, settings)
    if source.kind == "missing":
        raise TaskError(f"dataset {folder!r} split {split!r}: {source.note}")
    if source.kind in ("local", "synthetic"):
        rows, where = read_rows(Path(source.where)), source.where + (" (synthetic rows)" if source.kind == "synthetic" else "")
    elif source.kind == "manual":
        rows, where = MANUAL_READERS[folder](manual_files(settings, folder, split)[0]), source.where
    else:
        rows, where = _hub_rows(spec, folder, split, settings, limit)
    rows = rows[:limit] if limit is not None else rows
    if spec is None:
        return rows, where
    return [spec.from_hub(row, f"{where}: row {i}") for i, row in enumerate(rows)], where


def _hub_rows(spec: DatasetSpec | None, folder: str, split: str, settings: DataSettings,
              limit: int | None) -> tuple[list[dict], str]:
    kwargs = load_kwargs(spec, folder, split, settings)
    try:
        import datasets  # heavy; only on the hub path
    except ImportError as e:  # pragma: no cover - a dependency of the project
        raise TaskError("the 'datasets' package is needed to read rows from the hub") from e
    log.info("loading %s split %s with datasets.load_dataset", _describe(kwargs), split)
    try:
        ds = datasets.load_dataset(**kwargs)
    except Exception as e:  # network, a refused loading script, an unknown split: say which, and the way out
        if (offline := hub.offline_reason()) and not Path(kwargs["path"]).is_dir():
            raise TaskError(hub.offline_failure(folder, split, kwargs["path"], offline)) from e
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:400]
        call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise TaskError(
            f"dataset {folder!r}: datasets.load_dataset({call}) failed: {reason}; put hub-schema rows in "
            f"<rows_dir>/{folder}/{split}.jsonl (data.rows_dir; `rospr data status` shows where each "
            "dataset's rows come from)"
        ) from e
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    return [dict(row) for row in ds], f"hf:{_describe(kwargs)}:{split}"


# ------------------------------------------------------------------------------------------------
# Manual downloads
# ------------------------------------------------------------------------------------------------


def _manual_expected(settings: DataSettings, folder: str) -> str:
    root = settings.manual_dir
    return str(Path(root) / folder) if root else f"<manual_dir>/{folder} (data.manual_dir)"


def manual_files(settings: DataSettings, folder: str, split: str) -> list[Path]:
    """The files of a manual download for ``split`` (by the pattern its reader declares)."""
    root = settings.manual_dir
    if root is None:
        return []
    pattern = MANUAL_PATTERNS[folder].get(split)
    if pattern is None:
        return []
    return sorted(Path(p) for p in glob.glob(str(Path(root) / folder / pattern)))


# StoryCloze 2016 (https://cs.rochester.edu/nlp/rocstories/, by request form): the validation and test
# CSVs name their columns InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1/2, AnswerRightEnding;
# the hub schema (LSDSem/story_cloze, what promptsource's templates read) renames them.
_STORY_CLOZE_COLUMNS = {
    "InputStoryid": "story_id",
    "InputSentence1": "input_sentence_1",
    "InputSentence2": "input_sentence_2",
    "InputSentence3": "input_sentence_3",
    "InputSentence4": "input_sentence_4",
    "RandomFifthSentenceQuiz1": "sentence_quiz1",
    "RandomFifthSentenceQuiz2": "sentence_quiz2",
    "AnswerRightEnding": "answer_right_ending",
}


def read_story_cloze_csv(path: Path) -> list[dict]:
    """StoryCloze's official CSV as hub-schema rows (``answer_right_ending`` an int, 1 or 2).

    Refuses (``TaskError`` naming the file, row and column) a missing column or a bad answer.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in _STORY_CLOZE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise TaskError(
                    f"{path}: columns {missing} missing; the StoryCloze CSV has {list(_STORY_CLOZE_COLUMNS)}"
                )
            rows = []
            for i, raw in enumerate(reader, start=2):
                row: dict[str, Any] = {new: raw[old] for old, new in _STORY_CLOZE_COLUMNS.items()}
                try:
                    row["answer_right_ending"] = int(row["answer_right_ending"])
                except ValueError:
                    raise TaskError(f"{path}: line {i}: AnswerRightEnding {raw['AnswerRightEnding']!r} is not 1 or 2") from None
                if row["answer_right_ending"] not in (1, 2):
                    raise TaskError(f"{path}: line {i}: AnswerRightEnding {row['answer_right_ending']} is not 1 or 2")
                rows.append(row)
    except OSError as e:
        raise TaskError(f"{path}: cannot read: {e}") from e
    return rows


MANUAL_READERS: dict[str, Callable[[Path], list[dict]]] = {"story_cloze/2016": read_story_cloze_csv}
MANUAL_PATTERNS: dict[str, dict[str, str]] = {
    "story_cloze/2016": {"validation": "*val*.csv", "test": "*test*.csv"},
}
