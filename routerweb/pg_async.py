"""PostgreSQL from the event loop, for the one statement a request waits on: its budget reservation.

Through Django the reservation took a thread hop, the cursor wrapper's and the transaction's
bookkeeping and several round trips: about 0.8 ms of CPU, which held a worker near a quarter of
its unbudgeted throughput (docs/benchmarks.md). Here a small psycopg async pool per event loop
runs it as one statement in one round trip, on the loop itself.

The pool's connections commit without waiting for the disk (`synchronous_commit` off, a setting
of these connections only): a budget row is locked until its statement commits, and waiting for
the WAL flush would serialise every budgeted call of a user behind it. A reservation lost in a
database crash only means a call ran unreserved; its cost still settles from its call row, which
the recorder writes with a normal, durable commit.
"""

import asyncio
import weakref
from typing import Any

from django.db import connections
from psycopg_pool import AsyncConnectionPool

POOL_MAX_SIZE = 4
POOL_TIMEOUT_S = 10.0  # as Django's own pool (routerweb/settings.py): a database that is down fails the call

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()


async def pg_pool() -> AsyncConnectionPool:
    """This event loop's pool (opened on first use), connected to Django's default database."""
    loop = asyncio.get_running_loop()
    opening = _pools.get(loop)
    if opening is None or (opening.done() and (opening.cancelled() or opening.exception() is not None)):
        # A task, so that requests arriving while it opens wait for the same pool; one that failed
        # is tried again by the next request.
        opening = _pools[loop] = loop.create_task(_pool_open())
    return await opening


async def pg_pool_close() -> None:
    """Close this event loop's pool, if it has one (at shutdown, and before a test database is dropped)."""
    opening = _pools.pop(asyncio.get_running_loop(), None)
    if opening is not None:
        await (await opening).close()


async def _pool_open() -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        kwargs=_connection_kwargs(),
        min_size=1,
        max_size=POOL_MAX_SIZE,
        timeout=POOL_TIMEOUT_S,
        open=False,
        name="routerweb-hot-path",
    )
    await pool.open()
    return pool


def _connection_kwargs() -> dict[str, Any]:
    # Django's own parameters (host, user, database name, test database included, OPTIONS), minus
    # what belongs to its cursor classes.
    params = connections["default"].get_connection_params()
    for name in ("cursor_factory", "context"):
        params.pop(name, None)
    params["options"] = f"{params.get('options', '')} -c synchronous_commit=off".strip()
    params["autocommit"] = True
    if params.get("prepare_threshold") is None:
        # Prepared at first use: the reservation's plan is made once per connection, not per call.
        # (Django leaves preparing off by default for the sake of old PgBouncers in transaction
        # mode; set OPTIONS "prepare_threshold" to keep a value of your own.)
        params["prepare_threshold"] = 0
    return params
