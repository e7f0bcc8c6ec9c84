"""Who trains the prompts a bank lacks (``rospr.tuning.Trainer``): in process, or a pool of Ray actors.

``trainer(tune, ...)`` follows ``rospr.tune.parallel``: ``off`` trains in process; ``ray`` on Ray
actors; ``auto`` on Ray actors when Ray is installed and more than one prompt is to be trained. Each
actor holds one ``rospr.tuning.TuneWorker`` (one copy of the backbone) and reserves ``tune.threads``
CPUs; a prompt is saved as soon as its actor returns it. The numbers are the same either way (each
prompt has its own seed and thread count).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Sequence

from harness.config import TuneConfig
from harness.ray_session import ray_available, ray_started
from rospr.tuning import Trainer, TuneJob, TuneResult, TuneSettings, TuneWorker, in_process

log = logging.getLogger(__name__)


def ray_pool(name_or_path: str, settings: TuneSettings, num_cpus: int | None) -> Trainer:
    """A ``Trainer`` on Ray actors (a local loopback Ray unless one is running in this process)."""

    def train(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        import ray  # optional: only a Ray pool needs it
        from ray.util import ActorPool

        actors: list = []
        with ray_started(None, num_cpus), contextlib.ExitStack() as cleanup:
            # free their CPUs now, not when garbage collection gets to the handles
            cleanup.callback(lambda: [ray.kill(actor) for actor in actors])
            slots = int(ray.available_resources().get("CPU", 1))
            n_workers = max(1, min(len(todo), slots // settings.threads or 1, num_cpus or slots))
            Actor = ray.remote(num_cpus=settings.threads)(TuneWorker)
            # Paths are resolved here: a Ray worker's working directory is not the driver's.
            path = str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path
            actors = [Actor.remote(path, settings) for _ in range(n_workers)]
            pool = ActorPool(actors)
            log.info("tuning %d prompts on %d Ray actors", len(todo), n_workers)
            for job in todo:
                pool.submit(lambda actor, j: actor.tune.remote(j), job)
            while pool.has_next():
                save(*pool.get_next_unordered())  # each prompt is saved as soon as it is done

    return train


def trainer(tune: TuneConfig, name_or_path: str, model=None, tokenizer=None) -> Trainer:
    """The ``Trainer`` ``tune.parallel`` asks for (see the module docstring); ``model``/``tokenizer``
    are the backbone already loaded in process, if any."""
    local = in_process(name_or_path, tune.settings(), model, tokenizer)
    if tune.parallel == "off":
        return local
    pool = ray_pool(name_or_path, tune.settings(), tune.num_cpus)
    if tune.parallel == "ray":
        return pool

    def auto(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        (pool if ray_available() and len(todo) > 1 else local)(todo, save)

    return auto
