"""``rospr serve``: a real Triton server over the twin repository, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import typer

from rospr_harness.cli.common import err, setup_logging
from rospr.errors import SettingError


def serve(
    repo: Path = typer.Option(Path("model_repo_build"), "--repo", help="a `rospr export` folder or a repository"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback unless told otherwise)"),
    http_port: int = typer.Option(8000, "--http-port", help="0: a free port"),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="0: a free port"),
    metrics_port: int = typer.Option(8002, "--metrics-port",
                                     help="Prometheus metrics (GET /metrics, on --host) for perf_analyzer "
                                          "--collect-metrics, model_analyzer, Prometheus; 0: a free port"),
    metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="serve the metrics endpoint"),
    startup_timeout: float = typer.Option(120.0, "--startup-timeout", help="seconds to wait for readiness"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Triton's verbose log"),
) -> None:
    """Serve the twin repository with the tritonserver of the nvidia-pytriton wheel until Ctrl-C / SIGTERM."""
    setup_logging(verbose)
    from rospr_harness.serve import ServerError, TritonServer

    for flag, port in (("--http-port", http_port), ("--grpc-port", grpc_port), ("--metrics-port", metrics_port)):
        if not 0 <= port <= 65535:
            raise SettingError(f"{flag} {port}: give a TCP port, 1 to 65535 (0: a free one)")
    if not 0 < startup_timeout <= 3600:
        raise SettingError(f"--startup-timeout {startup_timeout}: give seconds, more than 0 and at most 3600")
    signal.signal(signal.SIGTERM, _terminate)
    server = None
    try:
        server = TritonServer(repo, host, http_port or None, grpc_port or None, startup_timeout, int(verbose),
                              metrics=metrics, metrics_port=metrics_port or None)
        server.start()
        err.print(f"Triton ready: grpc {server.grpc_url}, http {server.http_url}, metrics "
                  f"{'http://' + server.metrics_url if metrics else 'off'} (tritonserver pid "
                  f"{server.process.pid}, work dir {server.workdir}); Ctrl-C to stop", highlight=False)
        while (problem := server.problem()) is None:  # a server that cannot infer never stays up as ready
            time.sleep(0.5)
        raise ServerError(server._diagnose(problem))
    except KeyboardInterrupt:
        err.print("stopping Triton")
    finally:
        if server is not None:
            server.stop()


def _terminate(signum, frame):  # SIGTERM stops like Ctrl-C: through the finally above
    raise KeyboardInterrupt
