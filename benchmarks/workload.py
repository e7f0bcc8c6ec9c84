"""The examples and models the benchmarks share: a held-out-like and BIG-bench-like mix of choice
counts (``examples``), and long BIG-bench inputs with many choices (``long_examples``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rospr.data import Example

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
BIGBENCH_TASKS = ("bigbench/strategyqa", "bigbench/logical_deduction/five_objects", "bigbench/hindu_knowledge",
                  "bigbench/conceptual_combinations/emergent_properties")


def model_dir(size: str) -> Path:
    """build/<size>-t0, built with `rospr tiny --size SIZE` when absent."""
    from rospr_harness.tiny_model import build_tiny

    path = REPO / "build" / f"{size}-t0"
    if not (path / "config.json").is_file():
        log.info("building the %s model in %s", size, path)
        build_tiny(path, size=size)
    return path


def _settings():
    """Data settings with BIG-bench from ``$ROSPR_DATA_DIR`` or ``../shared/data`` when it has a
    ``bigbench/`` folder, else from the fetched sdist (``rospr data fetch bigbench``); ``bigbench`` is
    None when neither is there (nothing is downloaded here)."""
    from dataclasses import replace

    from rospr_harness.tasks import fetch as fetching
    from rospr_harness.tasks.base import DataSettings

    data = os.environ.get("ROSPR_DATA_DIR") or str(REPO.parent / "shared" / "data")
    settings = DataSettings.from_env(data if Path(data, "bigbench").is_dir() else None)
    if not settings.bigbench and (cached := fetching.cached("bigbench")) is not None:
        settings = replace(settings, bigbench=str(cached))
    return settings


def examples(n_per_task: int = 24) -> list[Example]:
    """Built-in tasks (2-4 choices) plus BIG-bench tasks (2-7 choices) when the data folder is there."""
    from rospr_harness.tasks import get_task

    settings = _settings()
    out: list[Example] = []
    for name in ("builtin/animals", "builtin/nli", "builtin/fruit_choice", "builtin/sentiment", "builtin/topic"):
        task = get_task(name, settings)
        out += task.load(task.prompts()[0], limit=n_per_task).examples
    if not settings.bigbench:
        log.warning("no BIG-bench data (ROSPR_DATA_DIR, ../shared/data or `rospr data fetch bigbench`): the mixed "
                    "workload is the built-in tasks only (%d examples); its figures are not comparable with a "
                    "run that had BIG-bench", len(out))
    else:
        for name in BIGBENCH_TASKS:
            task = get_task(name, settings)
            out += task.load("bigbench", limit=n_per_task).examples
    return out


# The BIG-bench tasks that have inputs of over 200 tokens with 3 or more choices (every other task of
# the 14 has either short inputs or two choices): 3 to 11 choices, 5.0 on average at 24 per task.
LONG_TASKS = ("bigbench/code_line_description", "bigbench/conceptual_combinations",
              "bigbench/language_identification", "bigbench/logic_grid_puzzle", "bigbench/logical_deduction",
              "bigbench/vitaminc_fact_verification")


def long_examples(tokenizer, n_per_task: int = 24, min_tokens: int = 200, max_tokens: int = 500,
                  min_choices: int = 3) -> list[Example]:
    """The first ``n_per_task`` examples of each of ``LONG_TASKS`` whose input is over ``min_tokens``
    and at most ``max_tokens`` tokens of ``tokenizer`` (the scored model's: lengths are in its tokens)
    and that have ``min_choices`` or more choices. Refuses (``ValueError``) to run without the
    BIG-bench data, since the workload would silently be empty."""
    from rospr_harness.tasks import get_task

    settings = _settings()
    if not settings.bigbench:
        raise ValueError("the long-input workload needs BIG-bench: run `rospr data fetch bigbench`, or set "
                         "ROSPR_DATA_DIR to a folder with bigbench/ (e.g. ../shared/data)")
    out: list[Example] = []
    for name in LONG_TASKS:
        task = get_task(name, settings)
        kept = []
        for e in task.load("bigbench").examples:  # in file order; tokenised only until enough are kept
            if len(e.choices) >= min_choices and min_tokens < len(tokenizer(e.input_text.rstrip()).input_ids) <= max_tokens:
                kept.append(e)
                if len(kept) == n_per_task:
                    break
        if len(kept) < n_per_task:
            log.warning("%s: only %d long examples (asked for %d)", name, len(kept), n_per_task)
        out += kept[:n_per_task]
    return out
