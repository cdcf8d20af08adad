"""A fixed pool of threads for the few ORM calls made from async request handling.

The hot path touches the database rarely (a registry reload, a budget reservation); those calls
run here rather than through `sync_to_async`, so that they neither queue behind one shared thread
nor connect per call: each of the pool's threads keeps its own connection (checked out of the
connection pool on PostgreSQL) for as long as it works. `close_connections()` closes them all, at
shutdown and before a test database is dropped.

A database restart leaves every thread with a dead connection. A call whose first statement fails
with a connection-level error (`OperationalError`, `InterfaceError`) is run once more on a new
connection: nothing of it reached the database, so running it again is safe. A call that fails
after a statement succeeded is not retried (it may have committed, or half-run a transaction).
"""

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connection, connections

T = TypeVar("T")

logger = logging.getLogger("routerweb.db")

DB_THREADS = 4


class DbExecutor:
    def __init__(self, threads: int = DB_THREADS):
        self.threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")

    async def run(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """`func(*args, **kwargs)` in one of the pool's threads; run twice if its first statement fails
        on a broken connection, so `func` must have no effect outside the database before that statement."""
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


class _StatementCounter:
    """An execute wrapper counting the statements that succeeded."""

    def __init__(self) -> None:
        self.succeeded = 0

    def __call__(self, execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        self.succeeded += 1
        return result


def _with_thread_connection(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    counter = _StatementCounter()
    try:
        with connection.execute_wrapper(counter):
            return func(*args, **kwargs)
    except (InterfaceError, OperationalError) as error:
        connection.close()  # broken (a database restart?): the next statement on this thread reconnects
        if counter.succeeded:
            raise
        logger.warning("database error before any statement succeeded (%s); retrying on a new connection", error)
    try:
        return func(*args, **kwargs)
    except (InterfaceError, OperationalError):
        connection.close()
        raise


db_executor = DbExecutor()
