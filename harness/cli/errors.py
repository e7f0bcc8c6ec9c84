"""How a failure of any command reaches the user: the group handler and the message of an exception.

Classification is by type alone. A ``RosprError`` (``rospr.errors``) is a refusal of ours: its own
message, one ``error:`` line, exit code 2. So is an ``OSError`` the system raised with an errno (the
file and a fix), a ``MemoryError``, and a pydantic ``ValidationError`` of a settings model (the config
line of ``rospr_harness.config``). Anything else is a bug of ours: its type and message, "an unexpected
error ... report it". ``ROSPR_TRACEBACK=1`` raises the exception instead, traceback and all.
"""

from __future__ import annotations

import errno
import os
import sys

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from rospr.errors import RosprError

err = Console(stderr=True)
EXIT_REFUSED = 2

# {place}: the setting that chose where the file is (``_place``): --out, or a cache's variable
_OS_FIXES = {
    errno.ENOSPC: "no space left on the device; free some space there or write somewhere else ({place})",
    errno.EDQUOT: "disk quota exceeded; free some space or write somewhere else ({place})",
    errno.EACCES: "permission denied; choose a folder you can write ({place}) or fix its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write ({place}) or fix its permissions",
    errno.EROFS: "read-only file system; choose a writable folder ({place})",
    errno.ENOENT: "no such file or directory; check the path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EISDIR: "is a folder where a file is expected; check the path",
    errno.EEXIST: "already exists where a folder is needed; choose another path ({place})",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n)",
}


def _place(filename: object) -> str:
    """The setting that chose where ``filename`` lies: one of rospr's caches (its variable, or
    ``$ROSPR_HOME``), else the command's output (``--out``)."""
    from pathlib import Path

    from rospr.cachedirs import CACHES, cache_home, cache_path

    if not filename:
        return "--out, or the cache folders under $ROSPR_HOME"
    path = Path(os.path.abspath(os.fsdecode(filename)))
    for kind, (variable, _) in CACHES.items():
        root = Path(os.path.abspath(cache_path(kind)))
        if path == root or root in path.parents:
            return f"it is in the {kind} cache {root}: set ${variable} or $ROSPR_HOME, not --out"
    home = Path(os.path.abspath(cache_home()))
    if path == home or home in path.parents:
        return f"it is in rospr's cache {home}: set $ROSPR_HOME, not --out"
    return "--out"


def _os_fix(exc: OSError) -> str:
    fix = _OS_FIXES.get(exc.errno, exc.strerror or str(exc))
    return fix.format(place=_place(exc.filename)) if "{place}" in fix else fix


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the project's refusals (its message names the file, field and fix)."""
    return isinstance(exc, RosprError)


def describe_error(exc: BaseException) -> str:
    """The message a user sees for ``exc``: its own message for a refusal of ours, the file and a fix
    for an ``OSError`` (found in the exception's causes when a library wrapped a full disk), the
    config line for a settings model that did not validate, the type and message of anything else."""
    for e in _causes(exc):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return f"{e.filename or '(a file being written)'}: {_os_fix(e)}"
    if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, RosprError):
        fix = _os_fix(exc)
        where = exc.filename if exc.filename is not None else "(file not named by the system)"
        return f"{where}: {fix}"
    if isinstance(exc, MemoryError):
        return "out of memory; lower scoring.batch_size or ray.scorers, or use a smaller model"
    remote = _remote_cause(exc)
    if remote is not None:  # an error of a Ray actor: its own message, not Ray's remote traceback
        exc = remote
    validation = _validation_error(exc)
    if validation is not None:
        return validation
    text = str(exc).strip()
    if text and is_refusal(exc):
        return text
    return _unexpected(exc, text)


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [exc], {id(exc)}
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
    return chain


def _unexpected(exc: BaseException, text: str) -> str:
    return f"{type(exc).__name__}: {text or '(no message)'} (an unexpected error; set ROSPR_TRACEBACK=1 to see " \
           "where it came from and report it)"


def _remote_cause(exc: BaseException) -> BaseException | None:
    """For an error raised in a Ray actor or task: the original exception."""
    if "ray" not in sys.modules:
        return None
    from ray.exceptions import RayTaskError

    if not isinstance(exc, RayTaskError):
        return None
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) and not isinstance(cause, RayTaskError) else exc


def _validation_error(exc: BaseException) -> str | None:
    """The config line of a pydantic ``ValidationError`` (a settings model validated outside load_config)."""
    if "pydantic" not in sys.modules:
        return None
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return None
    from rospr_harness.config import format_validation_error

    return format_validation_error(exc, exc.title)


def fail(exc: BaseException) -> None:
    """Print ``exc`` as one ``error:`` line and exit 2; with ``ROSPR_TRACEBACK=1``, raise it instead."""
    if os.environ.get("ROSPR_TRACEBACK"):
        raise exc
    err.print(f"[bold red]error:[/] {escape(describe_error(exc))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(EXIT_REFUSED)


# Command-line usage errors are click's to print (usage line, exit 2). Typer >= 0.29 vendors its own click
# (``typer._click``), whose ClickException is not ``click.ClickException``: both, found from typer's own
# BadParameter rather than by a private import path.
_USAGE_ERRORS = tuple({click.exceptions.ClickException,
                       *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})


class OneLineErrors(typer.core.TyperGroup):
    """Every command's failure is a message and exit code 2, never a traceback (ROSPR_TRACEBACK=1 shows it)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, *_USAGE_ERRORS, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # the reader went away (`rospr tasks | head`): nothing left to say to it
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit would fail on the pipe again
            raise typer.Exit(0)
        except Exception as exc:
            fail(exc)
