"""The Ray executor: a retrieval actor and a pool of scoring actors.

- Scoring actors (``ray.scorers`` of them) each build their own backend from the config: an
  onnxruntime session with ``floor(num_cpus_per_scorer)`` threads (at least 1), or a Triton client
  of ``ray.triton_urls[i % n]``; ``num_gpus_per_scorer`` is passed to Ray as is. A batch goes to the
  least loaded actor; its soft prompt travels as an ``ObjectRef`` the driver put once.
- The retrieval actor holds the retriever session and the library's FAISS index (it loads the very
  library the driver prepared and refuses another); one call carries the queries of many targets.
- Calls: ``score`` and ``retrieve`` are coroutines that send the work and await its ``ObjectRef``
  (Ray's refs are awaitable); the driver awaits at most ``max_in_flight`` scoring calls at once
  (default 4 x scorers).
- Faults: actors are created with ``max_restarts`` and ``max_task_retries``: Ray restarts a dead
  actor (rerunning its constructor) and resends the calls it had in flight. A call that still fails
  with an actor error (retries spent, or the actor gone for good) is resubmitted to another actor
  inside the same coroutine, up to ``max_batch_attempts`` times (``rospr_harness.ray_faults``, as
  tuning resubmits a prompt), so the driver's one await
  resolves however many attempts it took. Results are the same whichever actor scores a
  batch, so a re-run batch changes no number. A backend error (``BackendUnavailable``: a Triton
  server gone after its client's retries) takes that server out of the run: every actor talking to
  it gets no more work, and the batch goes to an actor of another server (``ray.triton_urls``).
  Only when no server is left does the error end the run, with its own message; every unit
  finished before it stays written. (The retrieval actor talks to ``triton.url`` alone.)
- Time: every result is the worker's ``Done`` (its seconds, and those inside the scorer's session
  calls), passed back as is, so the driver sums what the actors report (``rospr_harness.runner.stages``).
- What did the work: ``stats()`` (merged into ``execution`` of results.json) counts the scoring
  batches per Ray node (``nodes``: node id -> IP and batches) and per Triton server (``servers``),
  names the servers taken out (``servers_lost``) and lists every resubmission (``retried``: batch
  kind, from which actor and server, why; the first 100), besides ``resubmitted`` and the actors'
  restarts.

The run's Ray is started or joined by ``rospr_harness.ray_session.run_ray`` (a local Ray listens on
127.0.0.1 only, without dashboard or usage statistics), and shut down afterwards only if it was
started for the run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rospr_harness.backends import BackendUnavailable
from rospr_harness.cache import cache_root
from rospr_harness.config import RunConfig
from rospr_harness.ray_faults import actor_died
from rospr_harness.runner.executor import Done, RetrievalRequest, RetrievalWorker, ScoringWorker
from rospr.errors import SettingError, StateError
from rospr.scoring import EncodedExample

log = logging.getLogger(__name__)

ACTOR_PREFIX = "rospr-scorer"


def actor_config(config: RunConfig) -> dict:
    """The config as actors get it: local paths made absolute (a worker's directory is not the driver's)."""
    tree = config.model_dump(mode="json")

    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value and Path(value).exists() else value

    tree["model"]["name_or_path"] = absolute(tree["model"]["name_or_path"])
    tree["rospr"]["retriever"] = absolute(tree["rospr"]["retriever"] or config.model.name_or_path)
    tree["onnxruntime"]["cache_dir"] = str(cache_root("onnx", config.onnxruntime.cache_dir).resolve())
    return tree


class ScoringActor(ScoringWorker):
    """A ``ScoringWorker`` that builds its backend from the config inside the actor."""

    def __init__(self, tree: dict, pad_id: int, threads: int, triton_url: str | None) -> None:
        from rospr_harness.backends import create_backend

        tree = dict(tree)
        tree["onnxruntime"] = {**tree["onnxruntime"], "threads": tree["onnxruntime"]["threads"] or threads}
        tree["scoring"] = {**tree["scoring"], "threads": tree["scoring"]["threads"] or threads}
        if triton_url:  # this actor's own server, and only it (the driver fails batches over, not the actor)
            tree["triton"] = {**tree["triton"], "url": triton_url}
            tree["ray"] = {**tree["ray"], "triton_urls": None}
        super().__init__(create_backend(RunConfig.model_validate(tree)).scorer, pad_id)

    def info(self) -> dict:
        import ray

        return {"pid": os.getpid(), "restarted": ray.get_runtime_context().was_current_actor_reconstructed}

    def score_where(self, rows, prompt) -> tuple[list[np.ndarray], dict]:
        """``score`` and where it ran (node id and IP, pid): the run records what did its work."""
        import ray

        where = {"node": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
                 "pid": os.getpid()}
        return self.score(rows, prompt), where


class RetrievalActor(RetrievalWorker):
    """A ``RetrievalWorker`` that loads the library and the retriever inside the actor."""

    def __init__(self, tree: dict, library: str, library_hash: str) -> None:
        from rospr_harness.backends import create_embedder
        from rospr_harness.method.library import retriever_checkpoint
        from rospr.library import load_library

        config = RunConfig.model_validate(tree)
        lib = load_library(library, gpu=config.rospr.index.gpu)
        if lib.content_hash != library_hash:
            raise StateError(f"{library}: changed since the run prepared it; run again")
        embedder, tokenizer = create_embedder(config, retriever_checkpoint(config))
        super().__init__(lib, embedder, tokenizer)

    def info(self) -> dict:
        return {"pid": os.getpid()}


class RayExecutor:
    """Scoring and retrieval on Ray actors (see the module docstring). Ray must be initialised."""

    name = "ray"

    def __init__(self, config: RunConfig, pad_id: int, library: str | None = None, library_hash: str = "") -> None:
        import ray

        rc = config.ray
        self.rc = rc
        cluster = ray.cluster_resources()
        total_cpus = float(cluster.get("CPU", 0))
        total_gpus = float(cluster.get("GPU", 0))
        retrieval_cpus = rc.retrieval_num_cpus if library else 0.0
        cpus = rc.num_cpus_per_scorer
        if cpus is None:  # share the cluster's CPUs (fractions are fine for Ray's scheduler)
            cpus = math.floor(100 * max(total_cpus - retrieval_cpus, 1.0) / rc.scorers) / 100
        need_cpus = cpus * rc.scorers + retrieval_cpus
        if need_cpus > total_cpus + 1e-9 or rc.num_gpus_per_scorer * rc.scorers > total_gpus + 1e-9:
            raise SettingError(
                f"ray: {rc.scorers} scorers x {cpus} CPUs (+{retrieval_cpus} retrieval) and x "
                f"{rc.num_gpus_per_scorer} GPUs need more than the cluster has ({total_cpus:g} CPUs, "
                f"{total_gpus:g} GPUs); lower ray.scorers or ray.num_cpus_per_scorer / num_gpus_per_scorer")
        threads = max(1, int(cpus))
        tree = actor_config(config)
        urls = rc.triton_urls or [None]
        self.urls = [urls[i % len(urls)] for i in range(rc.scorers)]
        self.run_id = uuid.uuid4().hex[:8]
        options = dict(max_restarts=rc.max_restarts, max_task_retries=rc.max_task_retries)
        Scorer = ray.remote(ScoringActor)
        self.scorers = [
            Scorer.options(name=f"{ACTOR_PREFIX}-{self.run_id}-{i}", num_cpus=cpus, num_gpus=rc.num_gpus_per_scorer,
                           **options).remote(tree, pad_id, threads, self.urls[i])
            for i in range(rc.scorers)
        ]
        self.retriever = None
        if library:
            self.retriever = ray.remote(RetrievalActor).options(num_cpus=retrieval_cpus, **options).remote(
                tree, str(Path(library).resolve()), library_hash)
        log.info("Ray: %d scoring actors (%.2f CPUs, %d threads, %g GPUs each)%s", rc.scorers, cpus, threads,
                 rc.num_gpus_per_scorer, ", 1 retrieval actor" if library else "")
        # Fail fast (a broken export, an unreachable server) before any work is sent.
        ray.get([a.info.remote() for a in self.scorers] + ([self.retriever.info.remote()] if self.retriever else []))
        self.max_in_flight = rc.max_in_flight or 4 * rc.scorers
        self.load = [0] * rc.scorers
        self.failures = [0] * rc.scorers
        self.resubmitted = 0
        self.down: set[int] = set()  # actors whose server is gone: no more work for them
        self.lost_servers: dict[str, str] = {}  # url -> why
        self.retried: list[dict] = []
        self.nodes: dict[str, dict] = {}  # node id -> {"ip", "batches"}
        self.server_batches: dict[str, int] = {}

    # -- calls ----------------------------------------------------------------------------------
    def put(self, values: np.ndarray | None) -> Any:
        import ray

        return None if values is None else ray.put(values)

    async def score(self, rows: Sequence[EncodedExample], prompt: Any) -> Done:
        work = {"kind": "score", "args": (list(rows), prompt), "attempts": 0, "avoid": None}
        done, where = await self._call(work)
        i = work["actor"]  # the actor that scored it, at the last attempt
        self.failures[i] = 0
        node = self.nodes.setdefault(where["node"], {"ip": where["ip"], "batches": 0})
        node["batches"] += 1
        if self.urls[i]:
            self.server_batches[self.urls[i]] = self.server_batches.get(self.urls[i], 0) + 1
        return done

    async def retrieve(self, requests: Sequence[RetrievalRequest]) -> Done:
        if self.retriever is None:
            raise RuntimeError("this run has no retrieval actor (no RoSPr method)")
        return await self._call({"kind": "retrieve", "args": (list(requests),), "attempts": 0, "avoid": None})

    async def _call(self, work: dict) -> Any:
        """Send ``work`` until an actor returns its result: resent after the actor died (``_retry``) or
        its server went away (``_fail_over``); any other error, and one of those past its limit, is
        raised."""
        from ray.exceptions import RayActorError, RayTaskError

        while True:
            try:
                return await self._attempt(work)
            except RayActorError as exc:
                await asyncio.sleep(self._retry(work, exc))
            except RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if not (isinstance(exc, BackendUnavailable) or isinstance(cause, BackendUnavailable)):
                    raise
                self._fail_over(work, BackendUnavailable(str(cause or exc)))

    async def _attempt(self, work: dict) -> Any:
        """One send of ``work`` to an actor, awaited (the actor's load counts it meanwhile)."""
        if work["kind"] == "retrieve":
            work["actor"] = None
            ref = self.retriever.retrieve.remote(*work["args"])
        else:
            # least loaded among actors whose server is up, preferring actors that have not just failed
            # and not the one that failed this batch
            live = [k for k in range(len(self.scorers)) if k not in self.down]
            i = min(live, key=lambda k: (k == work["avoid"], self.failures[k] > 0, self.load[k], k))
            work["actor"] = i
            self.load[i] += 1
            ref = self.scorers[i].score_where.remote(*work["args"])
        try:
            return await ref
        finally:
            if work["actor"] is not None:
                self.load[work["actor"]] -= 1

    def _note_retry(self, work: dict, why: str) -> None:
        i = work["actor"]
        self.resubmitted += 1
        if len(self.retried) < 100:
            self.retried.append({"kind": work["kind"], "actor": i, "server": None if i is None else self.urls[i],
                                 "attempt": work["attempts"] + 1, "reason": why[:300]})

    def _fail_over(self, work: dict, exc: BackendUnavailable) -> None:
        """A backend gone (its client's retries spent): its server taken out, so that the next attempt
        goes to an actor of another server; raises when there is none."""
        i = work["actor"]
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if i is None or self.urls[i] is None:  # the retrieval actor, or no Triton: nowhere else to go
            raise exc
        url = self.urls[i]
        self.lost_servers.setdefault(url, reason)
        self.down.update(k for k, u in enumerate(self.urls) if u == url)
        if len(self.down) == len(self.scorers):
            raise BackendUnavailable(f"every Triton server of ray.triton_urls is unavailable "
                                     f"({'; '.join(f'{u}: {r}' for u, r in self.lost_servers.items())}); "
                                     "start them again and resume the run (rospr run --resume)") from None
        work["attempts"] += 1
        work["avoid"] = i
        self._note_retry(work, f"server {url} unavailable: {reason}")
        log.warning("Triton server %s is unavailable (%s); its work goes to the other servers", url, reason)

    def _retry(self, work: dict, exc: Exception) -> float:
        """An actor died with ``work`` in flight: counted, and the seconds to wait before the next
        attempt; refuses (``RuntimeError``) once ``max_batch_attempts`` are spent."""
        i = work["actor"]
        work["attempts"] += 1
        who = "the retrieval actor" if i is None else f"scoring actor {i}"
        delay = actor_died(f"{work['kind']} batch", who, work["attempts"], self.rc.max_batch_attempts, exc)
        if i is not None:
            self.failures[i] += 1
        work["avoid"] = i
        self._note_retry(work, f"{who} died: {type(exc).__name__}")
        return delay

    def stats(self) -> dict[str, Any]:
        import ray

        restarts, gone = 0, 0
        for ref in [a.info.remote() for a in self.scorers]:
            try:
                restarts += bool(ray.get(ref, timeout=30)["restarted"])
            except Exception as exc:  # an actor gone for good: counted, not a reason to fail the run
                log.debug("actor info: %s", exc)
                gone += 1
        out = {"executor": self.name, "scorers": len(self.scorers), "resubmitted": self.resubmitted,
               "actor_restarts": restarts, "actors_lost": gone, "nodes": self.nodes, "retried": self.retried}
        if any(self.urls):
            out["servers"] = {u: self.server_batches.get(u, 0) for u in dict.fromkeys(u for u in self.urls if u)}
            out["servers_lost"] = self.lost_servers
        return out

    def close(self) -> None:
        import ray

        for actor in self.scorers + ([self.retriever] if self.retriever else []):
            try:
                ray.kill(actor)
            except Exception as exc:
                log.debug("ray.kill: %s", exc)
        self.scorers, self.retriever = [], None
