"""A Ray actor that dies with work in flight (the OOM killer, a lost node): what scoring and tuning both do.

The work is resubmitted (to another actor when there is one, else to the same actor once Ray has
restarted it), after a short back-off, and counted by the caller (``execution.resubmitted`` of a run,
the tuning pool's summary line). Once one piece of work has failed ``max_attempts`` times (the
setting ``ray.max_batch_attempts``), one line ends it: ``StateError`` naming the work, the actor, Ray's
error in its first line and the fix, never Ray's multi-line traceback. Used by
``rospr_harness.runner.ray_executor`` (scoring and retrieval batches) and
``rospr_harness.method.tune_pool`` (a prompt being tuned).
"""

from __future__ import annotations

import logging

from rospr.errors import StateError

log = logging.getLogger(__name__)

FIX = "raise ray.max_restarts or ray.max_batch_attempts, or look at the actors' logs"


def actor_died(work: str, who: str, attempts: int, max_attempts: int, exc: Exception, fix: str = FIX) -> float:
    """``who`` died with ``work`` in flight (a "score batch", "tuning of glue/mrpc/x"), which has now failed
    ``attempts`` times: the seconds to wait before resubmitting it (a warning says so). Refuses
    (``StateError``, one line) once ``attempts`` reaches ``max_attempts``."""
    if attempts >= max_attempts:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise StateError(f"a {work} failed {attempts} times because {who} died ({type(exc).__name__}: {first}); "
                         f"{fix}") from None
    log.warning("%s died with a %s in flight; resubmitting it (attempt %d)", who, work, attempts + 1)
    return min(0.1 * 2 ** attempts, 2.0)
