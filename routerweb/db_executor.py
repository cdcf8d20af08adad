"""A fixed pool of threads for the few ORM calls made from async request handling.

The hot path touches the database rarely (a registry reload, a budget reservation); those calls
run here rather than through `sync_to_async`, so that they neither queue behind one shared thread
nor hold a connection while idle: each call takes a connection (from the connection pool on
PostgreSQL) and gives it back when done. `close_connections()` closes whatever the threads still
hold, at shutdown and before a test database is dropped.
"""

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import close_old_connections, connections

T = TypeVar("T")

DB_THREADS = 8


class DbExecutor:
    def __init__(self, threads: int = DB_THREADS):
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(_with_fresh_connection, func, *args, **kwargs)
        )

    def close_connections(self, timeout_s: float = 10.0) -> None:
        """Close the database connections of every thread of the pool (each thread runs one closer)."""
        barrier = threading.Barrier(self.threads)

        def close() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=timeout_s)
            connections.close_all()

        for future in [self._pool.submit(close) for _ in range(self.threads)]:
            future.result(timeout=timeout_s + 1)


def _with_fresh_connection(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    close_old_connections()  # drops a connection broken by a database restart
    try:
        return func(*args, **kwargs)
    finally:
        close_old_connections()  # gives it back (CONN_MAX_AGE is 0; pooled on PostgreSQL)


db_executor = DbExecutor()
