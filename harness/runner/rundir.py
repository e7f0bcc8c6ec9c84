"""The run directory as the driver keeps it: finished units, written one by one, resumable, never lost.

A unit is written in two atomic steps: its records file (``records/<slug>.jsonl``), then
``results.json`` listing it with the file's sha256. A driver killed between the two leaves a records
file that no unit lists; a resumed run recomputes that unit and overwrites the file. So a unit is
either listed with intact records, or redone: never lost, never counted twice (units are keyed by
(task, prompt, method)).

**A rerun never loses the earlier run before it has started.** A run (without ``--resume``) into a
directory that holds an earlier run (any of ``RUN_ENTRIES``) works in a staging folder inside it,
``.rospr-new/``, until its first unit is written (so the backend loaded, the bank and library are
ready and a unit scored or reused). Only then is the earlier run replaced (``_promote``):

1. the earlier run's entries move into ``.rospr-old/`` (renames inside one directory);
2. the new run's entries move from ``.rospr-new/`` into place;
3. ``.rospr-new/`` is renamed into ``.rospr-old/``: this is the commit point (one atomic rename,
   each step fsynced before it); then ``.rospr-old/`` is removed;
4. the run goes on writing in place.

The swap is ``rospr.store.FolderSwap``, the content store's replacement of a folder's entries.

A failure before that point (a bad model path, an export that fails, Ctrl-C, SIGKILL) leaves every
byte of the earlier run where it was: the staging folder is removed on the way out, or at the next
start (``recover``, under the run lock). A driver killed in the middle of steps 1-3 is recovered at
the next start: with ``.rospr-new/`` still present the swap had not committed and the earlier run
is put back; without it the swap had committed and ``.rospr-old/`` is only removed.

**Paths are confined.** A unit's ``records`` path read from results.json must be this unit's own
records file (``records/<slug>.jsonl``) inside the run directory (``rospr_harness.runfiles.confined``);
nothing outside the run directory is read, written or removed because a run's own file named it.
The earlier run is moved aside as whole entries, never file by file from the paths it lists.

**Only our own directories are written,** by the one rule of ``rospr.destination`` (``check_out``
calls its ``check_folder``). It runs before anything is created (the lock file included), and again
once the run lock is held: ``--out`` must be absent, empty, or carry our marker (``.rospr-owned`` of
kind ``run``, which ``open_run`` writes first). A run directory written before the marker is ours by
the proof it has always had (``_older_run``): a lock file alone, or a ``results.json`` (or, mid-swap,
``.rospr-old/results.json``) that is a regular file and validates against our schema
(``rospr_harness.schema.read_results``). A folder that merely has a ``records/`` or a ``report.md``, a
results.json of another schema, a file, or a symbolic link is refused in one line naming it and the
fix (another ``--out``, or empty it): nothing of the user's is moved or removed. A second driver is
refused while the first holds the run lock (``rospr_harness.lock``), naming the holder.

**Resume** (``--resume``) needs a run in the directory (``results.json``; refused otherwise). It
trusts a listed unit only when its records file is the unit's own and still has the listed sha256,
and takes the unit's ``n`` and ``accuracy`` from the records, not from results.json
(``rospr_harness.figures.unit_figures``); every other unit is recomputed. It refuses a config that differs
from the interrupted run's in anything but the execution settings (``ray``, ``cache``), naming the
keys that differ.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

from rospr_harness.config import RunConfig
from rospr_harness.lock import LOCK_NAME
from rospr_harness.figures import Spread, spread, summarise, unit_figures
from rospr_harness.runfiles import UnsafePath, confined, verified_records
from rospr_harness.schema import (Execution, RecordsError, ResultsFile, Statistics, UnitResult, parse_records, read_results,
                                  write_results)
from rospr.artifacts import FileRef, atomic_link_or_write
from rospr.canonical import digest_bytes
from rospr.destination import ForeignDestination, check_folder, mark
from rospr.store import FolderSwap

log = logging.getLogger(__name__)

UnitId = tuple[str, str, str]  # (task, prompt, method)
# Sections that say how a run executes, not what it computes: a resume may change them.
EXECUTION_KEYS = ("ray", "cache")
# What a run owns in its directory (the lock file stays: see rospr_harness.lock).
RUN_ENTRIES = ("results.json", "records", "report.md", "report.html")
STAGING = ".rospr-new"
TRASH = ".rospr-old"
# the kind of our marker (``rospr.destination``) in a run directory, and the fix of a refused --out
RUN_KIND = "run"
FIX = ("choose another --out (a new or empty folder, a rospr run directory, or the real folder behind a link), "
       "or empty that folder")


class RunDirError(ForeignDestination):
    """An ``--out`` that this run must not write into (the message names it and the fix)."""


class ResumeError(RunDirError):
    """A run directory that cannot be resumed with this config (the message says why and what to do)."""


def records_path(task: str, prompt: str, method: str) -> str:
    """A unit's records file, relative to the run directory."""
    from rospr_harness.runner.plan import unit_slug

    return f"records/{unit_slug(task, prompt, method)}.jsonl"


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(old: dict, new: dict) -> list[str]:
    """Dotted keys whose values differ between two config dumps, execution sections left out."""
    a = _flat({k: v for k, v in old.items() if k not in EXECUTION_KEYS})
    b = _flat({k: v for k, v in new.items() if k not in EXECUTION_KEYS})
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def _own_folder(path: Path) -> Path:
    """``path`` when it is a real folder of the run directory (or absent); refuses a link there."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise UnsafePath(f"{path}: expected rospr's own folder, found a link or a file; remove it and rerun")
    return path


def run_marker(out: Path) -> tuple[Path | None, str]:
    """The results.json that makes ``out`` a run of ours (None when there is none), and why not.

    Looked for in ``out`` and, for a swap a killed driver left half done, in ``out/.rospr-old``; it
    must be a regular file (not a link) that ``read_results`` accepts (our schema, validated).
    """
    reasons = []
    for path in (out / "results.json", out / TRASH / "results.json"):
        if not os.path.lexists(path):
            continue
        if path.is_symlink() or not path.is_file() or (path.parent != out and path.parent.is_symlink()):
            reasons.append(f"{path} is a link or not a regular file")
            continue
        try:
            read_results(path)
        except ValueError as exc:
            reasons.append(str(exc))
            continue
        return path, ""
    return None, "; ".join(reasons)


def _older_run(out: Path) -> bool:
    """The proof that ``out`` is ours for a run directory written before the marker: a run of ours
    (``run_marker``), or only the run lock file (a run that stopped before its first write)."""
    return run_marker(out)[0] is not None or os.listdir(out) == [LOCK_NAME]


def check_out(out: Path, resume: bool) -> None:
    """Refuse (``RunDirError``, ``ResumeError``) an ``--out`` that is not ours to write, before anything
    is created there, by the one rule of ``rospr.destination.check_folder``: absent, empty, marked a
    ``run`` of ours, or (``_older_run``) a run of ours or a lock file alone; never a link or a file.
    With ``resume``, a folder without a run of ours (``run_marker``) is refused too."""
    out = Path(out)
    real = out.is_dir() and not out.is_symlink()
    marker, why = run_marker(out) if real else (None, "")
    # a folder refused says why its results.json (if any) is no proof either; a link or a file needs no more
    found = (f"{why}; " if why else "no results.json of a rospr run there either; ") if real else ""
    fix = (f"{found}give the folder of the interrupted run, or start one with rospr run CONFIG --out ANOTHER_FOLDER"
           if resume else f"{found}{FIX}")
    try:
        check_folder(out, RUN_KIND, fix, ours=_older_run)
    except ForeignDestination as exc:
        raise (ResumeError if resume else RunDirError)(str(exc)) from None
    if resume and marker is None:
        raise ResumeError(f"{out}: holds no run to resume ({why or 'no results.json'}); start one with "
                          f"rospr run CONFIG --out {out}")


def holds_run(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds (part of) a run: results.json, records/ or a report."""
    return any(os.path.lexists(Path(run_dir) / name) for name in RUN_ENTRIES)


class RunDirectory:
    """The finished units of a run and the writing of ``results.json``; units kept in plan order.

    ``root`` is where this run writes: the run directory, or its staging folder until the first
    unit of a run that replaces an earlier one (see the module docstring).
    """

    def __init__(self, out: Path, config: RunConfig, order: Callable[[UnitResult], tuple]) -> None:
        self.out = Path(out)
        self.root = self.out
        self.config = config
        self.order = order
        self.units: dict[UnitId, UnitResult] = {}
        self.scores: dict[UnitId, dict[int, float]] = {}  # each unit's metric per row, from its records
        self._spreads: dict[tuple, Spread] = {}  # a task's spread, by its units' records digests
        self.staged = False
        self.swap = FolderSwap(self.out, RUN_ENTRIES, new=STAGING, old=TRASH)

    @staticmethod
    def key(unit: UnitResult) -> UnitId:
        return (unit.task, unit.prompt, unit.method)

    # -- starting ----------------------------------------------------------------------------------
    def recover(self) -> None:
        """Finish or undo a swap that a killed driver left half done; drop an unpromoted staging
        folder. Call with the run lock held, before anything else."""
        _own_folder(self.out / TRASH)
        _own_folder(self.out / STAGING)
        if self.swap.recover():
            log.warning("%s: an interrupted replacement of the earlier run was undone", self.out)

    def start_fresh(self) -> None:
        """A new run. Into a directory that holds an earlier run, it is staged (module docstring)."""
        if not holds_run(self.out):
            return
        log.warning("%s holds an earlier run; it is replaced once this run has written its first unit "
                    "(rospr run --resume %s finishes a run instead)", self.out, self.out)
        self.root = self.swap.begin()
        self.staged = True

    def resume(self) -> int:
        """Keep the intact units of an interrupted run. Returns how many.

        Refuses (``ResumeError``) a directory without a run and another config. A unit whose records
        path is not its own, or whose records fail their sha256 or cannot be read, is recomputed.
        """
        path = self.out / "results.json"
        if not path.is_file():
            raise ResumeError(f"{self.out}: holds no run to resume (no results.json); start one with "
                              f"rospr run CONFIG --out {self.out}")
        confined(self.out, "results.json", str(path))
        try:
            old = read_results(path)
        except ValueError as exc:
            raise ResumeError(f"cannot resume: {exc}; or run into a new --out directory") from None
        diff = config_differences(old.config, self.config.model_dump(mode="json"))
        if diff:
            shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise ResumeError(f"{self.out} was run with another config (differs in: {shown}); resume it with "
                              "the same config, or run this config into another --out")
        kept = 0
        for i, unit in enumerate(old.units):
            where = f"{path}: units[{i}]"
            own = records_path(unit.task, unit.prompt, unit.method)
            try:
                if unit.records != own:
                    raise UnsafePath(f"{where}.records: {unit.records!r} is not this unit's records file ({own})")
                _, records = verified_records(self.out, unit, where)
                figures = unit_figures(records, self.out / own, self.key(unit))
            except (UnsafePath, RecordsError) as exc:
                log.warning("%s / %s / %s: %s; recomputing the unit", unit.task, unit.prompt, unit.method, exc)
                continue
            if (figures.n, figures.accuracy) != (unit.n, unit.accuracy):
                log.warning("%s: n/accuracy %s/%s differ from its records' %s/%s; the records' are kept",
                            where, unit.n, unit.accuracy, figures.n, figures.accuracy)
            self.units[self.key(unit)] = unit.model_copy(update=figures.fields())
            self.scores[self.key(unit)] = figures.scores
            kept += 1
        return kept

    # -- writing -----------------------------------------------------------------------------------
    def add(self, unit: UnitResult, text: str, known: dict | None = None, source: FileRef | None = None) -> UnitResult:
        """Write a finished unit's records, then list it in results.json (``write`` does that).

        ``n`` and ``accuracy`` are taken from ``text`` (the records), whatever ``unit`` says; so is the
        spread, unless ``known`` (``results.spread_fields`` of these records, from a unit cache entry) has
        it for the same n, accuracy and statistics (``UnitFigures.known_spread``). ``source``: the file
        ``text`` was read from (a unit cache entry's records, verified), hard-linked in place of a copy
        when it still is that file (``atomic_link_or_write``).
        """
        data = text.encode("utf-8")
        own = records_path(unit.task, unit.prompt, unit.method)
        figures = unit_figures(parse_records(data, own), own, self.key(unit))
        figures.known_spread(known)
        unit = unit.model_copy(update={"sha256": digest_bytes(data), "records": own,
                                       **figures.fields()})
        # The folder must stay inside; the file itself is replaced by a rename, which never follows a link.
        confined(self.root, str(Path(own).parent), f"unit {unit.task} / {unit.prompt} / {unit.method}: records")
        atomic_link_or_write(self.root / own, data, source)
        self.units[self.key(unit)] = unit
        self.scores[self.key(unit)] = figures.scores
        return unit

    def task_spread(self, task: str, method: str, units: list[UnitResult]) -> Spread:
        """The spread of a task's mean over its prompts (rows resampled jointly), computed once per set of
        records (results.json is rewritten after every unit)."""
        key = (task, method, *sorted(u.sha256 for u in units))
        if key not in self._spreads:
            self._spreads[key] = spread([self.scores[self.key(u)] for u in units], ("task", task, method))
        return self._spreads[key]

    def results(self, provenance, execution: Execution) -> ResultsFile:
        units = sorted(self.units.values(), key=self.order)
        tasks, overall = summarise(units, self.task_spread)
        return ResultsFile(provenance=provenance, config=self.config.model_dump(mode="json"), units=units,
                           tasks=tasks, overall=overall, execution=execution, statistics=Statistics())

    def write(self, provenance, execution: Execution) -> ResultsFile:
        """Write results.json; a staged run with a unit written replaces the earlier run now."""
        res = self.results(provenance, execution)
        write_results(self.root / "results.json", res)
        if self.staged and self.units:
            self._promote()
        return res

    def finish(self) -> None:
        """The run ended well: a staged run that wrote no unit (an empty plan) replaces the earlier one too."""
        if self.staged:
            self._promote()

    def abandon(self) -> None:
        """The run failed: a staged run that never started is dropped; the earlier run stays as it was."""
        if self.staged:
            self.swap.abort()
            self.root, self.staged = self.out, False
            log.warning("%s: the earlier run was kept (this run failed before its first unit)", self.out)

    def _promote(self) -> None:
        self.swap.commit()  # the earlier run aside, this one in place, committed, the earlier removed
        self.root, self.staged = self.out, False
        log.info("%s: the earlier run was replaced by this one", self.out)


def open_run(out: Path, config: RunConfig, order: Callable[[UnitResult], tuple], resume: bool) -> tuple[RunDirectory, int]:
    """The run directory of a run into ``out``, with the run lock held: a half-done swap recovered,
    then the intact units of an interrupted run kept (``resume``; returns how many) or a fresh run
    started (staged over an earlier one). Refuses (``ResumeError``) to resume where no run is."""
    check_out(out, resume)  # again, under the lock: what appeared between the first check and the lock
    rundir = RunDirectory(out, config, order)
    rundir.recover()
    rundir.out.mkdir(parents=True, exist_ok=True)  # made by the run lock, unless a caller holds none
    mark(rundir.out, RUN_KIND)  # ours from now (rospr.destination), before anything else is written
    if resume:
        return rundir, rundir.resume()
    rundir.start_fresh()
    return rundir, 0


def check_resumable(out: Path) -> None:
    """Refuse (``ResumeError``) ``--resume`` into ``out`` when it holds no run of ours (before its lock)."""
    check_out(out, resume=True)
