"""What the gateway does for a call between resolving its candidates and routing it: the rate limits
(routing/ratelimit.py) and the response cache (routing/response_cache.py).

Each costs a dict lookup when nothing applies: no limit for the key or user, no cache asked for and
none on the route.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import suppress
from typing import TypeVar

import orjson

from .call_context import CallContext, GatewayResponse
from .embedding_request import EmbeddingRequest
from .metering import CacheHitOf
from .ratelimit import RateLimitExceeded, tokens_bound
from .response_cache import CachedAnswer, ReplayedStream, cache_key, cache_policy, cached_completion, sse_replay
from .router import RouteResult
from .schemas import ChatRequest
from .snapshot import ModelSnap, Registry
from .streaming import StreamRelay
from .usage import Usage

T = TypeVar("T")


async def call_read_and_admit(
    read: Awaitable[T],
    confirm: Callable[[T], Awaitable[None]],
    registry: Registry,
    context: CallContext,
    chat: ChatRequest | EmbeddingRequest,
    candidates: list[ModelSnap],
) -> T:
    """`read` (the candidates' circuits, perhaps with the registry version), `confirm` what it read (it
    raises when the call must start over), then count the call against the rate limits that apply
    (none: a dict lookup; refused: the 429).

    With limits counted on Redis, the admission is sent together with the read: the limiter sends its
    commands before `read` starts, and `read` sends its own in the same turn of the event loop, so they
    leave in one write and come back in one read (routing/redis_pipe.py): one round trip instead of
    two, without a task for either. If the read fails or `confirm` refuses, what the admission counted
    is given back.
    """
    limiter = context.runtime.ratelimiter
    limits = limiter.limits_for(registry, key=context.key, user_id=context.user_id)
    if limits is None:
        result = await read
        await confirm(result)
        return result
    if not limiter.overlaps:
        result = await read
        await confirm(result)
        admitting = limiter.admit(limits, tokens=tokens_bound(chat, candidates))
    else:
        admitting = limiter.admit(limits, tokens=tokens_bound(chat, candidates))
        try:
            result = await read
            await confirm(result)
        except BaseException:
            with suppress(Exception):
                admission = await admitting
                if admission is not None:  # given back before the call starts over and is counted again
                    await limiter.give_back(admission)
            raise
    try:
        context.admission = await admitting
    except RateLimitExceeded as refused:
        context.rate_limit_headers = refused.headers
        raise
    if context.admission is not None:
        context.rate_limit_headers = context.admission.headers
    return result


async def call_cache_lookup(
    registry: Registry, context: CallContext, chat: ChatRequest, candidates: list[ModelSnap]
) -> CachedAnswer | None:
    """The stored answer when the response cache applies and has one (routing/response_cache.py)."""
    route = registry.routes.get(chat.model)
    policy = cache_policy(chat, route, context.cache_header)
    if policy is None:
        return None
    key = cache_key(chat=chat, candidates=candidates, policy=policy, user_id=context.user_id, route=route)
    hit = await context.runtime.response_cache.lookup(key)
    if hit is None:
        context.cache_entry = (key, policy)
    return hit


def call_cache_store_soon(context: CallContext, result: RouteResult) -> None:
    """Store a miss's answer in the background: only a complete answer whose usage the provider gave."""
    if context.cache_entry is None or not isinstance(result.usage, Usage):
        return
    _cache_store_soon(context, result.model, result.body, result.usage)


def call_cache_store_stream_soon(context: CallContext, model: ModelSnap, relay: StreamRelay) -> None:
    """Store a streamed miss's answer in the background: only a stream that reached its end with the
    usage the provider gave, of one choice's text (streamed tool calls are not assembled for it)."""
    if context.cache_entry is None or not isinstance(relay.usage, Usage):
        return
    completion = relay.completion()
    if completion is not None:
        _cache_store_soon(context, model, completion, relay.usage)


def _cache_store_soon(context: CallContext, model: ModelSnap, completion: dict | bytes, usage: Usage) -> None:
    key, policy = context.cache_entry
    store = context.runtime.response_cache.store(
        key,
        policy=policy,
        completion=completion,
        model=model.name,
        usage=usage,
        request_id=context.request_id,
        created_at=context.created_at,
    )
    _background(store)


background_tasks: set[asyncio.Task] = set()  # held until done (the loop keeps only weak references)


def _background(coroutine: Coroutine) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    background_tasks.add(task)
    task.add_done_callback(background_tasks.discard)


def call_cache_hit_answer(
    registry: Registry, context: CallContext, chat: ChatRequest, hit: CachedAnswer
) -> GatewayResponse:
    """The stored answer (fresh id and created), as JSON or replayed as SSE; recorded as a cache hit."""
    completion = cached_completion(hit)
    context.snapshot_part = registry.metering  # the meter prices what the hit saved with it
    headers = {**context.headers(hit.model), "X-Router-Cache": "hit"}
    outcome = context.outcome(
        requested=chat.model,
        model=registry.models.get(hit.model),
        status="cache_hit",
        http_status=200,
        stream=chat.stream,
        messages=chat.body.get("messages") or [],
        request_body=chat.body,
        answer=completion,
        usage=Usage(0, 0, 0),
        latency_ms=round((time.perf_counter() - context.started) * 1000),
        cache_hit_of=CacheHitOf(request_id=hit.request_id, created_at=hit.created_at, usage=hit.usage),
    )
    asyncio.get_running_loop().call_soon(context.record, outcome)
    if chat.stream:
        events = sse_replay(completion, include_usage=chat.client_wants_usage)
        return GatewayResponse(200, headers, stream=ReplayedStream(events))
    return GatewayResponse(200, headers, body=orjson.dumps(completion))
