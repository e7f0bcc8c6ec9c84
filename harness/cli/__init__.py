"""The ``rospr`` command: a thin layer over library functions, one module per command group.

``run`` (run, plan), ``data`` (tasks, data ...), ``bank`` (tune, bank ..., library build), ``check``
(schema, verify, compare), ``models`` (tiny, export, perf-inputs), ``serve``, ``bench`` (the ``rospr-bench``
entry) and ``lm-eval`` (lm-evaluation-harness's command line, ``rospr`` model registered). A command
calls the library and prints; it catches nothing of ours. The group handler
(``rospr_harness.cli.errors``) turns a failure into one ``error:`` line and exit code 2 by its type: a
``RosprError`` is a refusal (its own message), anything else a bug of ours ("an unexpected error ...
report it"); ``ROSPR_TRACEBACK=1`` shows the traceback instead.
"""

from __future__ import annotations

import typer

from rospr_harness.cli import bank, bench, check, data, lm_eval, models, run, serve
from rospr_harness.cli.errors import OneLineErrors, describe_error, is_refusal

__all__ = ["app", "describe_error", "is_refusal", "main"]

app = typer.Typer(cls=OneLineErrors, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Evaluate RoSPr (Retrieval of Soft Prompt) at scale.")

# The dispatch table, in the order `rospr --help` lists the commands.
app.command("run")(run.run)
app.command("plan")(run.plan)
app.command("tiny")(models.tiny)
app.command("tasks")(data.tasks)
app.command("schema")(check.schema)
app.command("verify")(check.verify)
app.command("compare")(check.compare)
app.command("export")(models.export)
app.command("export-env")(models.export_env)
app.command("perf-inputs")(models.perf_inputs)
app.command("serve")(serve.serve)
app.command("tune")(bank.tune)
app.add_typer(data.data_app, name="data")
app.add_typer(bank.bank_app, name="bank")
app.add_typer(bank.library_app, name="library")
app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(bench.bench)
# every argument, --help included, is lm-eval's own
app.command("lm-eval", add_help_option=False,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(lm_eval.lm_eval)


def main() -> None:  # console script entry point
    app()
