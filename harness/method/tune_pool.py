"""Who trains the prompts a bank lacks (``rospr.tuning.Trainer``): in process, or a pool of Ray actors.

``trainer(tune, ...)`` follows ``rospr.tune.parallel``: ``off`` trains in process; ``ray`` on Ray
actors; ``auto`` on Ray actors when Ray is installed and more than one prompt is to be trained (or
GPUs are reserved per worker). Each actor holds one ``rospr.tuning.TuneWorker`` (one copy of the
backbone) and reserves ``tune.threads`` CPUs and ``tune.num_gpus_per_worker`` GPUs; a prompt is saved
as soon as its actor returns it. The numbers are the same either way (each prompt has its own seed and
thread count).

Faults, as for scoring actors: an actor that dies (the OOM killer) is restarted by Ray (``ray.max_restarts``),
which reruns the prompt it was tuning (``ray.max_task_retries``); a prompt whose actor is gone for good is
resubmitted to another (``rospr_harness.ray_faults``), and one line ends the tuning once a prompt has failed
``ray.max_batch_attempts`` times. Both are counted in the pool's summary line. A prompt's numbers do not
depend on which actor, or which attempt, trained it.

GPUs: Ray gives each actor its reserved GPUs as its only visible devices (``CUDA_VISIBLE_DEVICES``),
so an actor trains on ``cuda`` = its own GPU, and a cluster of N GPUs with one GPU per worker trains N
prompts at once. ``rospr.tune.device`` left null means ``cuda`` when GPUs are reserved, else the run's
``model.device``; a GPU device with no GPUs reserved trains in process under ``auto`` (and is refused
under ``ray``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from rospr_harness.config import RayConfig, TuneConfig
from rospr_harness.ray_faults import actor_died
from rospr_harness.ray_session import ray_available, ray_started
from rospr.errors import SettingError
from rospr.tuning import Trainer, TuneJob, TuneResult, TuneSettings, TuneWorker, in_process

log = logging.getLogger(__name__)


class PlacedTuneWorker(TuneWorker):
    """A ``TuneWorker`` that can say where Ray put it (the Ray actor class of the pool)."""

    def __init__(self, *args, **kwargs) -> None:
        # A constructor's error reaches the driver only as a dead actor's log text: keep a refusal
        # (no GPU here, no bfloat16) and raise it from placement(), where it arrives as itself.
        self.refused: ValueError | None = None
        try:
            super().__init__(*args, **kwargs)
        except ValueError as exc:
            self.refused = exc

    def placement(self) -> dict:
        """The GPUs Ray assigned this actor, what CUDA sees of them, and the device it trains on;
        raises the ``ValueError`` its construction raised, if any."""
        import ray

        if self.refused is not None:
            raise self.refused

        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid(),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": str(self.device)}

    def tune_where(self, job: TuneJob) -> tuple[str, TuneResult, int]:
        """``tune(job)`` and the pid of the process that tuned it (an actor Ray restarted has another)."""
        return (*self.tune(job), os.getpid())


def n_workers(n_jobs: int, resources: dict, threads: int, num_gpus_per_worker: float, num_cpus: int | None) -> int:
    """Actors to start: no more than the jobs, the CPU slots (``threads`` each), the GPU slots
    (``num_gpus_per_worker`` each, when reserving GPUs) and ``num_cpus`` (when given); at least one."""
    cpus = int(resources.get("CPU", 1))
    limits = [n_jobs, cpus // threads or 1, num_cpus or cpus]
    if num_gpus_per_worker > 0:
        limits.append(int(resources.get("GPU", 0) // num_gpus_per_worker))
    return max(1, min(limits))


def start_actors(name_or_path: str, settings: TuneSettings, n: int, num_gpus_per_worker: float = 0,
                 revision: str | None = None, faults: RayConfig | None = None) -> list:
    """``n`` tuning actors (``PlacedTuneWorker``), each reserving ``settings.threads`` CPUs and
    ``num_gpus_per_worker`` GPUs of the running Ray, restarted by Ray as scoring actors are (``faults``: the
    ``ray`` section's ``max_restarts`` and ``max_task_retries``; Ray reruns the prompt in flight on the restarted
    actor). Refuses (``ValueError``) GPUs the cluster does not have: the actors would wait for them for ever."""
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if num_gpus_per_worker > gpus:
        raise SettingError(f"rospr.tune.num_gpus_per_worker={num_gpus_per_worker:g} but the Ray cluster has {gpus:g} GPUs; "
                           "lower it (0: CPU actors) or join a cluster with GPUs (ray.address)")
    faults = faults or RayConfig()
    Actor = ray.remote(num_cpus=settings.threads, num_gpus=num_gpus_per_worker, max_restarts=faults.max_restarts,
                       max_task_retries=faults.max_task_retries)(PlacedTuneWorker)
    # Paths are resolved here: a Ray worker's working directory is not the driver's.
    path = str(Path(name_or_path).resolve()) if Path(name_or_path).exists() else name_or_path
    return [Actor.remote(path, settings, revision=revision) for _ in range(n)]


def train_on(actors: list, pids: list[int], todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None],
             max_attempts: int) -> tuple[int, int]:
    """Tune ``todo`` on ``actors`` (their processes ``pids``), one prompt per free actor, each saved as soon as
    it is back. As for scoring: an actor that dies is restarted by Ray, which reruns the prompt in flight there
    (seen as another pid: counted as a restart, as scoring counts them); a prompt whose actor is gone for good
    is resubmitted by us (``rospr_harness.ray_faults``: a back-off, then the next free actor, the one that died
    last; one line once it has failed ``max_attempts`` times). Returns (prompts resubmitted, restarts seen)."""
    import ray
    from ray.exceptions import RayActorError

    queue = deque((job, 0) for job in todo)  # (job, times its actor died)
    free, running, resubmitted, restarts = list(range(len(actors))), {}, 0, 0
    while queue or running:
        while queue and free:
            job, failed = queue.popleft()
            i = free.pop(0)
            running[actors[i].tune_where.remote(job)] = (job, failed, i)
        (ref,), _ = ray.wait(list(running), num_returns=1)
        job, failed, i = running.pop(ref)
        try:
            pid, result, where = ray.get(ref)
        except RayActorError as exc:
            time.sleep(actor_died(f"tuning of {job.id}", f"tuning actor {i}", failed + 1, max_attempts, exc))
            queue.appendleft((job, failed + 1))
            free.append(i)  # last: another free actor takes the prompt first
            resubmitted += 1
            continue
        if where != pids[i]:
            log.warning("tuning actor %d was restarted by Ray (pid %d, now %d) before it returned %s", i, pids[i],
                        where, job.id)
            pids[i], restarts = where, restarts + 1
        free.append(i)
        save(pid, result)
    return resubmitted, restarts


def ray_pool(name_or_path: str, settings: TuneSettings, num_cpus: int | None,
             num_gpus_per_worker: float = 0, revision: str | None = None, faults: RayConfig | None = None) -> Trainer:
    """A ``Trainer`` on Ray actors (a local loopback Ray unless one is running in this process); ``faults``:
    the run's ``ray`` section, whose ``max_restarts`` and ``max_batch_attempts`` apply to tuning actors as to
    scoring actors (default: their defaults)."""
    faults = faults or RayConfig()

    def train(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        import ray  # optional: only a Ray pool needs it

        if (settings.device or "cpu").startswith("cuda") and num_gpus_per_worker <= 0:
            raise SettingError(f"rospr.tune.device={settings.device} on Ray actors that reserve no GPU; set "
                               "rospr.tune.num_gpus_per_worker=1 (one actor per GPU) or rospr.tune.parallel=off")

        actors: list = []
        with ray_started(None, num_cpus), contextlib.ExitStack() as cleanup:
            # free their CPUs and GPUs now, not when garbage collection gets to the handles
            cleanup.callback(lambda: [ray.kill(actor) for actor in actors])
            n = n_workers(len(todo), ray.available_resources(), settings.threads, num_gpus_per_worker, num_cpus)
            actors = start_actors(name_or_path, settings, n, num_gpus_per_worker, revision, faults)
            try:
                placed = ray.get([a.placement.remote() for a in actors])
            except ValueError as exc:  # Ray's error of a refusal in an actor: the refusal's own line
                raise SettingError(str(getattr(exc, "cause", None) or exc)) from None
            for i, where in enumerate(placed):
                log.info("tuning actor %d (pid %d): GPUs %s, training on %s", i, where["pid"],
                         where["gpu_ids"] or "none", where["device"])
            log.info("tuning %d prompts on %d Ray actors", len(todo), n)
            resubmitted, restarts = train_on(actors, [p["pid"] for p in placed], todo, save, faults.max_batch_attempts)
            (log.warning if resubmitted or restarts else log.info)(
                "tuned %d prompts on %d Ray actors; %d actor restarts, %d prompts resubmitted after their actor died "
                "for good", len(todo), n, restarts, resubmitted)

    return train


def tune_settings(tune: TuneConfig, model_device: str = "cpu") -> TuneSettings:
    """``tune``'s settings with the device resolved: ``rospr.tune.device``, else ``cuda`` when GPUs
    are reserved per worker, else ``model_device`` (the run's ``model.device``)."""
    settings = tune.settings()
    if settings.device is None:
        settings = dataclasses.replace(settings, device="cuda" if tune.num_gpus_per_worker > 0 else model_device)
    if tune.num_gpus_per_worker > 0 and settings.device == "cpu":
        log.warning("rospr.tune.num_gpus_per_worker=%g reserves GPUs that rospr.tune.device=cpu leaves unused",
                    tune.num_gpus_per_worker)
    return settings


def trainer(tune: TuneConfig, name_or_path: str, model=None, tokenizer=None, model_device: str = "cpu",
            revision: str | None = None, faults: RayConfig | None = None) -> Trainer:
    """The ``Trainer`` ``tune.parallel`` asks for (see the module docstring); ``model``/``tokenizer``
    are the backbone already loaded in process, if any (used when on the tuning device and dtype),
    ``model_device`` the run's ``model.device`` (the default of ``rospr.tune.device``), ``revision``
    the hub commit a worker loads its own backbone at (``model.revision``), ``faults`` the run's ``ray``
    section (a tuning actor that dies is restarted and its prompt resubmitted, as for scoring)."""
    settings = tune_settings(tune, model_device)
    local = in_process(name_or_path, settings, model, tokenizer, revision)
    if tune.parallel == "off":
        return reporting(local, settings.steps)
    pool = ray_pool(name_or_path, settings, tune.num_cpus, tune.num_gpus_per_worker, revision, faults)
    if tune.parallel == "ray":
        return reporting(pool, settings.steps)

    # on a GPU that no actor reserves, the driver's own process trains (actors would share it unreserved)
    gpu_unreserved = (settings.device or "cpu").startswith("cuda") and tune.num_gpus_per_worker <= 0

    def auto(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        on_ray = ray_available() and not gpu_unreserved and (len(todo) > 1 or tune.num_gpus_per_worker > 0)
        (pool if on_ray else local)(todo, save)

    return reporting(auto, settings.steps)


def reporting(train: Trainer, steps: int) -> Trainer:
    """``train``, telling its progress on the log (INFO: stderr under the CLI, as a run's progress; the logging
    level decides what shows): a line before (prompts to tune, steps each) and one per prompt saved (how many of
    how many, its loss at the first and last step, the time so far and an estimate of the rest)."""

    def run(todo: Sequence[TuneJob], save: Callable[[str, TuneResult], None]) -> None:
        start, done = time.monotonic(), [0]
        log.info("tuning %d prompts, %d steps each", len(todo), steps)

        def saved(pid: str, result: TuneResult) -> None:
            save(pid, result)
            done[0] += 1
            spent = time.monotonic() - start
            log.info("tuned %d/%d %s: loss %.3f -> %.3f in %d steps (%.0f s so far, about %.0f s left)", done[0],
                     len(todo), pid, result.losses[0], result.losses[-1], len(result.losses), spent,
                     spent / done[0] * (len(todo) - done[0]))

        train(todo, saved)

    return run
