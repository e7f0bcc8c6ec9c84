"""The one base of the project's errors, and two general refusals for modules without their own class.

A ``RosprError`` is a refusal of ours: its message says what the user did (the file, the config field,
the flag) and the fix. The ``rospr`` command prints it as one ``error:`` line and exits with code 2.
Any other exception reaching the command is a bug of ours: it is printed as "an unexpected error ...
report it". ``ROSPR_TRACEBACK=1`` shows the traceback of either.

Every error class of the project derives from ``RosprError`` and keeps the built-in type callers
already catch as a mixin (``class TaskError(RosprError, ValueError)``). This module imports nothing.
"""

from __future__ import annotations


class RosprError(Exception):
    """A refusal of ours whose message names what the user did and the fix (never a bug)."""


class SettingError(RosprError, ValueError):
    """A value the user gave (a config field, a command-line flag, an environment variable, a file's
    content) is refused; the message names it and what to give instead."""


class StateError(RosprError, RuntimeError):
    """The machine or the files changed under the work (a folder changed since it was read, a worker
    died, a resource is missing); the message says what and the fix (often: run again)."""
