"""Small shared state for the hot path (registry version token, circuit breakers), async and cheap.

With REDIS_URL set (the same Redis as Django's cache), every worker shares it through Redis, on the
worker's pipelined connection (routing/redis_pipe.py). Without it, the state lives in this process's memory,
like Django's local-memory cache: shared by the threads of one process only, the single-process
default.

Redis being down is never an error for a request: `FailoverState` answers from this process's
memory while Redis does not answer (circuits are then kept per worker), logs one warning per
outage, tries Redis again at most once a second and goes back to it when it answers.
"""

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Protocol, TypeVar

from django.conf import settings

from .redis_pipe import redis_pipe

logger = logging.getLogger("routerweb.shared_state")

T = TypeVar("T")

# A Redis that accepts connections but does not answer fails over after this long (connect, or a reply).
REDIS_TIMEOUT_S = 1.0
# While Redis is down, how often one call tries it again.
REDIS_RETRY_S = 1.0


class SharedState(Protocol):
    async def get_many(self, keys: list[str]) -> list[str | None]:
        """Values for `keys`, in order; None where missing. Values come back as strings."""
        raise NotImplementedError

    async def set(self, key: str, value: str, ttl: float) -> None:
        raise NotImplementedError

    async def add(self, key: str, value: str, ttl: float) -> bool:
        """Set `key` only if it is missing; True when this call set it (an atomic lock)."""
        raise NotImplementedError

    async def incr(self, key: str, ttl: float) -> int:
        """Add 1 to `key` (0 when missing) and (re)start its expiry; returns the new value."""
        raise NotImplementedError

    async def delete(self, *keys: str) -> None:
        raise NotImplementedError

    def set_sync(self, key: str, value: str) -> None:
        """For synchronous callers (admin saves, management commands); no expiry."""
        raise NotImplementedError


class LocalMemoryState:
    """This process's memory: a dict with expiry times behind a lock (threads share it, processes don't).

    Without REDIS_URL there is one worker process, and its local memory is what Django's local-memory
    cache would hold too; a plain dict does the same without pickling, at a few microseconds a call.
    Expiry times are read on `clock` (monotonic seconds).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.clock = clock

    def _get(self, key: str, now: float) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._values[key]
            return None
        return item[0]

    async def get_many(self, keys: list[str]) -> list[str | None]:
        now = self.clock()
        with self._lock:
            return [self._get(key, now) for key in keys]

    async def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._values[key] = (value, self.clock() + ttl)

    async def add(self, key: str, value: str, ttl: float) -> bool:
        now = self.clock()
        with self._lock:
            if self._get(key, now) is not None:
                return False
            self._values[key] = (value, now + ttl)
            return True

    async def incr(self, key: str, ttl: float) -> int:
        now = self.clock()
        with self._lock:
            value = int(self._get(key, now) or 0) + 1
            self._values[key] = (str(value), now + ttl)
            return value

    async def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)

    def set_sync(self, key: str, value: str) -> None:
        with self._lock:
            self._values[key] = (value, float("inf"))

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


class RedisState:
    """Redis through the worker's pipelined connection (routing/redis_pipe.py), keys under `prefix`."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = prefix
        self.pipe = redis_pipe(url, timeout_s=REDIS_TIMEOUT_S)

    async def get_many(self, keys: list[str]) -> list[str | None]:
        (values,) = await self.pipe.execute(("MGET", *[self.prefix + k for k in keys]))
        return values

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self.pipe.execute(("SET", self.prefix + key, value, "PX", _ms(ttl)))

    async def add(self, key: str, value: str, ttl: float) -> bool:
        (reply,) = await self.pipe.execute(("SET", self.prefix + key, value, "PX", _ms(ttl), "NX"))
        return reply is not None

    async def incr(self, key: str, ttl: float) -> int:
        key = self.prefix + key
        *_, (value, _) = await self.pipe.execute(("MULTI",), ("INCR", key), ("PEXPIRE", key, _ms(ttl)), ("EXEC",))
        return int(value)

    async def delete(self, *keys: str) -> None:
        await self.pipe.execute(("DEL", *[self.prefix + k for k in keys]))

    def set_sync(self, key: str, value: str) -> None:
        import redis

        with redis.Redis.from_url(
            self.url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
        ) as client:
            client.set(self.prefix + key, value)


class FailoverState:
    """`primary` (Redis) while it answers, `fallback` (this process's memory) while it does not.

    Any error from the primary (connection refused or lost, timeout, Redis loading or refusing
    writes) sends the call, and every call for the next `retry_s`, to the fallback; the first call
    after that tries the primary again. The first failure of an outage logs a warning, the first
    success after it another, and the fallback's values are dropped then: state written during the
    outage was this worker's own (circuits per worker), and the shared state is the truth again.
    """

    def __init__(
        self,
        primary: SharedState,
        fallback: LocalMemoryState,
        *,
        retry_s: float = REDIS_RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.primary = primary
        self.fallback = fallback
        self.retry_s = retry_s
        self.clock = clock
        self._down_since: float | None = None
        self._retry_at = 0.0

    @property
    def failed_over(self) -> bool:
        return self._down_since is not None

    async def get_many(self, keys: list[str]) -> list[str | None]:
        return await self._call(lambda state: state.get_many(keys))

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._call(lambda state: state.set(key, value, ttl))

    async def add(self, key: str, value: str, ttl: float) -> bool:
        return await self._call(lambda state: state.add(key, value, ttl))

    async def incr(self, key: str, ttl: float) -> int:
        return await self._call(lambda state: state.incr(key, ttl))

    async def delete(self, *keys: str) -> None:
        await self._call(lambda state: state.delete(*keys))

    def set_sync(self, key: str, value: str) -> None:
        """Set on the primary; while it does not answer, on the fallback (this process only)."""
        from redis.exceptions import RedisError

        if not self._primary_due():
            self.fallback.set_sync(key, value)
            return
        try:
            self.primary.set_sync(key, value)
        except (RedisError, OSError) as error:
            self._failed(error)
            self.fallback.set_sync(key, value)
            return
        self._answered()

    async def _call(self, operation: Callable[[SharedState], Awaitable[T]]) -> T:
        from redis.exceptions import RedisError

        if not self._primary_due():
            return await operation(self.fallback)
        try:
            result = await operation(self.primary)
        except (RedisError, OSError) as error:
            self._failed(error)
            return await operation(self.fallback)
        self._answered()
        return result

    def _primary_due(self) -> bool:
        """Whether this call goes to the primary: always while it answers, one call per `retry_s` while not."""
        if self._down_since is None:
            return True
        now = self.clock()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.retry_s  # this call tries Redis; the others keep to the fallback meanwhile
        return True

    def _failed(self, error: Exception) -> None:
        now = self.clock()
        self._retry_at = now + self.retry_s
        if self._down_since is None:
            self._down_since = now
            logger.warning(
                "Redis unavailable (%s): serving from this worker's memory, circuits per worker, until it answers",
                error,
            )

    def _answered(self) -> None:
        if self._down_since is None:
            return
        logger.warning("Redis answers again after %.1f s: back to the shared state", self.clock() - self._down_since)
        self._down_since = None
        self.fallback.clear()


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


@cache
def shared_state() -> SharedState:
    if settings.REDIS_URL:
        redis_state = RedisState(settings.REDIS_URL, f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:rw:")
        return FailoverState(redis_state, LocalMemoryState())
    return LocalMemoryState()
