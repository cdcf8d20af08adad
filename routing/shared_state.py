"""Small shared state for the hot path (registry version, circuit breakers), async and cheap.

With REDIS_URL set (the same Redis as Django's cache), every worker shares it through Redis with a
native asyncio client, one per event loop. Without it, the state lives in this process's memory,
like Django's local-memory cache: shared by the threads of one process only, the single-process
default.
"""

import asyncio
import threading
import time
import weakref
from functools import cache
from typing import Protocol

from django.conf import settings


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
    """

    def __init__(self, prefix: str = ""):
        self.prefix = prefix  # kept for symmetry with RedisState; keys never leave the process
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _get(self, key: str, now: float) -> str | None:
        item = self._values.get(key)
        if item is None:
            return None
        if item[1] <= now:
            del self._values[key]
            return None
        return item[0]

    async def get_many(self, keys: list[str]) -> list[str | None]:
        now = time.monotonic()
        with self._lock:
            return [self._get(key, now) for key in keys]

    async def set(self, key: str, value: str, ttl: float) -> None:
        with self._lock:
            self._values[key] = (value, time.monotonic() + ttl)

    async def add(self, key: str, value: str, ttl: float) -> bool:
        now = time.monotonic()
        with self._lock:
            if self._get(key, now) is not None:
                return False
            self._values[key] = (value, now + ttl)
            return True

    async def incr(self, key: str, ttl: float) -> int:
        now = time.monotonic()
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
    """Redis through redis.asyncio; a client per event loop, since asyncio connections belong to one loop."""

    def __init__(self, url: str, prefix: str):
        self.url = url
        self.prefix = prefix
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import redis.asyncio as redis_asyncio

            client = redis_asyncio.Redis.from_url(self.url, decode_responses=True, health_check_interval=30)
            self._clients[loop] = client
        return client

    async def get_many(self, keys: list[str]) -> list[str | None]:
        return await self._client().mget([self.prefix + k for k in keys])

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._client().set(self.prefix + key, value, px=max(1, int(ttl * 1000)))

    async def add(self, key: str, value: str, ttl: float) -> bool:
        return bool(await self._client().set(self.prefix + key, value, px=max(1, int(ttl * 1000)), nx=True))

    async def incr(self, key: str, ttl: float) -> int:
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.incr(self.prefix + key)
            pipe.pexpire(self.prefix + key, max(1, int(ttl * 1000)))
            value, _ = await pipe.execute()
        return int(value)

    async def delete(self, *keys: str) -> None:
        await self._client().delete(*[self.prefix + k for k in keys])

    def set_sync(self, key: str, value: str) -> None:
        import redis

        with redis.Redis.from_url(self.url) as client:
            client.set(self.prefix + key, value)


@cache
def shared_state() -> SharedState:
    prefix = f"{settings.CACHES['default'].get('KEY_PREFIX', '')}:rw:"
    if settings.REDIS_URL:
        return RedisState(settings.REDIS_URL, prefix)
    return LocalMemoryState(prefix)
