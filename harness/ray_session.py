"""The one way this project starts Ray: a local Ray on loopback only, or the cluster the user names.

``ray_started(address, num_cpus)`` is used by a run (``run_ray``: the runner's executor), by prompt
tuning's actor pool (``harness/method/tune_pool.py``), the tests and the scaling benchmark. A local
Ray (no ``address``) starts with least privilege:

- **Loopback only.** Every Ray server (GCS, raylet and its object manager, each worker's core-worker
  gRPC server, the dashboard agent, the runtime-env agent, the autoscaler monitor's metrics port)
  binds to the *node IP*. Ray 2.x resolves a node IP of ``127.0.0.1`` to the host's routable address
  (``ray._private.services.resolve_ip_for_localhost``) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``
  is false, which Ray reads once at import into ``ray_constants.ENABLE_RAY_CLUSTER``. So the
  variable is set for the processes Ray starts and that constant is switched off, both for the
  duration of ``ray.init`` only (a later ``ray.init(address=...)`` of the same process joins clusters as
  usual). Seen on Ray 2.60: without it, GCS, raylet and workers listen on ``::``, the dashboard
  agent and runtime-env agent on the host address; with it, all of them on 127.0.0.1
  (``tests/e2e/test_ray_session_loopback.py`` lists the sockets).
- **No dashboard** (``include_dashboard=False``; Ray still runs its minimal head process, on loopback).
- **No usage statistics** (``RAY_USAGE_STATS_ENABLED=0``, read by Ray when it starts and inherited
  by its processes).

With ``address`` (``auto``, ``host:port``, ``ray://...``) the cluster is the user's: nothing of the
above is imposed on it. The session is shut down on exit only if this call started it.

A run's cluster (``cluster_address``): ``ray.address`` when set; else the cluster Ray's own variable
``RAY_ADDRESS`` names; else, inside a Ray job (``ray job submit``, which sets ``RAY_JOB_ID``), the
job's cluster (``auto``); a local Ray only when none of these is set. Joining says so in one line.
Actor output reaches the driver (and so ``ray job logs``) when ``ray.log_to_driver`` is true; null,
the default, means on when joining a cluster and off for a local Ray.

Token authentication (Ray 2.60) is Ray's alone; nothing here sets, reads or logs a token. A local Ray
gets it by Ray's own default (``ray.init`` starting a cluster with ``RAY_AUTH_MODE`` unset turns it on,
generating ``~/.ray/auth_token`` when no token is there, and leaves ``RAY_AUTH_MODE=token`` in this
process's environment); joining a ``host:port`` address sends the token only with ``RAY_AUTH_MODE=token``
in the environment, which a Ray job's driver inherits from its cluster (docs/scale.md, "Token authentication";
``tests/e2e/test_ray_job.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator

from rospr_harness.config import RayConfig
from rospr.errors import SettingError, StateError

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# The environment of a local Ray's processes (they inherit the driver's environment).
LOCAL_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


# A cluster GCS completes its handshake in milliseconds; this bounds the wait for one that never does.
RAY_CONNECT_TIMEOUT_S = 10.0
AUTO_MIN_CPUS = 8  # ray.enabled=auto: a local Ray pays for its start (~10 s) only with this many cores
AUTO_MIN_UNITS = 16  # ... and this many units to compute


def gpu_count() -> int:
    """The NVIDIA GPUs this machine's driver lists (``/proc/driver/nvidia/gpus``; no CUDA import)."""
    try:
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        return 0


def ray_choice(rc: RayConfig, units: int, cpus: int | None = None, gpus: int | None = None) -> tuple[bool, str]:
    """Whether a run of ``units`` units to compute uses Ray, and why (one line for the log).

    ``ray.enabled`` true or false decides. ``auto``: Ray when a cluster is named (``ray.address``,
    ``$RAY_ADDRESS``, inside a Ray job), when GPUs are reserved per scorer or more than one is present
    (one actor per GPU), or when there are at least ``AUTO_MIN_UNITS`` units on at least
    ``AUTO_MIN_CPUS`` cores; else in process (measured on 2 cores: a local Ray is slower than in process
    even with work to do). The numbers are the same either way."""
    if rc.enabled == "auto":
        address, why = cluster_address(rc.address)
        cpus = (os.cpu_count() or 1) if cpus is None else cpus
        gpus = gpu_count() if gpus is None else gpus
        if address:
            return True, f"ray.enabled=auto: Ray, a cluster is named ({why})"
        if rc.num_gpus_per_scorer > 0 or gpus > 1:
            return True, f"ray.enabled=auto: Ray, {gpus} GPU(s) (ray.num_gpus_per_scorer={rc.num_gpus_per_scorer})"
        if units >= AUTO_MIN_UNITS and cpus >= AUTO_MIN_CPUS:
            return True, f"ray.enabled=auto: Ray, {units} units to compute on {cpus} cores"
        return False, (f"ray.enabled=auto: in process ({units} units to compute on {cpus} cores, no cluster named, "
                       f"{gpus} GPU(s); Ray pays for its start from {AUTO_MIN_UNITS} units on {AUTO_MIN_CPUS} cores)")
    return bool(rc.enabled), f"ray.enabled={str(rc.enabled).lower()}"


def cluster_address(address: str | None) -> tuple[str | None, str]:
    """The cluster a run joins and why: ``address`` (``ray.address``) when given, else
    ``$RAY_ADDRESS``, else ``auto`` inside a Ray job (``$RAY_JOB_ID``), else None (a local Ray)."""
    if address:
        return address, "ray.address"
    if os.environ.get("RAY_ADDRESS", "").strip():
        return os.environ["RAY_ADDRESS"].strip(), "RAY_ADDRESS"
    if os.environ.get("RAY_JOB_ID", "").strip():
        return "auto", f"inside Ray job {os.environ['RAY_JOB_ID'].strip()} (RAY_JOB_ID)"
    return None, "a local Ray"


def local_init_kwargs(num_cpus: int | None = None, object_store_memory: int | None = None,
                      num_gpus: float | None = None, log_to_driver: bool = False) -> dict[str, Any]:
    """The ``ray.init`` keyword arguments of a local, loopback-only Ray without the dashboard
    (``num_gpus`` None: the GPUs Ray detects; a number declares that many, logical ones included)."""
    kwargs: dict[str, Any] = dict(
        # "local": always a new Ray of our own; plain ray.init() would join any cluster already running on
        # this machine (RAY_ADDRESS, or /tmp/ray's current cluster), someone else's included
        address="local",
        _node_ip_address=LOOPBACK,
        include_dashboard=False,
        dashboard_host=LOOPBACK,
        log_to_driver=log_to_driver,
        configure_logging=False,
        num_cpus=num_cpus or os.cpu_count(),
    )
    if object_store_memory:
        kwargs["object_store_memory"] = object_store_memory
    if num_gpus is not None:
        kwargs["num_gpus"] = num_gpus
    return kwargs


def _init_local(**kwargs: Any) -> None:
    import ray
    from ray._private import ray_constants

    # Ray's processes are all started inside ray.init (the raylet starts the workers later, with the
    # environment it got): the cluster flag is needed only for its duration, then restored, so that
    # a later `ray start --address` from this process is not refused. Usage stats stay off.
    saved = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    os.environ.update(LOCAL_RAY_ENV)
    cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # keep 127.0.0.1 as the node IP (see the module docstring)
    try:
        ray.init(**kwargs)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_flag
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # a Ray that resolves the node IP elsewhere: do not run exposed
        ray.shutdown()
        raise StateError(f"local Ray came up on {node_ip}, not {LOOPBACK}; this Ray version binds the node IP "
                         "differently: start a cluster yourself and give its address (ray.address)")


def _split_address(address: str) -> tuple[str, str] | None:
    """``(host, port)`` of a plain ``host:port`` address; None for ``auto`` and ``ray://`` ones."""
    if "://" in address or address == "auto" or ":" not in address:
        return None
    host, _, port = address.rpartition(":")
    return host, port


def _check_reachable(address: str, timeout_s: float, source: str = "ray.address") -> None:
    """Refuse within ``timeout_s`` a cluster address that is not a Ray cluster, where ``ray.init`` would
    retry for minutes or wait for ever: nothing listens at ``host:port``, or something listens that does
    not complete the gRPC handshake of Ray's GCS (a silent port, another service, or the address a stale
    ``ray start`` left for ``auto``). ``auto`` is resolved as Ray resolves it; ``ray://`` addresses are
    left to Ray. The host is tried exactly as written (never swapped for the routable address)."""
    import socket

    parts = _auto_address(source) if address == "auto" else _split_address(address)
    if parts is None:
        return
    host, port = parts
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except ValueError:
        raise SettingError(f"{source}={address!r}: the port is not a number; give host:port, auto or "
                           "ray://host:10001") from None
    except OSError as exc:
        fix = ("start one (ray start --head) or fix ray.address (or leave it null for a local Ray)"
               if source == "ray.address" else f"start one (ray start --head), or fix or unset {source}")
        raise StateError(f"{source}={address!r}: no Ray cluster answers at {host}:{port} ({exc.strerror or exc}); "
                         f"{fix}") from None
    _check_gcs(address, f"{host}:{port}", timeout_s, source)


def _auto_address(source: str) -> tuple[str, str] | None:
    """``(host, port)`` of the cluster ``auto`` means (``$RAY_ADDRESS``, else the address the last ``ray
    start`` recorded, else a running GCS), as Ray finds it. Refuses (``StateError``) when there is none."""
    from ray._private.services import get_ray_address_from_environment

    try:  # as written: not ray.init's swap of 127.0.0.1 for the routable address
        resolved = get_ray_address_from_environment("auto", None)
    except (ConnectionError, ValueError) as exc:
        raise StateError(f"{source}='auto': no running Ray cluster found on this machine ({exc}); start one "
                         "(ray start --head) or give its host:port") from None
    return _split_address(resolved) if resolved else None


def _check_gcs(address: str, endpoint: str, timeout_s: float, source: str) -> None:
    """Refuse (``StateError``) ``endpoint`` when it does not complete a gRPC handshake (as Ray's GCS
    does at once) within ``timeout_s``: a port that accepts and stays silent, or that speaks another
    protocol, would keep ``ray.init`` waiting."""
    import grpc

    channel = grpc.insecure_channel(endpoint)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise StateError(f"{source}={address!r}: {endpoint} accepts connections but did not answer as a Ray "
                         f"cluster within {timeout_s:g} s (no gRPC handshake: another service, or an address "
                         "a stopped cluster left behind); give the address `ray start --head` printed, or "
                         "start the cluster again") from None
    finally:
        channel.close()


def _join_kwargs(address: str, log_to_driver: bool = True) -> dict[str, Any]:
    """``ray.init`` arguments to join ``address``. A cluster on a loopback address other than
    127.0.0.1 (e.g. nodes started with ``--node-ip-address=127.0.0.2``, which Ray keeps as written,
    while it swaps 127.0.0.1 for the routable address) is joined from that address too, so the
    driver's traffic stays on loopback."""
    import ipaddress

    kwargs: dict[str, Any] = dict(address=address, include_dashboard=False, log_to_driver=log_to_driver,
                                  configure_logging=False)
    parts = _split_address(address)
    if parts is not None:
        try:
            ip = ipaddress.ip_address(parts[0])
        except ValueError:
            return kwargs
        if ip.is_loopback and str(ip) != LOOPBACK:
            kwargs["_node_ip_address"] = str(ip)
    return kwargs


@contextlib.contextmanager
def ray_started(address: str | None = None, num_cpus: int | None = None,
                object_store_memory: int | None = None, num_gpus: float | None = None,
                log_to_driver: bool | None = None, source: str = "ray.address") -> Iterator[bool]:
    """Make sure Ray is initialised for the ``with`` block; yields whether this call started it.

    Takes the cluster ``address`` (None: a local Ray, see the module docstring; ``num_cpus`` and
    ``object_store_memory`` and ``num_gpus`` apply to a local Ray only). A Ray already initialised in this process
    is used as it is and left running. ``log_to_driver``: actor output to this process (None: on
    when joining, off for a local Ray). Refuses (``RuntimeError``) a local Ray whose node IP is not
    loopback, and a ``host:port`` address where nothing listens.
    """
    import ray

    started = False
    if address:  # a named cluster that does not answer is refused even when this process has a Ray
        _check_reachable(address, RAY_CONNECT_TIMEOUT_S, source=source)
    if not ray.is_initialized():
        if address:
            log.info("joining Ray at %s", address)
            ray.init(**_join_kwargs(address, True if log_to_driver is None else log_to_driver))
        else:
            log.info("starting a local Ray on %s (%s CPUs)", LOOPBACK, num_cpus or os.cpu_count())
            _init_local(**local_init_kwargs(num_cpus, object_store_memory, num_gpus, bool(log_to_driver)))
        started = True
    try:
        yield started
    finally:
        if started:
            ray.shutdown()


def ray_available() -> bool:
    """Whether Ray can be imported here."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def run_ray(rc: RayConfig) -> Iterator[bool]:
    """A run's Ray, from its ``ray`` section, for a run that chose Ray (``ray_choice``): yields whether
    it uses Ray (Ray importable; else a warning and False). Started or joined by ``ray_started``."""
    if rc.enabled is False:
        yield False
        return
    if not ray_available():
        log.warning("ray.enabled=%s but Ray is not installed: running in one process", rc.enabled)
        yield False
        return
    address, why = cluster_address(rc.address)
    if address and not rc.address:
        log.warning("joining the Ray cluster at %s (%s; set ray.address to choose another)", address, why)
    with ray_started(address, rc.num_cpus, rc.object_store_memory, log_to_driver=rc.log_to_driver,
                     source=why if why == "RAY_ADDRESS" else "ray.address"):
        yield True
