"""The runner: one evaluation run, in process or on Ray actors, resumable, with a unit cache.

``run(config, out_dir)`` is five steps, each a function in the module named for it:

1. **plan** (``plan.py``: ``plan_run``): every (task, prompt) target and the methods, resolved before
   anything is written;
2. **run directory** (``rundir.py``: ``open_run``, under ``rospr_harness.lock``): an interrupted swap
   recovered, the intact units of an interrupted run kept (``resume=True``) or a fresh run staged;
3. **executor** (``session.py``): the backend, the provenance, RoSPr's bank and library
   (``rospr_harness.method.prepare``), the unit cache and the executor (``executor.InProcessExecutor`` or
   ``ray_executor.RayExecutor``, the same workers), started with the run's Ray
   (``rospr_harness.ray_session.run_ray``) only at its first call (``session.OnDemand``): a run whose units
   are all kept or cached starts no Ray and no actor;
4. **drive** (``driver.py``: ``drive``): each target one coroutine (``run_target``) over the
   executor's awaitable calls, each unit written as soon as it is finished (``sink.py``: the run
   directory and the unit cache);
5. **report** (``rospr_harness.report``, ``rospr_harness.report_html``): report.md and report.html.

A notebook that wants one unit runs ``run`` on a config with one task and one prompt and
``ray.enabled: false`` (the in-process executor).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Sequence

from rospr_harness.backends import Backend, create_backend
from rospr_harness.config import RunConfig
from rospr_harness.lock import RunLock, RunLocked
from rospr_harness.method.prepare import prepare
from rospr_harness.report import write_report
from rospr_harness.report_html import write_html_report
from rospr_harness.schema import Execution, ResultsFile
from rospr_harness.runner.driver import DriveSettings, build_records, drive
from rospr_harness.runner.plan import RunPlan, TargetSpec, data_settings, plan_run, plan_targets, unit_slug
from rospr_harness.runner.rundir import ResumeError, RunDirError, RunDirectory, check_out, open_run
from rospr_harness.runner.session import Clock, OnDemand, Stamp, unit_cache
from rospr_harness.runner.sink import Observer, Silent
from rospr_harness.runner.stages import Stages

log = logging.getLogger(__name__)

__all__ = ["run", "Observer", "ResumeError", "RunDirError", "RunLocked", "plan_targets", "unit_slug", "data_settings",
           "build_records", "TargetSpec"]


def run(config: RunConfig, out_dir: str | Path, observer: Observer | None = None, backend: Backend | None = None,
        resume: bool = False, overrides: Sequence[str] = ()) -> ResultsFile:
    """Run every unit of ``config`` into ``out_dir`` (results.json, records/, report.md, report.html).

    ``resume``: keep the units an interrupted run in ``out_dir`` finished (their records checked
    against their sha256, their figures taken from the records) and compute only the others;
    refuses (``ResumeError``) a directory without a run and another config. ``out_dir`` must be
    absent, empty or a run of ours: anything else is refused (``RunDirError``) before anything is
    written (``rundir.check_out``). Without ``resume``, an earlier
    run in ``out_dir`` is replaced, but only once this run has written its first unit: a failure
    before that leaves it as it was (``rundir.py``). ``backend``: score with this one in process
    (default: built from the config). Returns the results. Task and config errors are raised before
    anything is written; ``RunLocked`` when another driver holds ``out_dir``. ``overrides``: the
    ``--set`` strings ``config`` was loaded with (the CLI's shortcuts as the ``--set`` they stand for),
    recorded in the provenance.
    """
    out, clock = Path(out_dir), Clock()
    stages = Stages(clock.started)
    with stages.timing("load"):  # tasks resolved, and each task's first prompt rendered, by the plan
        plan = plan_run(config)
    check_out(out, resume)  # ours to write (rospr.destination's rule), before anything is created
    with RunLock(out):
        rundir, resumed = open_run(out, config, plan.order, resume)
        try:
            final = compute(config, plan, rundir, resumed, observer or Silent(), backend, clock, stages, overrides)
        except BaseException:
            rundir.abandon()  # before its first unit: the earlier run stays as it was
            raise
        rundir.finish()
    write_report(out / "report.md", final)
    write_html_report(out / "report.html", final)
    return final


def compute(config: RunConfig, plan: RunPlan, rundir: RunDirectory, resumed: int, observer: Observer,
            backend: Backend | None, clock: Clock, stages: Stages | None = None,
            overrides: Sequence[str] = ()) -> ResultsFile:
    """Steps 3 and 4 in a locked, prepared run directory: set up what the run computes with, then
    drive the units that ``rundir`` lacks; ``stages`` (default: from ``clock``) counts where the time
    goes. Returns the final results."""
    todo = plan.todo(rundir.units)
    remaining = sum(len(v) for v in todo.values())
    if resumed:
        log.info("resuming %s: %d units kept, %d to compute", rundir.out, resumed, remaining)
    stages = stages or Stages(clock.started)
    with contextlib.ExitStack() as stack:  # the run's Ray, if the executor starts one (OnDemand)
        with stages.timing("setup"):
            backend = backend or create_backend(config)
            stamp = Stamp(config, backend, clock, overrides)
        # tune / build what is missing, before scoring
        with stages.timing("prepare"):
            ctx = prepare(config, backend, data_settings(config.data)) if remaining and plan.retrieves else None
        stamp.retriever = ctx.provenance() if ctx else None
        executor = OnDemand(config, backend, ctx, stack, stages, remaining) if remaining else None
        name = executor.name if executor else ("ray" if config.ray.enabled is True else "in_process")
        execution = Execution(executor=name, resumed=resumed)
        with stages.timing("write"):
            rundir.write(stamp(), execution)  # the config is on disk before any work: resumable
        return drive(DriveSettings(config=config, specs=plan.specs, todo=todo, rundir=rundir, backend=backend,
                                   rospr=ctx, executor=executor, cache=unit_cache(config.cache), observer=observer,
                                   stamp=stamp, execution=execution, stages=stages))
