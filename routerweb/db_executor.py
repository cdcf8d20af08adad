"""A fixed pool of threads for the few ORM calls made from async request handling.

The hot path touches the database rarely (a registry reload, a budget reservation); those calls
run here rather than through `sync_to_async`, so that they neither queue behind one shared thread
nor connect per call: each of the pool's threads keeps its own connection (checked out of the
connection pool on PostgreSQL) for as long as it works. `close_connections()` closes them all, at
shutdown and before a test database is dropped.

A database restart leaves every thread with a dead connection. A call that fails with a
connection-level error (`OperationalError`, `InterfaceError`) before anything it did could have
committed (on its first statement, or inside its first transaction, which the server rolls back)
is run again on a new connection (up to RECONNECT_TRIES times). A call that fails after a
statement was autocommitted or a transaction ended is not retried.
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
        """`func(*args, **kwargs)` in one of the pool's threads; run again if it fails on a broken
        connection before anything it did could have committed (its first statement, or inside its
        first transaction: the server rolled that back). `func` must have no effect outside the
        database before then, and a second run after a commit whose answer was lost must be harmless
        (every caller here reads, or reserves budget: at worst a reservation too many, reclaimed)."""
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


class _CommitPoints:
    """An execute wrapper counting what may have committed: statements run outside a transaction
    (autocommitted), and transactions that ended before the statement running now."""

    def __init__(self) -> None:
        self.committed = 0
        self._in_transaction = False

    def __call__(self, execute, sql, params, many, context):
        in_transaction = connection.in_atomic_block
        if self._in_transaction and not in_transaction:
            self.committed += 1  # the transaction of the statements before this one ended
        self._in_transaction = in_transaction
        result = execute(sql, params, many, context)
        if not in_transaction and not sql.startswith("BEGIN"):  # SQLite opens a transaction so
            self.committed += 1
        return result


# Fresh connections tried after a lost one: a restart (or a sweep of terminated backends) can take the
# next connection too before the pool's check sees it.
RECONNECT_TRIES = 3


def _with_thread_connection(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    for tries_left in range(RECONNECT_TRIES, -1, -1):
        commit_points = _CommitPoints()
        try:
            with connection.execute_wrapper(commit_points):
                return func(*args, **kwargs)
        except (InterfaceError, OperationalError) as error:
            connection.close()  # broken (a database restart?): the next statement on this thread reconnects
            if commit_points.committed or not tries_left:
                raise
            logger.warning("database connection lost before anything committed (%s); retrying on a new one", error)
    raise AssertionError("unreachable")


db_executor = DbExecutor()
