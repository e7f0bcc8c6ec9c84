"""What every backend is: a ``Backend`` (scorer, tokenizer, identity) and the error of one that cannot serve."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rospr.errors import RosprError
from rospr.scoring import Scorer


@dataclass
class Backend:
    """What a run scores with: the scorer, the tokenizer that encodes for it, the model's identity."""

    name: str
    scorer: Scorer
    tokenizer: Any
    identity: dict
    model: Any = None  # the torch model when one was loaded in process (tuning, reference)


class BackendUnavailable(RosprError, RuntimeError):
    """A backend cannot serve (server down, timed out after its retries): the message says which and why."""
