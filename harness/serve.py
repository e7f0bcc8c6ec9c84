"""A real Triton server on this machine: the ``tritonserver`` binary of the ``nvidia-pytriton`` wheel.

That build carries the python backend only, so it serves the *twin* repository (same model names
and tensors, a ``model.py`` running the ONNX graph with onnxruntime; see ``export/repository.py``).
``TritonServer`` is the one lifecycle the CLI (``rospr serve``) and the tests use::

    with TritonServer("model_repo_build") as server:
        client = ...(server.grpc_url)

What it takes care of (facts of DESIGN.md section 5): the python backend stub for this interpreter's
version is put next to the backend in a temporary backend directory; the stub finds ``libpython``
through ``LD_LIBRARY_PATH`` starting with the interpreter's ``LIBDIR``; the interpreter's ``bin`` is
first on ``PATH``; the server listens on 127.0.0.1 (ports picked free unless given); ``start`` waits
for readiness and, when the server dies or never gets ready, raises ``ServerError`` with the reason
and the end of the server log; ``stop`` asks the server to exit (SIGTERM: it unloads the models and
its stubs exit), kills the whole process group if it does not, and removes the temporary folder.

Owning what it reports (issue 10): ``start`` refuses ports already in use (``ServerError`` naming
the port) before it launches anything; the server is started with a unique ``--id`` and is
reported ready only when ``GET /v2`` on its port answers with that id while its process is alive,
so another server on the same port is never taken for it. The server's life is tied to its
parent's: on Linux the child asks for ``SIGTERM`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``
in ``preexec_fn``), so a ``rospr serve`` killed with ``SIGKILL`` leaves no server behind. As a second
line, every started server is recorded in a pid file (``$ROSPR_SERVE_STATE`` or
``<tmp>/rospr-serve-<uid>/``); the next ``start`` reaps a recorded server whose parent is gone and
whose command line still carries its id (never anything else).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import json
import urllib.error
import urllib.request
import uuid
import weakref
from pathlib import Path

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
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


def _die_with_parent(parent: int):
    """A ``preexec_fn``: the child gets SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``; strictly,
    when the thread that started it ends: start servers from a thread that outlives them)."""

    def preexec() -> None:
        import ctypes

        PR_SET_PDEATHSIG = 1
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def state_dir() -> Path:
    """Where started servers are recorded: ``$ROSPR_SERVE_STATE`` or ``<tmp>/rospr-serve-<uid>``."""
    return Path(os.environ.get("ROSPR_SERVE_STATE") or Path(tempfile.gettempdir()) / f"rospr-serve-{os.getuid()}")


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def reap_stale_servers(directory: Path | None = None) -> list[int]:
    """End the servers a dead ``rospr serve`` (or a dead test) left behind; returns their pids.

    A pid file is reaped when its recorded parent is no longer alive; the process is ended (its
    group, SIGTERM then SIGKILL) only if its command line still carries the recorded ``--id``, so a
    reused pid is never touched. Files of live parents are left alone; unreadable files are removed.
    """
    directory = directory or state_dir()
    if not directory.is_dir():
        return []
    reaped = []
    for f in directory.glob("*.json"):
        try:
            info = json.loads(f.read_text())
            pid, parent, server_id = int(info["pid"]), int(info["parent"]), str(info["id"])
        except (OSError, ValueError, KeyError, TypeError):
            f.unlink(missing_ok=True)
            continue
        if _is_process_alive(parent):
            continue
        if f"--id={server_id}" in _cmdline(pid):
            log.warning("ending tritonserver %d (%s) left by a process that is gone", pid, server_id)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + 10
                while _process_group_members(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not _process_group_members(pid):
                    break
            reaped.append(pid)
        f.unlink(missing_ok=True)
    return reaped


WORKDIR_PREFIX = "rospr-triton-"
OWNER_FILE = "owner.json"  # in each work folder: the pid (and start time) of the process that made it


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux /proc), None when it is gone:
    with the pid it names one process, whatever reuses the pid later."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _owner_alive(info: dict) -> bool:
    pid = int(info["pid"])
    started = _start_time(pid)
    if started is None:
        return _is_process_alive(pid)  # no /proc (not Linux): the pid alone
    return str(info.get("start")) == started


def sweep_stale_workdirs(root: Path | None = None) -> list[Path]:
    """Remove the temporary work folders (``<tmp>/rospr-triton-*``) of servers whose ``rospr``
    process is gone (SIGKILLed, crashed: nothing of theirs ran at exit); returns them. A folder is
    swept only when it is ours (this user's, not a link) and its ``owner.json`` names a dead
    process; a folder without one (another version's, or one being created) is left alone."""
    root = Path(root or tempfile.gettempdir())
    swept = []
    for folder in sorted(root.glob(WORKDIR_PREFIX + "*")):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
            info = json.loads((folder / OWNER_FILE).read_text())
            if _owner_alive(info):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        log.info("removing %s, left by rospr process %s that is gone", folder, info.get("pid"))
        shutil.rmtree(folder, ignore_errors=True)
        swept.append(folder)
    return swept


def tritonserver_dist() -> Path:
    """The ``tritonserver`` folder of the installed ``nvidia-pytriton`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("the nvidia-pytriton wheel is not installed (pip install nvidia-pytriton); "
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


def _is_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields after the name: state, ppid, pgrp, ...; zombies are gone as far as we care
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class TritonServer:
    """A ``tritonserver`` process serving a (twin) model repository on loopback.

    ``repo`` is a build folder (``model_repo_build``, its ``twin/`` is served) or a repository.
    Ports default to free ones; ``startup_timeout_s`` bounds the wait for readiness.
    """

    def __init__(self, repo: str | Path, host: str = "127.0.0.1", http_port: int | None = None,
                 grpc_port: int | None = None, startup_timeout_s: float = 120.0, log_verbose: int = 0,
                 log_path: str | Path | None = None) -> None:
        from rospr_export.repository import twin_repository

        self.repo = twin_repository(repo).resolve()
        self.host = host
        self.http_port = http_port or free_port(host)
        self.grpc_port = grpc_port or free_port(host, avoid=(self.http_port,))
        self.startup_timeout_s = startup_timeout_s
        self.log_verbose = log_verbose
        self._log_path = Path(log_path) if log_path else None
        self.workdir: Path | None = None
        self.process: subprocess.Popen | None = None
        self._finalizer = None
        self._dist: Path | None = None
        self.server_id = f"rospr-{uuid.uuid4().hex[:12]}"
        self.pid_file: Path | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

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

    def _prepare_backends(self, dist: Path) -> Path:
        """A backend directory holding the python backend and the stub built for this Python."""
        backends = self.workdir / "backends" / "python"
        backends.mkdir(parents=True)
        for f in (dist / "backends" / "python").iterdir():
            if f.is_file():
                os.symlink(f, backends / f.name)
        shutil.copy2(_stub_for_this_python(dist), backends / "triton_python_backend_stub")
        return backends.parent

    def command(self, dist: Path, backends: Path) -> list[str]:
        return [
            str(dist / "bin" / "tritonserver"),
            f"--id={self.server_id}",  # what _wait_ready checks: the server answering is this one
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--http-port={self.http_port}",
            f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false", "--allow-gpu-metrics=false",
            "--exit-on-error=true", "--strict-readiness=true",
            "--disable-auto-complete-config",
            f"--log-verbose={self.log_verbose}",
            # the stub's shared memory: start small, grow in steps large enough for a T0 batch
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=16777216",
        ]

    def start(self) -> "TritonServer":
        """Start the server and wait until it is ready. Raises ``ServerError`` when it cannot."""
        if self.process is not None:
            raise ServerError("this server is already started")
        dist = self._dist = tritonserver_dist()
        reap_stale_servers()
        sweep_stale_workdirs()
        for kind, port in (("http", self.http_port), ("grpc", self.grpc_port)):
            if port_in_use(self.host, port):
                flag = "--http-port" if kind == "http" else "--grpc-port"
                raise ServerError(f"port {port} ({kind}) on {self.host} is already in use (another server?); "
                                  f"stop that server, or choose another {flag} (0: a free one)")
        shm_before = frozenset(_stub_regions())
        self.workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX))
        try:
            (self.workdir / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))
            backends = self._prepare_backends(dist)
            log_file = open(self.log_file, "wb")
            try:
                self.process = subprocess.Popen(
                    self.command(dist, backends), stdout=log_file, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=self._environment(), cwd=self.workdir,
                    start_new_session=True,  # its own process group: stop() can end it and its stubs
                    preexec_fn=_die_with_parent(os.getpid()) if sys.platform.startswith("linux") else None,
                )
            finally:
                log_file.close()
            self.pid_file = self._record()
            self._finalizer = weakref.finalize(self, _cleanup, self.process, self.workdir, shm_before, self.pid_file)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("Triton server ready: grpc %s, http %s, repository %s", self.grpc_url, self.http_url, self.repo)
        return self

    def _record(self) -> Path | None:
        """Write this server's pid file (see ``reap_stale_servers``); a failure only loses that safety net."""
        info = {"pid": self.process.pid, "parent": os.getpid(), "id": self.server_id, "repo": str(self.repo),
                "http_port": self.http_port, "grpc_port": self.grpc_port}
        try:
            directory = state_dir()
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = directory / f"{self.server_id}.json"
            path.write_text(json.dumps(info))
            return path
        except OSError as exc:
            log.warning("cannot record the server in %s (%s): a stale server will not be reaped", state_dir(), exc)
            return None

    def _answers_as_itself(self) -> bool:
        """Whether the server on ``http_port`` is this one (``GET /v2`` names this server's ``--id``)."""
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2", timeout=1.0) as r:
                return json.loads(r.read().decode()).get("name") == self.server_id
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
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
            try:
                with urllib.request.urlopen(url, timeout=1.0) as r:
                    if r.status == 200:
                        if self._answers_as_itself() and self.process.poll() is None:
                            return
                        raise ServerError(self._diagnose(
                            f"another server answers on port {self.http_port} (not this one, id {self.server_id}); "
                            "stop it or choose other ports"))
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
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
            hints.append(f"a port is taken (http {self.http_port}, grpc {self.grpc_port}): pick others or let them default")
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

    def pids(self) -> list[int]:
        """The server's and its stubs' process ids (its process group)."""
        return _process_group_members(self.process.pid) if self.process else []

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the server and its stubs (SIGTERM, then SIGKILL of the group) and remove the
        temporary folder. Safe to call twice."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        elif self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self.process = None
        self.workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


SHM_DIR = Path("/dev/shm")
STUB_SHM_PREFIX = "triton_python_backend_shm_region_"


def _stub_regions() -> set[str]:
    return {p.name for p in SHM_DIR.glob(STUB_SHM_PREFIX + "*")} if SHM_DIR.is_dir() else set()


def _mapped_regions() -> set[str]:
    """Shared-memory files some live process has mapped (from /proc/*/maps)."""
    mapped = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                for line in (entry / "maps").read_text().splitlines():
                    if "/dev/shm/" + STUB_SHM_PREFIX in line:
                        mapped.add(line.rsplit("/", 1)[-1].split(" ")[0])
            except OSError:
                continue
    return mapped


def _cleanup(process: subprocess.Popen, workdir: Path, shm_before: frozenset = frozenset(),
             pid_file: Path | None = None, timeout_s: float = 30.0) -> None:
    """End ``process`` (and its process group) and remove ``workdir`` and the pid file: also run at
    interpreter exit."""
    pgid = process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver %d did not stop in %.0fs: killing its process group", pgid, timeout_s)
    # Stubs normally exit with the server; any that linger (or a server that hung) are ended by group.
    deadline = time.monotonic() + 5.0
    while _process_group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _process_group_members(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if process.poll() is None:
        process.wait(5)
    shutil.rmtree(workdir, ignore_errors=True)
    if pid_file is not None:
        pid_file.unlink(missing_ok=True)
    # A stub that was killed, or whose model failed to load, leaves its region in /dev/shm: remove
    # those that appeared while this server ran and that no live process (another server) maps.
    for name in _stub_regions() - shm_before - _mapped_regions():
        (SHM_DIR / name).unlink(missing_ok=True)
