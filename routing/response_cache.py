"""Exact-match response cache: identical requests answered from a stored completion, not the API.

Opt-in per route (`Route.cache_ttl_s`, in the snapshot) or per request (`X-Router-Cache: true`, or a
body field `cache: {"ttl": 600}`, which is never forwarded upstream). Only a request's explicit ask
caches a request that sets `temperature` above 0; `X-Router-Cache: false` opts out of a route's cache.

The key is a SHA-256 of the request after route resolution: the candidate models in the order they
would be tried, the messages and every other parameter (all body fields but those that do not change
the answer: `model`, `stream`, `stream_options`, `fallback_models`, `user`, `metadata`, `cache`). It is
scoped to the user unless the route's cache is shared (`Route.cache_shared`), and carries the route's
`cache_generation`, which the admin's "clear cached answers" action moves on.

Stored: non-streamed 200 answers whose usage the provider reported (never errors, streams, or answers
with estimated usage), up to `ROUTERWEB_CACHE_MAX_ENTRY_BYTES` each, and while the bytes stored over
the last day (every worker's, counted in the cache) stay under `ROUTERWEB_CACHE_MAX_TOTAL_BYTES`; a
TTL is at most a day, so what is stored never exceeds that. Entries live in Django's cache: Redis
with `REDIS_URL`, the worker's local memory otherwise.
"""

import hashlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache, RedisSerializer

from .errors import ApiError
from .redis_pipe import RedisPipe, redis_pipe
from .schemas import ChatRequest
from .shared_state import REDIS_TIMEOUT_S
from .snapshot import ModelSnap, RouteSnap
from .usage import Usage

logger = logging.getLogger("routerweb.response_cache")

MAX_TTL_S = 86400  # also the window of the total-size counter
DEFAULT_TTL_S = 3600  # for a request that asks for the cache without a TTL, on a route without one
KEY_IGNORES = frozenset({"model", "stream", "stream_options", "fallback_models", "user", "metadata", "cache"})
TRUE, FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_s: int
    shared: bool


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """A stored completion and what it cost: the original call's model, usage, request id and time."""

    completion: dict[str, Any]
    model: str
    usage: Usage
    request_id: str
    created_at: datetime


def cache_policy(chat: ChatRequest, route: RouteSnap | None, header: str) -> CachePolicy | None:
    """Whether and how long this request's answer is cached; takes the `cache` field out of the body."""
    field = chat.body.pop("cache", None)
    if field is not None and (not isinstance(field, dict) or not _valid_ttl(field.get("ttl"))):
        raise ApiError(
            400, f"Invalid 'cache': must be an object like {{\"ttl\": 600}} (1 to {MAX_TTL_S} seconds).",
            code="invalid_value", param="cache",
        )  # fmt: skip
    header = header.strip().lower()
    if header in FALSE:
        return None
    asked = header in TRUE or field is not None
    route_ttl = route.cache_ttl_s if route is not None else None
    if not asked:
        temperature = chat.body.get("temperature")
        if route_ttl is None or (isinstance(temperature, (int, float)) and temperature > 0):
            return None
    ttl = (field or {}).get("ttl") or route_ttl or DEFAULT_TTL_S
    return CachePolicy(ttl_s=min(ttl, MAX_TTL_S), shared=bool(route is not None and route.cache_shared))


def _valid_ttl(ttl: Any) -> bool:
    return ttl is None or (isinstance(ttl, int) and not isinstance(ttl, bool) and 1 <= ttl <= MAX_TTL_S)


def cache_key(
    *, chat: ChatRequest, candidates: list[ModelSnap], policy: CachePolicy, user_id: int | None, route: RouteSnap | None
) -> str:
    parameters = {name: value for name, value in chat.body.items() if name not in KEY_IGNORES}
    normalised = orjson.dumps([[m.name for m in candidates], parameters], option=orjson.OPT_SORT_KEYS)
    scope = "all" if policy.shared else f"u{user_id}"
    generation = route.cache_generation if route is not None else 0
    return f"rc:{chat.model}:{generation}:{scope}:{hashlib.sha256(normalised).hexdigest()}"


class ResponseCache:
    """A worker's view of the response cache, Django's cache `alias`: its local memory, read on the
    event loop (no I/O, no thread hop), or Redis, read and written on the worker's pipelined Redis
    connection (routing/redis_pipe.py) in the format of Django's RedisCache (its keys and its
    serializer), so that Django's cache API sees the same entries. Django's RedisCache is synchronous:
    through it, each lookup was a thread hop and a blocking call (docs/benchmarks.md)."""

    def __init__(self, *, alias: str = "default", max_entry_bytes: int, max_total_bytes: int) -> None:
        self.cache = caches[alias]
        self.redis: RedisPipe | None = None
        if isinstance(self.cache, RedisCache):
            location = settings.CACHES[alias]["LOCATION"].split(",")[0]  # Django writes to the first server
            self.redis = redis_pipe(location, decode=False, timeout_s=REDIS_TIMEOUT_S)
            self.serializer = RedisSerializer()
        self.max_entry_bytes = max_entry_bytes
        self.max_total_bytes = max_total_bytes
        self.hits = self.misses = self.stored = self.refused = 0

    async def lookup(self, key: str) -> CachedAnswer | None:
        try:
            raw = await self._get(key)
        except Exception:  # the cache is down: a miss, never a failed call
            logger.warning("response cache unavailable for a lookup", exc_info=True)
            raw = None
        if raw is None:
            self.misses += 1
            return None
        self.hits += 1
        entry = orjson.loads(raw)
        return CachedAnswer(
            completion=entry["completion"],
            model=entry["model"],
            usage=Usage(*entry["usage"]),
            request_id=entry["request_id"],
            created_at=datetime.fromisoformat(entry["created_at"]),
        )

    async def store(
        self, key: str, *, policy: CachePolicy, completion: dict[str, Any] | bytes, model: str, usage: Usage,
        request_id: str, created_at: datetime,
    ) -> bool:  # fmt: skip
        """Store one answer (a chat completion, or its JSON; its `id` and `created` are not kept); False
        when it is over a size cap (or the cache failed)."""
        if isinstance(completion, bytes):
            completion = orjson.loads(completion)
        completion = {name: value for name, value in completion.items() if name not in ("id", "created")}
        entry = orjson.dumps(
            {
                "completion": completion,
                "model": model,
                "usage": [usage.prompt, usage.cached, usage.completion, usage.cache_write],
                "request_id": request_id,
                "created_at": created_at.isoformat(),
            }
        )
        if len(entry) > self.max_entry_bytes:
            self.refused += 1
            return False
        try:
            stored = await self._set_within_total(key, entry, policy.ttl_s)
        except Exception:
            logger.warning("response cache unavailable for a store", exc_info=True)
            return False
        if not stored:
            self.refused += 1
            return False
        self.stored += 1
        return True

    async def _get(self, key: str) -> bytes | None:
        if self.redis is None:
            return self.cache.get(key)
        (raw,) = await self.redis.execute(("GET", self.cache.make_key(key)))
        return None if raw is None else self.serializer.loads(raw)

    async def _set_within_total(self, key: str, entry: bytes, ttl_s: int) -> bool:
        """Store `entry` unless the bytes stored over the last day (every worker's) would pass the cap."""
        day = int(time.time() // MAX_TTL_S)
        current, previous = f"rc-bytes:{day}", f"rc-bytes:{day - 1}"
        if self.redis is None:
            if sum(self.cache.get_many([current, previous]).values()) + len(entry) > self.max_total_bytes:
                return False
            self.cache.add(current, 0, 2 * MAX_TTL_S)
            self.cache.incr(current, len(entry))
            self.cache.set(key, entry, ttl_s)
            return True
        current, previous = self.cache.make_key(current), self.cache.make_key(previous)
        (counts,) = await self.redis.execute(("MGET", current, previous))
        if sum(int(count or 0) for count in counts) + len(entry) > self.max_total_bytes:
            return False
        await self.redis.execute(
            ("INCRBY", current, len(entry)),
            ("EXPIRE", current, 2 * MAX_TTL_S),
            ("SET", self.cache.make_key(key), self.serializer.dumps(entry), "EX", ttl_s),
        )
        return True


def cached_completion(answer: CachedAnswer) -> dict[str, Any]:
    """The stored completion with a fresh `id` and `created`."""
    return {"id": "chatcmpl-" + secrets.token_hex(12), "created": int(time.time()), **answer.completion}


def sse_replay(completion: dict[str, Any], *, include_usage: bool) -> list[bytes]:
    """A completion as OpenAI's stream of chunks: each choice's message, its finish, usage, [DONE]."""
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": completion["created"]}
    base["model"] = completion.get("model", "")
    events = []
    for choice in completion.get("choices") or []:
        message = choice.get("message") or {}
        delta = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        index = choice.get("index", 0)
        events.append({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        events.append(
            {**base, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]}
        )
    if include_usage and completion.get("usage") is not None:
        events.append({**base, "choices": [], "usage": completion["usage"]})
    return [b"data: " + orjson.dumps(event) + b"\n\n" for event in events] + [b"data: [DONE]\n\n"]


class ReplayedStream:
    """A cached answer's SSE events, served like a RecordedStream (its row is already recorded)."""

    def __init__(self, events: list[bytes]):
        self._events = iter(events)

    def __aiter__(self) -> "ReplayedStream":
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def response_cache_build() -> ResponseCache:
    return ResponseCache(
        max_entry_bytes=settings.ROUTERWEB_CACHE_MAX_ENTRY_BYTES,
        max_total_bytes=settings.ROUTERWEB_CACHE_MAX_TOTAL_BYTES,
    )
