"""A real Triton server on this machine: the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

That build carries the python backend only, so it serves the *twin* repository (same model names
and tensors, a ``model.py`` running the ONNX graph with onnxruntime; see ``export/repository.py``).
``TritonServer`` is the one lifecycle the CLI (``rospr serve``) and the tests use::

    with TritonServer("model_repo_build") as server:
        client = ...(server.grpc_url)

What it takes care of (facts seen on these machines): the python backend stub for this interpreter's
version is put next to the backend in a temporary backend directory; the stub finds ``libpython``
through ``LD_LIBRARY_PATH`` starting with the interpreter's ``LIBDIR``; the interpreter's ``bin`` is
first on ``PATH``; the server listens on 127.0.0.1 (ports picked free unless given); ``start`` waits
for readiness and, when the server dies or never gets ready, raises ``ServerError`` with the reason
and the end of the server log; ``stop`` asks the server to exit (SIGTERM: it unloads the models and
its stubs exit), kills the whole process group if it does not, and removes the temporary folder.

Owning what it reports (issue 10): ``start`` refuses ports already in use (``ServerError`` naming
the port) before it launches anything; the server is started with a unique ``--id`` and is
reported ready only when ``GET /v2`` on its port answers with that id while its process is alive,
so another server on the same port is never taken for it.

Profilers (issue 21): Triton's Prometheus metrics endpoint (``GET /metrics``), which ``perf_analyzer
--collect-metrics``, model_analyzer and Prometheus read, is on by default, on its own port
(``metrics_port``, a free one unless given) bound to the same host as the other two; CPU metrics
on, GPU metrics off (this build serves on the CPU; the NGC image reports them). ``metrics=False``
turns it off.

The server is a ``rospr_harness.procs.ManagedProcess``: its life is tied to its parent's (a parent-death
signal on Linux, so a ``rospr serve`` killed with ``SIGKILL`` leaves no server behind), it is recorded
in a pid file (``state_dir()``: never a folder of a fixed name in the shared ``/tmp``, and used only as
this user's own folder with mode 0700) and the next ``start`` reaps a recorded server whose parent is
gone, whose start time is the one recorded at launch and whose command line still carries its ``--id``
(never anything else), and sweeps the work folders and stub shared memory that dead servers left.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

from rospr_harness.procs import ManagedProcess, cmdline, make_workdir, reap_stale, running, start_time, sweep_workdirs
# also importable from here, as before the helper was apart (tests use them)
from rospr_harness.procs import OWNER_FILE, group_members as _process_group_members, start_time as _start_time  # noqa: F401
from rospr.cachedirs import cache_home
from rospr.errors import RosprError

log = logging.getLogger(__name__)


class ServerError(RosprError, RuntimeError):
    """The Triton server cannot start or died; the message says why and shows its log's end."""


def free_port(host: str = "127.0.0.1", avoid: tuple[int, ...] = ()) -> int:
    """A TCP port that is free now (the kernel's pick; another process could still take it)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in avoid:
            return port


def port_in_use(host: str, port: int) -> bool:
    """Whether a TCP ``port`` on ``host`` is taken (bound by someone, listening or not)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free for a server
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def state_dir() -> Path:
    """Where started servers are recorded: ``$ROSPR_SERVE_STATE``, else ``$XDG_RUNTIME_DIR/rospr-serve``
    (the user's own runtime folder), else ``serve`` under rospr's cache root. Whichever it is, it is
    used only as this user's own folder with mode 0700 (``procs.private_dir``)."""
    if os.environ.get("ROSPR_SERVE_STATE"):
        return Path(os.environ["ROSPR_SERVE_STATE"]).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "rospr-serve" if runtime else cache_home() / "serve"


def reap_stale_servers(directory: Path | None = None) -> list[int]:
    """End the servers a dead ``rospr serve`` (or a dead test) left behind; returns their pids
    (``rospr_harness.procs.reap_stale``: only a process whose command line still carries the recorded
    ``--id``; files of live parents are left alone, unreadable ones removed)."""
    return reap_stale(directory or state_dir(), tag_of=lambda info: info.get("tag") or f"--id={info['id']}")


STUB_PROGRAM = "triton_python_backend_stub"  # one per model instance, started by tritonserver


def stub_processes(pids: list[int]) -> dict[int, tuple[str | None, str]]:
    """The python backend stubs among ``pids``: pid -> (start time, model); the model is the folder
    above the version of the ``model.py`` the stub was given (``<repo>/<model>/<version>/model.py``)."""
    stubs = {}
    for pid in pids:
        args = cmdline(pid)
        if args and Path(args[0]).name == STUB_PROGRAM:
            script = next((Path(a) for a in args[1:] if a.endswith("model.py")), None)
            stubs[pid] = (start_time(pid), script.parent.parent.name if script else "a model")
    return stubs


def dead_stubs(stubs: dict[int, tuple[str | None, str]]) -> list[str]:
    """``model (pid N)`` for each of ``stubs`` that no longer runs as itself (gone, or dead and not yet
    collected by its server)."""
    return [f"{model} (pid {pid})" for pid, (started, model) in stubs.items() if not running(pid, started)]


POLL_TIMEOUT_S = 2.0  # one readiness question, answered at once by a live server
POLL_MAX_BYTES = 1 << 16  # its answer: a few hundred bytes of JSON


def _poll(url: str) -> bytes | None:
    """The body of a 200 answer to ``GET url``, read by the one bounded reader (``read_url``: at most
    ``POLL_TIMEOUT_S`` in all and ``POLL_MAX_BYTES``, however the port answers); None for anything else."""
    import http.client

    from rospr_harness.tasks.base import TaskError
    from rospr_harness.tasks.fetch import read_url

    try:
        return read_url(url, POLL_TIMEOUT_S, POLL_MAX_BYTES, say_wait=False)
    except (OSError, TaskError, http.client.HTTPException):
        return None


WORKDIR_PREFIX = "rospr-triton-"
STUB_SHM_PREFIX = "triton_python_backend_shm_region_"  # in /dev/shm: a killed stub leaves its region


def sweep_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the temporary work folders (``<tmp>/rospr-triton-*``) of servers whose ``rospr``
    process is gone (``rospr_harness.procs.sweep_workdirs``); returns them."""
    return sweep_workdirs(WORKDIR_PREFIX, root)


def tritonserver_dist() -> Path:
    """The ``tritonserver`` folder of the installed ``nvidia-pytriton`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("rospr serve needs the tritonserver of the nvidia-pytriton wheel, which is not installed: "
                          "install the `serve` extra (pip install -e '.[serve]' in the clone; it pins numpy < 2), "
                          "or serve model_repo_build/triton with the NGC image (docker/)")
    dist = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    if not (dist / "bin" / "tritonserver").is_file():
        raise ServerError(f"{dist}: no bin/tritonserver in the nvidia-pytriton wheel")
    return dist


def _stub_for_this_python(dist: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted(p.name for p in (dist / "python_backend_stubs").iterdir())
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version} (it has {have}); "
                          "use one of those interpreters for the venv")
    return stub


class TritonServer:
    """A ``tritonserver`` process serving a (twin) model repository on loopback.

    ``repo`` is a build folder (``model_repo_build``, its ``twin/`` is served) or a repository.
    Ports default to free ones; ``startup_timeout_s`` bounds the wait for readiness.
    """

    def __init__(self, repo: str | Path, host: str = "127.0.0.1", http_port: int | None = None,
                 grpc_port: int | None = None, startup_timeout_s: float = 120.0, log_verbose: int = 0,
                 log_path: str | Path | None = None, metrics: bool = True,
                 metrics_port: int | None = None) -> None:
        from rospr_export.repository import twin_repository

        self.repo = twin_repository(repo).resolve()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host, avoid=(self.http_port,))
        self.metrics = metrics
        self.metrics_port = (metrics_port or free_port(host, avoid=(self.http_port, self.grpc_port))) if metrics else None
        self.startup_timeout_s = startup_timeout_s
        self.log_verbose = log_verbose
        self._log_path = Path(log_path) if log_path else None
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._child: ManagedProcess | None = None
        self._dist: Path | None = None
        self._stubs: dict[int, tuple[str | None, str]] = {}  # the python backend stubs seen when it was ready
        self.server_id = f"rospr-{uuid.uuid4().hex[:12]}"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str | None:
        """``host:port/metrics`` of the Prometheus endpoint (what ``perf_analyzer --metrics-url`` takes);
        None when metrics are off."""
        return f"{self.host}:{self.metrics_port}/metrics" if self.metrics else None

    def ports(self) -> dict[str, int]:
        """The ports this server listens on, by kind (``http``, ``grpc`` and, with metrics, ``metrics``)."""
        ports = {"http": self.http_port, "grpc": self.grpc_port}
        if self.metrics:
            ports["metrics"] = self.metrics_port
        return ports

    @property
    def log_file(self) -> Path | None:
        return self._log_path or (self.workdir / "tritonserver.log" if self.workdir else None)

    def log_tail(self, n: int = 40) -> str:
        f = self.log_file
        if not f or not f.exists():
            return "(no server log)"
        return "\n".join(f.read_text(errors="replace").splitlines()[-n:])

    def _environment(self) -> dict:
        env = os.environ.copy()
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        # The stub is copied out of the wheel, so its RUNPATH no longer reaches the wheel's bundled
        # libraries (nvidia_pytriton.libs): they go after the interpreter's LIBDIR.
        bundled = str(self._dist.parent.parent / "nvidia_pytriton.libs")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, bundled, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
        return env

    @staticmethod
    def _prepare_backends(dist: Path, backends: Path) -> None:
        """A backend directory ``backends`` holding the python backend and the stub built for this Python."""
        python = backends / "python"
        python.mkdir(parents=True)
        for f in (dist / "backends" / "python").iterdir():
            if f.is_file():
                os.symlink(f, python / f.name)
        shutil.copy2(_stub_for_this_python(dist), python / "triton_python_backend_stub")

    def command(self, dist: Path, backends: Path) -> list[str]:
        return [
            str(dist / "bin" / "tritonserver"),
            f"--id={self.server_id}",  # what _wait_ready checks: the server answering is this one
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            *self._metrics_flags(),
            "--exit-on-error=true", "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--log-verbose={self.log_verbose}",
            # the stub's shared memory: start small, grow in steps large enough for a T0 batch
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=16777216",
        ]

    def _metrics_flags(self) -> list[str]:
        if not self.metrics:
            return ["--allow-metrics=false"]
        return ["--allow-metrics=true", "--allow-cpu-metrics=true", "--allow-gpu-metrics=false",
                f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}"]

    def start(self) -> "TritonServer":
        """Start the server and wait until it is ready. Raises ``ServerError`` when it cannot."""
        if self.process is not None:
            raise ServerError("this server is already started")
        reap_stale_servers()
        sweep_stale_workdirs()
        for kind, port in self.ports().items():
            if port_in_use(self.host, port):
                flag = f"--{kind}-port"
                raise ServerError(f"port {port} ({kind}) on {self.host} is already in use (another server?); "
                                  f"stop that server, or choose another {flag} (0: a free one)")
        dist = self._dist = tritonserver_dist()
        self.workdir = make_workdir(WORKDIR_PREFIX)
        backends = self.workdir / "backends"
        self._child = ManagedProcess(
            self.command(dist, backends), tag=f"--id={self.server_id}", state_dir=state_dir(), name=self.server_id,
            record={"id": self.server_id, "repo": str(self.repo), "http_port": self.http_port,
                    "grpc_port": self.grpc_port, "metrics_port": self.metrics_port},
            workdir=self.workdir, shm_prefix=STUB_SHM_PREFIX)
        try:
            self._prepare_backends(dist, backends)
            self.process = self._child.start(env=self._environment(), cwd=self.workdir, log_path=self.log_file).popen
            self._wait_ready()
            self._stubs = stub_processes(self.pids())
        except BaseException:
            self.stop()
            raise
        log.info("Triton server ready: grpc %s, http %s, metrics %s, repository %s", self.grpc_url, self.http_url,
                 self.metrics_url or "off", self.repo)
        return self

    @property
    def pid_file(self) -> Path | None:
        """This server's record for ``reap_stale_servers`` (None when it could not be written)."""
        return self._child.pid_file if self._child else None

    def _answers_as_itself(self) -> bool:
        """Whether the server on ``http_port`` is this one (``GET /v2`` names this server's ``--id``)."""
        body = _poll(f"http://{self.http_url}/v2")
        try:
            return body is not None and json.loads(body.decode()).get("name") == self.server_id
        except (ValueError, AttributeError, RecursionError):  # another server's answer may be anything
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(self._diagnose(f"tritonserver exited with code {code} while starting"))
            fatal = self._fatal_in_log()
            if fatal:
                raise ServerError(self._diagnose(f"tritonserver cannot start: {fatal}"))
            if _poll(url) is not None:
                if self._answers_as_itself() and self.process.poll() is None:
                    return
                raise ServerError(self._diagnose(
                    f"another server answers on port {self.http_port} (not this one, id {self.server_id}); "
                    "stop it or choose other ports"))
            time.sleep(0.2)
        raise ServerError(self._diagnose(f"tritonserver was not ready after {self.startup_timeout_s:.0f}s"))

    _FATAL = ("error while loading shared libraries", "failed to load", "Failed to initialize",
              "Address already in use", "No module named")

    def _fatal_in_log(self) -> str | None:
        """The first line of the log saying the server cannot come up (it may otherwise wait long)."""
        f = self.log_file
        if not f or not f.exists():
            return None
        for line in f.read_text(errors="replace").splitlines():
            if any(m in line for m in self._FATAL):
                return line.strip()[:300]
        return None

    def _diagnose(self, what: str) -> str:
        tail = self.log_tail()
        hints = []
        if "Address already in use" in tail or "Socket '" in tail:
            taken = ", ".join(f"{kind} {port}" for kind, port in self.ports().items())
            hints.append(f"a port is taken ({taken}): pick others or let them default")
        if "libpython" in tail or "error while loading shared libraries" in tail:
            hints.append("the python backend stub cannot find a shared library: LD_LIBRARY_PATH must start "
                         f"with {sysconfig.get_config_var('LIBDIR')} and hold the wheel's nvidia_pytriton.libs")
        if "No module named" in tail:
            hints.append("the stub's Python lacks a module: run from the project venv (its bin first on PATH)")
        if "failed to load" in tail or "UNAVAILABLE" in tail:
            hints.append(f"a model failed to load: check {self.repo} (rebuild it with `rospr export`)")
        hint = ("\nlikely cause: " + "; ".join(hints)) if hints else ""
        return f"{what} (repository {self.repo}).{hint}\n--- server log (end) ---\n{tail}"

    def is_alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def problem(self) -> str | None:
        """Why this server can no longer serve, None while it can: tritonserver exited, or a python
        backend stub it had when it became ready died (an OOM kill in life: Triton goes on answering
        health and model-ready with 200 while every inference of that model fails)."""
        if not self.is_alive():
            return f"tritonserver exited (code {self.process.poll() if self.process else None})"
        dead = dead_stubs(self._stubs)
        if dead:
            return (f"the python backend stub of {', '.join(dead)} died (killed by the system: out of memory?); "
                    "Triton would still answer ready while every inference of that model fails, so it is "
                    "stopped: start it again (with more memory)")
        return None

    def pids(self) -> list[int]:
        """The server's and its stubs' process ids (its process group)."""
        return self._child.pids() if self._child else []

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server and its stubs: SIGTERM (it unloads its models, its stubs exit), SIGKILL to
        the group of whatever is still alive ``timeout_s`` later; removes the temporary folder, the
        pid file and the stubs' leftover shared memory. Safe to call twice."""
        if self._child is not None:
            self._child.stop(timeout_s)
        elif self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._child = None
        self.process = None
        self.workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

