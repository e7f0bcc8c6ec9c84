"""What every command module shares: the stderr console and the logging set-up."""

from __future__ import annotations

import logging

from rich.logging import RichHandler

from rospr_harness.cli.errors import err

__all__ = ["err", "setup_logging"]


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("transformers", "datasets", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
