"""``rospr lm-eval ARGS``: lm-evaluation-harness's own command line, with rospr's model registered.

Every argument goes to lm-eval unchanged (``rospr lm-eval --help`` is the help of lm-eval's ``run``);
without a ``--model``, ``--model rospr`` is added. The model's arguments are ``--model_args`` (see
``rospr_harness.lm_eval.model.RosprLM``): ``pretrained=PATH``, ``url=HOST:PORT`` for a Triton server,
``convention=lm-eval|t0``. A refusal of ours (a request type the scorer does not serve) is one
``error:`` line, as for every command; so is a usage check of lm-eval's own (a ``ValueError`` raised in
lm-eval's code, e.g. "No tasks specified"), shown as lm-eval's message, not as a bug of ours.
"""

from __future__ import annotations

import sys

import typer

from rospr.errors import SettingError, StateError

SUBCOMMANDS = ("run", "ls", "validate")


def lm_eval(ctx: typer.Context) -> None:
    """Run lm-evaluation-harness (its own flags: --tasks, --limit, --model_args ...) with --model rospr."""
    raise typer.Exit(run_lm_eval(list(ctx.args)))


def with_rospr_model(argv: list[str]) -> list[str]:
    """``argv`` as lm-eval's ``run`` subcommand (added when no subcommand is named, as lm-eval itself
    does), with ``--model rospr`` added when no model is named (lm-eval's own default is ``hf``)."""
    if not argv or argv[0] not in SUBCOMMANDS:
        argv = ["run", *argv]
    if argv[0] != "run" or any(a in ("-h", "--help") or a == "--model" or a.startswith("--model=") for a in argv):
        return argv
    return [*argv, "--model", "rospr"]


def raised_in(exc: BaseException, package: str) -> bool:
    """Whether ``exc`` was raised by the code of ``package`` (its innermost frame's module)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module == package or module.startswith(package + ".")


def run_lm_eval(argv: list[str]) -> int:
    """lm-eval's console entry (``lm_eval.__main__.cli_evaluate``) on ``argv``, after registering the
    ``rospr`` model; returns its exit code. Refuses (``StateError``) an environment without lm-eval."""
    import importlib.util

    if importlib.util.find_spec("lm_eval") is None:
        raise StateError("rospr lm-eval: lm-evaluation-harness is not installed here; pip install -e '.[lmeval]'")
    import rospr_harness.lm_eval.model  # noqa: F401  registers the model as "rospr"
    from lm_eval.__main__ import cli_evaluate

    saved = sys.argv
    sys.argv = ["lm-eval", *with_rospr_model(argv)]
    try:
        cli_evaluate()
    except SystemExit as exc:  # argparse's --help and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except ValueError as exc:
        if not raised_in(exc, "lm_eval"):
            raise
        raise SettingError(f"lm-eval: {exc} (lm-eval's own check of its arguments; rospr lm-eval --help lists "
                           "them)") from exc
    finally:
        sys.argv = saved
    return 0
