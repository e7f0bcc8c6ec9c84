"""A run directory's own files, read back safely: a path named in them stays inside the run
(``confined``), and a unit's records are read only when their sha256 is the one listed
(``verified_records``).

Nothing outside a run directory is read, written or removed because a run's own file named it. The
run directory itself (staging, resume, verify) is ``rospr_harness.runner.rundir``; this module stays
apart from the runner package so that ``rospr compare`` reads runs without importing the runner.
"""

from __future__ import annotations

from pathlib import Path

from rospr.canonical import digest_bytes
from rospr.errors import RosprError
from rospr_harness.schema import Record, RecordsError, UnitResult, parse_records


class UnsafePath(RosprError, ValueError):
    """A path read from a run's own files that would leave the run directory."""


def confined(run_dir: str | Path, rel: str, where: str) -> Path:
    """``run_dir / rel`` when it stays inside ``run_dir``; ``where`` names the file and field it came from.

    Refuses (``UnsafePath``) an empty, absolute or ``..`` path and one that resolves outside the run
    directory through a symlink: nothing outside a run directory is read, written or removed because
    a run's own file named it.
    """
    base = Path(run_dir)
    p = Path(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts:
        raise UnsafePath(f"{where}: {rel!r} is not a path inside the run directory {base}; restore the file "
                         "(a unit's records are records/<unit>.jsonl) or rerun into a new --out")
    target = base / p
    root = base.resolve()
    resolved = target.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafePath(f"{where}: {rel!r} leads outside the run directory {base} (to {resolved}, through a "
                         "symlink); remove the link or rerun into a new --out")
    return target


def verified_records(run_dir: str | Path, unit: UnitResult, where: str) -> tuple[bytes, list[Record]]:
    """The bytes and records of ``unit``'s records file, checked: inside ``run_dir``, sha256 as listed.

    ``where`` names the results file and the unit's position (``results.json: units[3]``). Refuses
    (``UnsafePath``, ``RecordsError``) a path outside the run, a missing file, a unit without a
    digest (written before schema 1.2) and a file whose sha256 differs.
    """
    path = confined(run_dir, unit.records, f"{where}.records")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecordsError(f"{path}: cannot read the records of {where} ({exc.strerror}); rerun the unit") from None
    if not unit.sha256:
        raise RecordsError(f"{where}.sha256: missing (a run written before schema 1.2), so {path} cannot be "
                           "checked; rerun it with this rospr")
    digest = digest_bytes(data)
    if digest != unit.sha256:
        raise RecordsError(f"{path}: sha256 {digest[:12]}… differs from {where}.sha256 {unit.sha256[:12]}… (the "
                           "records were changed after the run); rerun the unit (rospr run CONFIG --resume RUN_DIR) "
                           "or restore the file")
    return data, parse_records(data, path)
