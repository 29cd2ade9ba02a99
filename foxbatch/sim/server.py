"""Serving the simulator over real HTTP with uvicorn: in the foreground (`foxbatch sim`), in a
background thread, or as a `foxbatch sim` subprocess.

The listening socket is always bound before the server starts, so its URL is known at once and
port 0 picks a free port; connections made before uvicorn runs wait in the socket's backlog.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from foxbatch.sim.app import Simulator
from foxbatch.sim.config import SimConfig
from foxbatch.sim.replies import ConnectionDropped

DEFAULT_HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0
BACKLOG = 2048
_URL = re.compile(r"http://\S+")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port) for uvicorn; port 0 picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket) -> str:
    """The http:// URL a bound socket answers on."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(simulator: Simulator) -> uvicorn.Server:
    """A quiet, lean uvicorn server for the simulator: warnings only, no access log, no
    proxy-header rewriting, no Server or Date header (each costs time on every request)."""
    config = uvicorn.Config(simulator.app, interface="asgi3", lifespan="off",
                            log_level="warning", access_log=False, proxy_headers=False,
                            server_header=False, date_header=False)
    # uvicorn logs an app exception as an error; a drop on purpose is not one.
    logging.getLogger("uvicorn.error").addFilter(_hide_dropped_connections)
    return uvicorn.Server(config)


def run(simulator: Simulator, sock: socket.socket) -> None:
    """Serve on `sock` until SIGINT or SIGTERM."""
    make_server(simulator).run(sockets=[sock])


@contextmanager
def serve_in_thread(target: SimConfig | Simulator | None = None, *,
                    host: str = DEFAULT_HOST) -> Iterator[str]:
    """Serve a simulator on a free port in a background thread; yield its base URL.

    Pass a `Simulator` to keep a handle on it (`stats()`, `reset()`), or a `SimConfig`.
    """
    simulator = target if isinstance(target, Simulator) else Simulator(target)
    sock = bind(host, 0)
    server = make_server(simulator)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="foxbatch-sim", daemon=True)
    thread.start()
    try:
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(STOP_TIMEOUT)
        sock.close()


@contextmanager
def serve_in_subprocess(config: SimConfig | None = None, *,
                        host: str = DEFAULT_HOST) -> Iterator[str]:
    """Run `foxbatch sim` on a free port as a child process; yield its base URL.

    Stats and reset go through GET /_sim/stats and POST /_sim/reset.
    """
    command = [sys.executable, "-m", "foxbatch", "sim", "--host", host, "--port", "0",
               *config_to_args(config or SimConfig())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        yield _wait_for_url(process)
    finally:
        _stop(process)


def config_to_args(config: SimConfig) -> list[str]:
    """The `foxbatch sim` flags that give `config`: every field, so CLI defaults play no part."""
    args: list[str] = []
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if value is None:
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        args += [f"--{item.name.replace('_', '-')}", text]
    return args


def _wait_for_url(process: subprocess.Popen[str]) -> str:
    """Read the URL `foxbatch sim` prints once it listens."""
    assert process.stdout is not None
    line = process.stdout.readline()
    match = _URL.search(line)
    if match is None:
        _stop(process)
        raise RuntimeError(f"foxbatch sim did not start (exit code {process.returncode}, "
                           f"printed {line!r})")
    return match.group(0)


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _hide_dropped_connections(record: logging.LogRecord) -> bool:
    return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))
