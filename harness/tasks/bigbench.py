"""BIG-bench JSON tasks, formatted like BIG-bench's ``JsonTask`` zero-shot multiple choice.

Where the tasks come from: a folder of ``<task>/task.json`` (subtasks in sub-folders
``<task>/<subtask>/task.json``), or a base URL with the same layout (read with ``urllib``, e.g.
:data:`DEFAULT_URL`, BIG-bench's GitHub tree). Without a ``bigbench`` setting the default is the
``benchmark_tasks/`` folder of the data cache: bigbench 1.0.0's files of the 14 paper tasks, from
the first of several sources that has them (:mod:`rospr_harness.tasks.fetch`), fetched when a task
is first read; listing tasks never fetches (uncached: the 14 T0 tasks, as for a URL). A task whose ``task.json``
has no ``examples`` is the union of its subtasks: those its ``subtasks`` list names (folder names,
or inline task objects), else (folder source only) every sub-folder holding a ``task.json``.

Task names: ``bigbench/<task>`` (all subtasks together, in order; each example's ``meta`` records
its ``subtask``) and ``bigbench/<task>/<subtask>``. Each task has one prompt, ``bigbench``: the task's
own format. For an example with ``input`` and ``target_scores`` the input text is::

    task_prefix + example_input_prefix + input
        [+ choice_prefix + choice_prefix.join(choices)   if append_choices_to_input]
        + example_output_prefix

with BIG-bench's defaults ``""``, ``"\\nQ: "``, ``"\\nA: "``, ``"\\n  choice: "`` and ``true``.
``append_choices_to_input`` may be a JSON bool or one of the strings ``"true"``/``"false"``
(any case); anything else is refused.

Choice order (our choice, written down here): the choices are the keys of ``target_scores`` in file
order, both as ``Example.choices`` (as BIG-bench does) and where they are appended to the input.
BIG-bench appends ``rng.permutation(sorted(keys))`` with a NumPy RNG; we do not reproduce that
random permutation, so a run does not depend on NumPy's RNG stream.

Scoring: ``Example.target_scores`` holds every choice's score (several may be 1, e.g.
``novel_concepts``); ``Example.score_of`` gives BIG-bench's ``multiple_choice_grade``. Examples
without ``target_scores`` (generative only) are skipped and counted. Duplicated examples are kept
(``index`` is the example's position).

An answer choice (a key of ``target_scores``) must have text: ``""`` or blanks are refused
(``TaskError`` naming the file and the example), since a choice with no token of its own is scored
as its EOS alone and wins or loses on the model's wish to stop (``rospr.scoring.encode_examples``
refuses it for every task).

``target_scores`` values must be JSON numbers: finite ints or floats within ``MAX_TARGET_SCORE``
(1e6) of zero. Refused (``TaskError`` naming the file and ``examples[i].target_scores[choice]``):
booleans (``true`` is not 1 here), strings (``"1"``), ``null``, lists or objects, ``NaN``/``Infinity``
(which Python's JSON reader accepts) and magnitudes like ``1e308`` or ``10**400``, whose mean over
a task's examples overflows (a run would write figures it cannot read back). A key given twice in
any object of a task.json (a choice of ``target_scores`` listed twice, say) is refused too (``TaskError``
naming the file, the key and the object's path, ``rospr.artifacts.strict_loads``): JSON readers keep
one of the two values silently, and which score the author meant cannot be known.

The grading rule, BIG-bench's ``measure_multiple_choice_grade`` (``bigbench/api/metrics.py``),
for every score a file may hold:

- an example's grade is the target score of the *predicted* choice (the argmax of the model's
  choice scores; where model scores tie at the top, the mean of the tied choices' target scores
  (``rospr.data.credit``): what BIG-bench's random draw among them earns on average), and the task's
  ``multiple_choice_grade`` (our ``accuracy``) is the mean grade over its examples;
- several maxima (``{"a": 1, "b": 1, "c": 0}``): predicting any of them earns the maximum;
  ``target_text`` (and ``Example.gold()``) name the first in file order;
- all scores zero (or all equal): the example counts in the mean and earns that value whatever is
  predicted;
- fractional scores (``0.5``) earn their fraction; negative scores earn a negative grade, so a
  task's mean may fall below 0, and scores above 1 may lift it above 1: no clipping, no
  normalisation, exactly as BIG-bench computes it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rospr_harness.tasks.base import DataSettings, SplitStatus, TaskError
from rospr_harness.tasks.common import content_hash
from rospr.artifacts import json_document
from rospr.data import Example, UnitData

log = logging.getLogger(__name__)

PROMPT = "bigbench"
DEFAULT_URL = "https://raw.githubusercontent.com/google/BIG-bench/main/bigbench/benchmark_tasks"

#: The 14 BIG-bench tasks of the T0 / RoSPr evaluation.
T0_TASKS = (
    "code_line_description",
    "conceptual_combinations",
    "formal_fallacies_syllogisms_negation",
    "hindu_knowledge",
    "known_unknowns",
    "language_identification",
    "logic_grid_puzzle",
    "logical_deduction",
    "misconceptions",
    "movie_dialog_same_or_different",
    "novel_concepts",
    "strategyqa",
    "vitaminc_fact_verification",
    "winowhy",
)

#: Subtask folders of the T0 tasks that have them (their parent task.json lists none; a URL source
#: cannot list folders).
KNOWN_SUBTASKS = {
    "conceptual_combinations": (
        "contradictions", "emergent_properties", "fanciful_fictional_combinations", "homonyms",
        "invented_words", "surprising_uncommon_combinations",
    ),
    "logical_deduction": ("five_objects", "seven_objects", "three_objects"),
}

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_BOOL_STRINGS = {"true": True, "false": False}


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BigBenchFormat:
    """The formatting keys of a ``task.json`` (BIG-bench's defaults when absent)."""

    task_prefix: str = ""
    example_input_prefix: str = "\nQ: "
    example_output_prefix: str = "\nA: "
    choice_prefix: str = "\n  choice: "
    append_choices_to_input: bool = True

    @classmethod
    def from_task_json(cls, data: dict, where: str) -> "BigBenchFormat":
        """Read the keys from ``data``; ``TaskError`` naming ``where`` and the field if malformed."""
        values: dict[str, Any] = {}
        for key in ("task_prefix", "example_input_prefix", "example_output_prefix", "choice_prefix"):
            if key in data and data[key] is not None:
                if not isinstance(data[key], str):
                    raise TaskError(
                        f"{where}: field {key!r} must be a string, got {type(data[key]).__name__} "
                        f"{data[key]!r}"
                    )
                values[key] = data[key]
        if "append_choices_to_input" in data and data["append_choices_to_input"] is not None:
            values["append_choices_to_input"] = parse_bool(
                data["append_choices_to_input"], where, "append_choices_to_input"
            )
        return cls(**values)

    def format(self, input_text: str, choices: tuple[str, ...]) -> str:
        """The zero-shot multiple-choice input text of one example (see the module docstring)."""
        text = self.task_prefix + self.example_input_prefix + input_text
        if self.append_choices_to_input:
            text += self.choice_prefix + self.choice_prefix.join(choices)
        return text + self.example_output_prefix


MAX_TARGET_SCORE = 1e6  # a grade's magnitude; a mean of up to 1e9 of them stays finite and exact enough


def parse_bool(value: Any, where: str, field: str) -> bool:
    """A JSON bool, or the strings ``"true"``/``"false"`` in any case; ``TaskError`` otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOL_STRINGS:
        return _BOOL_STRINGS[value.strip().lower()]
    raise TaskError(
        f"{where}: field {field!r} must be true or false (a JSON bool or the string \"true\"/"
        f"\"false\"), got {value!r}"
    )


# --------------------------------------------------------------------------------------------
# Reading task.json
# --------------------------------------------------------------------------------------------


def default_location(fetch_missing: bool = True) -> str:
    """The ``bigbench`` location used when none is configured: the data cache's ``benchmark_tasks/``
    (bigbench 1.0.0's files of the 14 paper tasks, from whichever source had them); when it is not
    cached, it is fetched (``fetch_missing``) or :data:`DEFAULT_URL` stands in (for listing). Refuses
    (``TaskError``) a failed fetch: every source tried, why, and the fix."""
    from rospr_harness.tasks import fetch as fetching

    found = fetching.cached("bigbench")
    if found is not None:
        return str(found)
    if not fetch_missing:
        return DEFAULT_URL
    log.info("no bigbench setting and no cached BIG-bench tasks: fetching them into %s", fetching.data_cache_dir())
    return str(fetching.fetch("bigbench"))


class _Source:
    """A folder or a base URL laid out as ``<task>[/<subtask>]/task.json``."""

    def __init__(self, location: str | None, *, fetch_missing: bool = True) -> None:
        self.location = location or default_location(fetch_missing)
        self.is_url = bool(re.match(r"^[a-z][a-z0-9+.\-]*://", self.location))
        self.root = None if self.is_url else Path(self.location)

    def origin(self) -> dict[str, str]:
        """task.json path -> the source it was fetched from, when this is the data cache's copy (else ``{}``)."""
        from rospr_harness.tasks import fetch as fetching

        if self.root is None or self.root != fetching.cached("bigbench"):
            return {}
        return fetching.provenance("bigbench")

    def where(self, *parts: str) -> str:
        if self.is_url:
            return "/".join([self.location.rstrip("/"), *parts, "task.json"])
        return str(self.root.joinpath(*parts, "task.json"))

    def read(self, *parts: str) -> tuple[dict, str]:
        where = self.where(*parts)
        if self.is_url:
            from rospr_harness.tasks.fetch import NetTimeout, read_url

            try:
                raw = read_url(where).decode("utf-8")
            except NetTimeout as e:
                raise TaskError(f"cannot fetch task.json: {e}; check the bigbench URL setting") from None
            except (urllib.error.URLError, OSError, UnicodeDecodeError) as e:
                raise TaskError(f"{where}: cannot fetch task.json: {e}; check the bigbench URL setting") from e
        else:
            try:
                raw = Path(where).read_text(encoding="utf-8")
            except FileNotFoundError as e:
                raise TaskError(
                    f"{where}: task.json not found (layout <bigbench>/<task>[/<subtask>]/task.json); "
                    "check the task name and the bigbench setting"
                ) from e
            except (OSError, UnicodeDecodeError) as e:
                raise TaskError(f"{where}: cannot read task.json: {e}") from e
        from rospr_harness.tasks.fetch import check_file

        # a file named as one of the benchmark's must be its bytes, wherever it is read from
        check_file("bigbench", "/".join([*parts, "task.json"]), raw.encode("utf-8"), where)
        return json_document(raw, where, TaskError, "fix or re-download the file"), where

    def subfolders(self, task: str) -> list[str] | None:
        """Sub-folders of ``task`` holding a task.json (sorted); ``None`` for a URL source."""
        if self.is_url:
            return None
        folder = self.root / task
        return sorted(p.name for p in folder.iterdir() if (p / "task.json").is_file()) if folder.is_dir() else []

    def tasks(self) -> list[str]:
        """Task names (with their subtasks) this source offers."""
        if self.is_url:
            return [n for t in T0_TASKS for n in (t, *(f"{t}/{s}" for s in KNOWN_SUBTASKS.get(t, ())))]
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if (p / "task.json").is_file():
                out.append(p.name)
                out.extend(f"{p.name}/{s}" for s in self.subfolders(p.name) or [])
        return out


@dataclass
class _Part:
    """One task.json with examples: a whole task, or one of its subtasks."""

    subtask: str | None
    data: dict
    where: str
    fmt: BigBenchFormat


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise TaskError(f"bad BIG-bench {what} name {name!r}: use letters, digits, '_', '.', '-'")


def _has_examples(data: dict, where: str) -> bool:
    if "examples" not in data:
        return False
    if not isinstance(data["examples"], list):
        raise TaskError(f"{where}: field 'examples' must be a list, got {type(data['examples']).__name__}")
    return True


def _part(subtask: str | None, data: dict, where: str) -> _Part:
    if not _has_examples(data, where) or not data["examples"]:
        raise TaskError(f"{where}: field 'examples' is missing or empty; a task.json needs examples")
    return _Part(subtask, data, where, BigBenchFormat.from_task_json(data, where))


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------


class BigBenchTask:
    """``bigbench/<task>`` or ``bigbench/<task>/<subtask>`` as a :class:`~rospr_harness.tasks.base.Task`."""

    folder = None  # no promptsource folder: the rows are the task.json examples

    def __init__(self, task: str, subtask: str | None = None, *, location: str | None = None) -> None:
        _check_name(task, "task")
        if subtask is not None:
            _check_name(subtask, "subtask")
        self.task = task
        self.subtask = subtask
        self.name = f"bigbench/{task}" + (f"/{subtask}" if subtask else "")
        self._location = location
        self._resolved: _Source | None = None
        self._parts: list[_Part] | None = None

    @property
    def _source(self) -> _Source:
        """Where the task's files are; the default is fetched here, on first read, never at construction."""
        if self._resolved is None:
            self._resolved = _Source(self._location)
        return self._resolved

    def prompts(self) -> list[str]:
        return [PROMPT]

    def training_prompts(self) -> list[str]:
        return self.prompts()

    def training_identity(self, prompt: str, split: str | None = None, limit: int | None = None) -> dict | None:
        """None: a BIG-bench source is rendered to be compared (``Task.training_identity``)."""
        return None

    def prompt_marks(self) -> dict[str, tuple[str, ...]]:
        return {p: () for p in self.prompts()}

    def split_status(self) -> list[SplitStatus]:
        """The one split, ``examples``: the task.json's folder or URL, ``ok`` when it is there."""
        parts = [self.task, self.subtask] if self.subtask else [self.task]
        src = self._resolved or _Source(self._location, fetch_missing=False)  # status downloads nothing
        where = src.where(*parts)
        kind = "url" if src.is_url else "folder"
        origin = src.origin().get("/".join([*parts, "task.json"]))
        if origin is None and self.subtask is None and self.task in KNOWN_SUBTASKS:  # the union: its subtasks' sources
            got = {src.origin().get(f"{self.task}/{s}/task.json") for s in KNOWN_SUBTASKS[self.task]}
            origin = ", ".join(sorted(o for o in got if o)) or None
        if origin is not None:
            kind = f"data cache, from {origin}"
        elif self._location is None and src.is_url:  # the default, not fetched: say so rather than name a URL
            from rospr_harness.tasks.fetch import data_cache_dir

            return [SplitStatus(self.name, self.name, "eval", "examples", "", None, None, "data cache",
                                str(data_cache_dir()), "not fetched: `rospr data fetch bigbench` (or with --from "
                                "PATH, a copy you have)", False)]
        ok = src.is_url or Path(where).is_file()
        return [SplitStatus(self.name, self.name, "eval", "examples", "", None, None, kind, where, "", ok)]

    def available(self) -> bool:
        """Whether this task's ``task.json`` exists (always ``True`` for a URL source; for the default not
        yet fetched, whether it is one of the 14 paper tasks, so that naming one downloads nothing)."""
        if self._resolved is None and self._location is None:
            src = _Source(None, fetch_missing=False)
            if src.is_url:
                return self.task in T0_TASKS and (self.subtask is None or self.subtask in KNOWN_SUBTASKS.get(self.task, ()))
        src = self._source
        if src.is_url:
            return True
        parts = (self.task, self.subtask) if self.subtask else (self.task,)
        return Path(src.where(*parts)).is_file()

    def parts(self) -> list[_Part]:
        """The task.json files with examples that make up this task (read once)."""
        if self._parts is None:
            self._parts = self._read_parts()
        return self._parts

    def _read_parts(self) -> list[_Part]:
        src = self._source
        if self.subtask is not None:
            data, where = src.read(self.task, self.subtask)
            return [_part(self.subtask, data, where)]
        data, where = src.read(self.task)
        if _has_examples(data, where) and data["examples"]:
            return [_part(None, data, where)]
        listed = data.get("subtasks")
        if listed is not None:
            if not isinstance(listed, list) or not listed:
                raise TaskError(f"{where}: field 'subtasks' must be a non-empty list")
            parts = []
            for i, entry in enumerate(listed):
                if isinstance(entry, str):
                    _check_name(entry, "subtask")
                    sub_data, sub_where = src.read(self.task, entry)
                    parts.append(_part(entry, sub_data, sub_where))
                elif isinstance(entry, dict):
                    name = str(entry.get("name") or i).split(":")[-1]
                    parts.append(_part(name, entry, f"{where} (subtasks[{i}])"))
                else:
                    raise TaskError(
                        f"{where}: field 'subtasks[{i}]' must be a subtask folder name or a task "
                        f"object, got {type(entry).__name__}"
                    )
            return parts
        folders = src.subfolders(self.task)
        if folders is None and self.task in KNOWN_SUBTASKS:
            folders = list(KNOWN_SUBTASKS[self.task])
        if folders is None:
            raise TaskError(
                f"{where}: no 'examples' and no 'subtasks' list, and sub-folders cannot be listed "
                f"over a URL; name a subtask: bigbench/{self.task}/<subtask>"
            )
        if not folders:
            raise TaskError(
                f"{where}: field 'examples' is missing or empty and there are no subtask folders "
                f"(<task>/<subtask>/task.json); a task.json needs examples"
            )
        return [_part(name, *src.read(self.task, name)) for name in folders]

    def load(self, prompt: str = PROMPT, split: str | None = None, limit: int | None = None, *,
             training: bool = False) -> UnitData:
        """All examples (BIG-bench JSON tasks have one split: ``None`` or ``"all"``).

        ``limit`` keeps the first ``limit`` examples across subtasks (before skipping). Refuses
        (``TaskError`` naming the file and field): an unknown prompt or split, an ``input`` that
        is not a string, ``target_scores`` that is not a non-empty object of finite numbers.
        """
        if prompt != PROMPT:
            raise TaskError(f"task {self.name!r}: unknown prompt {prompt!r}; available prompts: [{PROMPT!r}]")
        if split not in (None, "all"):
            raise TaskError(f"task {self.name!r}: unknown split {split!r}; BIG-bench JSON tasks have one: 'all'")
        examples: list[Example] = []
        used_rows: list[Any] = []
        skipped = 0
        index = 0
        for part in self.parts():
            if limit is not None and index >= limit:
                break
            used_rows.append({"subtask": part.subtask, "format": dataclasses.asdict(part.fmt)})
            for position, raw in enumerate(part.data["examples"]):
                if limit is not None and index >= limit:
                    break
                used_rows.append(raw)
                example = self._example(part, raw, position, index)
                index += 1
                if example is None:
                    skipped += 1
                else:
                    examples.append(example)
        if skipped:
            log.info("%s: %d examples without target_scores skipped (generative only)", self.name, skipped)
        return UnitData(
            task=self.name,
            prompt=PROMPT,
            examples=examples,
            skipped=skipped,
            source=", ".join(p.where for p in self.parts()),
            content_hash=content_hash(f"bigbench-json-zero-shot-mc/{self.name}", used_rows),
        )

    def _example(self, part: _Part, raw: Any, position: int, index: int) -> Example | None:
        field = f"examples[{position}]"
        if not isinstance(raw, dict):
            raise TaskError(f"{part.where}: field {field!r} must be an object, got {type(raw).__name__}")
        if "target_scores" not in raw:
            return None
        text = raw.get("input")
        if not isinstance(text, str):
            raise TaskError(f"{part.where}: field '{field}.input' is missing or not a string")
        scores = raw["target_scores"]
        if not isinstance(scores, dict) or not scores:
            raise TaskError(
                f"{part.where}: field '{field}.target_scores' must be a non-empty object of "
                f"choice -> score, got {type(scores).__name__}"
            )
        for choice, score in scores.items():
            if not choice.strip():  # scored as EOS alone, it wins on the model's wish to stop, not on a text
                raise TaskError(f"{part.where}: field '{field}.target_scores' has the empty answer choice {choice!r} "
                                "(no text to score); give it its text or drop the example")
            if (isinstance(score, bool) or not isinstance(score, (int, float))
                    or not -MAX_TARGET_SCORE <= score <= MAX_TARGET_SCORE):  # NaN fails every comparison
                big = isinstance(score, int) and abs(score) >= 10**30  # repr of 10**400: 401 digits
                shown = f"an integer of {len(str(abs(score)))} digits" if big else repr(score)
                raise TaskError(
                    f"{part.where}: field '{field}.target_scores[{choice!r}]' must be a finite "
                    f"number from {-MAX_TARGET_SCORE:g} to {MAX_TARGET_SCORE:g} (a grade; BIG-bench's are 0 to 1), "
                    f"got {shown}; fix the task file"
                )
        choices = tuple(scores)
        values = tuple(float(v) for v in scores.values())
        best = max(values)
        return Example(
            task=self.name,
            prompt=PROMPT,
            index=index,
            input_text=part.fmt.format(text, choices),
            choices=choices,
            target_scores=values,
            target_text=choices[values.index(best)],
            meta={"subtask": part.subtask, "source_index": position, "source": part.where},
        )


def bigbench_task(name: str, settings: DataSettings) -> BigBenchTask:
    """``bigbench/<task>[/<subtask>]`` from ``settings.bigbench`` (a folder or URL; default: the
    data cache's copy of the 14 paper tasks, see :func:`default_location`)."""
    parts = name.split("/")
    if parts[0] != "bigbench" or len(parts) not in (2, 3) or not all(parts[1:]):
        raise TaskError(f"bad BIG-bench task name {name!r}: use bigbench/<task> or bigbench/<task>/<subtask>")
    return BigBenchTask(parts[1], parts[2] if len(parts) == 3 else None, location=settings.bigbench)


def list_bigbench(settings: DataSettings) -> list[str]:
    """``bigbench/...`` names offered by ``settings.bigbench`` (a URL, or no setting and nothing
    cached: the 14 T0 tasks and their known subtasks). Never downloads."""
    return [f"bigbench/{t}" for t in _Source(settings.bigbench, fetch_missing=False).tasks()]
