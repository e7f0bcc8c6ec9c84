"""The runner: one evaluation run, in process or on Ray actors, resumable, with a unit cache.

``run(config, out_dir)`` plans the (task, prompt) targets, locks the run directory
(``harness.lock``), keeps the intact units of an interrupted run (``resume=True``), prepares RoSPr
(bank, library), then streams the remaining units through an executor (``executor.InProcessExecutor``
or ``ray_executor.RayExecutor``; the driver, the planning, the selection and the writing are the
same code for both) and writes results.json, report.md and report.html.

Layout: ``plan.py`` (targets), ``driver.py`` (the streaming loop, record building, cache lookups),
``executor.py`` (the executor interface, the workers, in process), ``ray_executor.py`` (Ray actors),
``rundir.py`` (the run directory: writing units, resuming).
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from harness.backends import Backend, create_backend
from harness.config import RunConfig
from harness.lock import RunLock, RunLocked
from harness.provenance import git_state, host, package_versions
from harness.results import Provenance, ResultsFile, UnitResult
from harness.runner.driver import Driver, Observer, Silent, build_records
from harness.runner.executor import InProcessExecutor, RetrievalWorker, ScoringWorker
from harness.runner.plan import TargetSpec, data_settings, plan_targets, unit_slug
from harness.runner.rundir import TRASH, ResumeError, RunDirectory

log = logging.getLogger(__name__)

__all__ = ["run", "Observer", "ResumeError", "RunLocked", "plan_targets", "unit_slug", "data_settings",
           "build_records", "TargetSpec"]


def run(config: RunConfig, out_dir: str | Path, observer: Observer | None = None, backend: Backend | None = None,
        resume: bool = False) -> ResultsFile:
    """Run every unit of ``config`` into ``out_dir`` (results.json, records/, report.md, report.html).

    ``resume``: keep the units an interrupted run in ``out_dir`` finished (their records checked
    against their sha256, their figures taken from the records) and compute only the others;
    refuses (``ResumeError``) a directory without a run and another config. Without it, an earlier
    run in ``out_dir`` is replaced, but only once this run has written its first unit: a failure
    before that leaves it as it was (``rundir.py``). ``backend``: score with this one in process
    (default: built from the config). Returns the results. Task and config errors are raised before
    anything is written; ``RunLocked`` when another driver holds ``out_dir``.
    """
    observer = observer or Silent()
    out = Path(out_dir)
    started = time.time()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    specs = plan_targets(config)
    methods = list(config.method)
    position = {(s.task_name, s.prompt): s.order for s in specs}

    def order(u: UnitResult) -> tuple:
        return (methods.index(u.method) if u.method in methods else len(methods),
                position.get((u.task, u.prompt), len(position)))

    if resume and not (out / "results.json").is_file() and not (out / TRASH).is_dir():
        raise ResumeError(f"{out}: holds no run to resume (no results.json); start one with "
                          f"rospr run CONFIG --out {out}")
    with RunLock(out):
        rundir = RunDirectory(out, config, order)
        rundir.recover()
        if resume:
            resumed = rundir.resume()
        else:
            rundir.start_fresh()
            resumed = 0
        try:
            final = _run_in(config, rundir, specs, methods, resume, resumed, observer, backend, started,
                            started_at)
        except BaseException:
            rundir.abandon()  # before its first unit: the earlier run stays as it was
            raise
        rundir.finish()
    from harness.report import write_report
    from harness.report_html import write_html_report

    write_report(out / "report.md", final)
    write_html_report(out / "report.html", final)
    return final


def _run_in(config: RunConfig, rundir: RunDirectory, specs: list[TargetSpec], methods: list[str], resume: bool,
            resumed: int, observer: Observer, backend: Backend | None, started: float,
            started_at: str) -> ResultsFile:
    """The body of a run, with the run directory locked and prepared; returns the final results."""
    out = rundir.out
    todo = {s.order: [m for m in methods if (s.task_name, s.prompt, m) not in rundir.units] for s in specs}
    remaining = sum(len(v) for v in todo.values())
    if resume:
        log.info("resuming %s: %d units kept, %d to compute", out, resumed, remaining)
    from harness.runner.ray_executor import ray_session

    with ray_session(config) as use_ray:
        backend = backend or create_backend(config)
        rev, dirty = git_state()
        versions, machine = package_versions(), host()

        def provenance() -> Provenance:
            return Provenance(git_revision=rev, git_dirty=dirty, package_versions=versions,
                              config_hash=config.content_hash(), model=backend.identity, backend=backend.name,
                              seed=config.seed, host=machine, started_at=started_at, wall_s=time.time() - started,
                              command=list(sys.argv))

        execution = {"executor": "ray" if use_ray else "in_process", "resumed": resumed, "computed": 0, "cached": 0}
        rundir.write(provenance(), execution)  # the config is on disk before any work: resumable
        ctx = None
        if remaining and any(m != "t0" for m in methods):  # tune / build what is missing, before scoring
            from harness.method import prepare

            ctx = prepare(config, backend, data_settings(config.data))
        cache = None
        if config.cache.enabled:
            from harness.cache import UnitCache, cache_root

            cache = UnitCache(cache_root(config.cache.dir))
        executor = _executor(config, backend, ctx, use_ray) if remaining else None
        observer.start(remaining)
        try:
            if executor is not None:
                in_process = executor.name == "in_process"
                in_flight = 1 if in_process else executor.max_in_flight
                max_active = 2 if in_process else (config.ray.max_active_units or 2 * in_flight)

                def on_write() -> None:
                    rundir.write(provenance(), {**execution, **driver.counts})

                driver = Driver(config, specs, todo, rundir, backend, ctx, executor, observer, cache,
                                max_in_flight=in_flight, max_active=max_active,
                                retrieval_group=config.ray.retrieval_group, on_write=on_write)
                t_driver = time.time()
                try:
                    driver.run()
                finally:  # driver_s: the streaming itself (actors started, bank and library ready)
                    execution.update(driver.counts, driver_s=round(time.time() - t_driver, 3))
        finally:
            if executor is not None:
                execution.update(executor.stats())
                executor.close()
            final = rundir.write(provenance(), execution)
    return final


def _executor(config: RunConfig, backend: Backend, ctx, use_ray: bool):
    pad = backend.tokenizer.pad_token_id or 0
    if use_ray:
        from harness.runner.ray_executor import RayExecutor

        return RayExecutor(config, pad, str(ctx.library.root) if ctx else None, ctx.library.content_hash if ctx else "")
    retrieval = RetrievalWorker(ctx.library, ctx.embedder, ctx.retriever_tokenizer) if ctx else None
    return InProcessExecutor(ScoringWorker(backend.scorer, pad), retrieval)
