"""What every backend is: a ``Backend`` (scorer, tokenizer, identity) and the error of one that cannot serve."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from rospr.errors import RosprError, SettingError
from rospr.scoring import Scorer


@dataclass
class Backend:
    """What a run scores with: the scorer, the tokenizer that encodes for it, the model's identity."""

    name: str
    scorer: Scorer
    tokenizer: Any
    identity: dict
    model: Any = None  # the torch model when one was loaded in process (tuning, reference)


def check_device(device: str, backend: str, cuda: Callable[[], tuple[int | None, str]]) -> None:
    """Refuse (``SettingError``, naming ``model.device``, what was found and the fix) a ``model.device`` the
    backend cannot score on here, before anything is loaded: not ``cpu``, ``cuda`` or ``cuda:N``; cuda where the
    backend has no CUDA device; ``cuda:N`` beyond the devices it has. ``cuda()`` (asked only for a CUDA device)
    gives how many CUDA devices the backend can score on here (0: a CPU build of torch, onnxruntime without its
    CUDA provider; None: some, how many it cannot tell) and what it has (versions, providers). The one check of
    every backend: none falls back to the CPU silently."""
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", device)
    if match is None:
        raise SettingError(f"model.device={device!r}: not a device name; use cpu, cuda or cuda:N")
    if device == "cpu":
        return
    cuda_devices, found = cuda()
    if cuda_devices == 0:
        raise SettingError(f"model.device={device!r}: backend {backend} has no CUDA device here ({found}), and would "
                           "score on the CPU; set model.device=cpu, or install its GPU build where a GPU is")
    index = int(match.group(1) or 0)
    if cuda_devices is not None and index >= cuda_devices:
        raise SettingError(f"model.device={device!r}: backend {backend} sees {cuda_devices} CUDA device(s) here "
                           f"(cuda:0..cuda:{cuda_devices - 1}); choose one of them")


class BackendUnavailable(RosprError, RuntimeError):
    """A backend cannot serve (server down, timed out after its retries): the message says which and why."""
