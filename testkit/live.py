"""Run an ASGI app on a free loopback port in a daemon thread, for tests that need a real socket."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0


class LiveServer:
    """A running uvicorn server; ``url`` is ``http://host:port`` (no trailing slash)."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int) -> None:
        self.server = server
        self.thread = thread
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        """Ask the server to exit and join its thread (5 s at most, in-flight requests are cut)."""
        self.server.should_exit = True
        deadline = time.monotonic() + _STOP_TIMEOUT
        self.thread.join(timeout=_STOP_TIMEOUT - 1.0)
        if self.thread.is_alive():
            # Requests that never finish (e.g. a fake upstream "hang") would block graceful shutdown.
            self.server.force_exit = True
            self.thread.join(timeout=max(0.0, deadline - time.monotonic()))


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port nothing listens on right now (also handy to provoke "connection refused")."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redis_delete_prefix(url: str, prefix: str) -> int:
    """Delete the Redis keys under `prefix` (never FLUSHDB: Redis may be shared); returns how many."""
    import redis

    with redis.Redis.from_url(url) as client:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)


def serve_asgi(app: Any, *, host: str = "127.0.0.1") -> LiveServer:
    """Start ``app`` under uvicorn (uvloop + httptools, lifespan on) and return once it accepts requests.

    The listening socket is bound here, before the thread starts, so there is no free-port race.
    Raises ``RuntimeError`` if the server does not start within 10 s.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"asgi-{port}")
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"ASGI server on {host}:{port} failed to start")
        time.sleep(0.005)
    return LiveServer(server, thread, host, port)
