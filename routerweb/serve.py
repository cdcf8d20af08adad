"""The production server's command line: `uvicorn routerweb.asgi:application` with one worker on uvloop and
httptools, access log off, and a graceful shutdown: on SIGTERM uvicorn stops accepting and waits up to
ROUTERWEB_SHUTDOWN_GRACE_S (default 30) for open connections (streams included) before it cancels them.

The benchmarks and the tests that need real worker processes start routerweb with it. The Makefile's `run`
target spells the same command out in shell (it is the README's documented command); tests/test_serve.py
checks that the two agree.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ASGI_APPLICATION = "routerweb.asgi:application"


def uvicorn_args(*, host: str, port: int) -> list[str]:
    """The arguments `uvicorn` gets: the application and the production options, serving on `host:port`."""
    return [
        ASGI_APPLICATION,
        "--host",
        host,
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--workers",
        "1",
        "--timeout-graceful-shutdown",
        shutdown_grace_s(),
    ]


def shutdown_grace_s() -> str:
    """The grace period uvicorn gets, from the environment as the settings read it (whole seconds)."""
    return str(round(float(os.environ.get("ROUTERWEB_SHUTDOWN_GRACE_S") or 30)))


def metrics_dir_reset(path: str | Path) -> None:
    """Empty the multiprocess metrics directory before a machine's workers start (values of the previous
    run's processes would be added to the new ones)."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def server_command(*, host: str, port: int) -> list[str]:
    """The whole command line: this interpreter's `-m uvicorn` with `uvicorn_args`."""
    return [sys.executable, "-m", "uvicorn", *uvicorn_args(host=host, port=port)]
