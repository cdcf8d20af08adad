"""A fixed pool of threads for the few ORM calls made from async request handling.

The hot path touches the database rarely (a registry reload, a budget reservation); those calls
run here rather than through `sync_to_async`, so that they neither queue behind one shared thread
nor connect per call: each of the pool's threads keeps its own connection (checked out of the
connection pool on PostgreSQL) for as long as it works. `close_connections()` closes them all, at
shutdown and before a test database is dropped.
"""

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connection, connections

T = TypeVar("T")

DB_THREADS = 4


class DbExecutor:
    def __init__(self, threads: int = DB_THREADS):
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(_with_thread_connection, func, *args, **kwargs)
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


def _with_thread_connection(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return func(*args, **kwargs)
    except (InterfaceError, OperationalError):
        connection.close()  # broken (a database restart?): the next call on this thread reconnects
        raise


db_executor = DbExecutor()
