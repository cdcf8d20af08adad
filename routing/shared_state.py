"""Small shared state for the hot path (registry version, circuit breakers), async and cheap.

With REDIS_URL set, every worker shares it through Redis (native asyncio client, one per event
loop). Without it, Django's local-memory cache holds it, which is shared by the threads of one
process only; that is the single-process default.
"""

import asyncio
import weakref
from functools import cache
from typing import Protocol

from django.conf import settings
from django.core.cache import cache as django_cache


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
    """Django's default cache, called directly: local memory is non-blocking, so no thread hop is needed."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    async def get_many(self, keys: list[str]) -> list[str | None]:
        found = django_cache.get_many([self.prefix + k for k in keys])
        return [found.get(self.prefix + k) for k in keys]

    async def set(self, key: str, value: str, ttl: float) -> None:
        django_cache.set(self.prefix + key, value, ttl)

    async def add(self, key: str, value: str, ttl: float) -> bool:
        return django_cache.add(self.prefix + key, value, ttl)

    async def incr(self, key: str, ttl: float) -> int:
        full_key = self.prefix + key
        django_cache.add(full_key, 0, ttl)
        value = django_cache.incr(full_key)
        django_cache.touch(full_key, ttl)
        return value

    async def delete(self, *keys: str) -> None:
        django_cache.delete_many([self.prefix + k for k in keys])

    def set_sync(self, key: str, value: str) -> None:
        django_cache.set(self.prefix + key, value, None)


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
