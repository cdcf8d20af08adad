"""The production server's command line: `uvicorn routerweb.asgi:application` with one worker on uvloop and
httptools, access log off.

The benchmarks and the tests that need real worker processes start routerweb with it. The Makefile's `run`
target spells the same command out in shell (it is the README's documented command); tests/test_serve.py
checks that the two agree.
"""

from __future__ import annotations

import sys

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
    ]


def server_command(*, host: str, port: int) -> list[str]:
    """The whole command line: this interpreter's `-m uvicorn` with `uvicorn_args`."""
    return [sys.executable, "-m", "uvicorn", *uvicorn_args(host=host, port=port)]
