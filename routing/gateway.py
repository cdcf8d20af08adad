"""One call through routerweb, from checked body to recorded call.

`call_run` is the path every calling endpoint shares: registry snapshot, candidates, circuit state,
rate limits, the response cache, budgets, fallback, and exactly one call row per request, recorded
once its outcome is known. An `Endpoint` brings what differs: how its body is checked, which kind
of model answers it, how a candidate is tried for it, and how an error is written. Both the API
(key-authenticated) and the playground (session-authenticated) call `chat_completion_run`;
/v1/messages is `routing/messages.py`, /v1/embeddings `routing/embeddings.py`.
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from .admission import (
    call_cache_hit_answer,
    call_cache_lookup,
    call_cache_store_soon,
    call_cache_store_stream_soon,
    call_read_and_admit,
)
from .call_context import CallContext, GatewayResponse
from .embedding_request import EmbeddingRequest
from .errors import ApiError, error_headers
from .metering import CallPlan, Meter
from .registry import RegistryUnavailable
from .registry_version import VERSION_KEY
from .router import CandidateTry, RouteResult, UsageCost, candidates_for, chat_attempt, route_request
from .runtime import Runtime
from .schemas import ChatRequest, chat_request_parse
from .snapshot import KeySnap, ModelSnap, Registry
from .usage import Usage, UsageProblem

# nginx's "client closed request": recorded, never sent (nobody is listening any more).
CLIENT_GONE = ApiError(499, "The client closed the request.", code="client_disconnected")
INTERNAL_ERROR = ApiError(500, "Internal error in routerweb.", code="internal_error", type="server_error")

logger = logging.getLogger("routerweb.gateway")


class RegistryChanged(Exception):
    """The unchecked snapshot a request started from is out of date; `registry` is the current one."""

    def __init__(self, registry: Registry):
        super().__init__("the registry changed")
        self.registry = registry


# Tries from an unchecked registry snapshot before one from a freshly checked registry.
UNCHECKED_TRIES = 2

Caller = Callable[[Registry], CallContext]
# A checked request body: a chat completion (or a subclass: /v1/messages) or an embeddings request.
ApiRequest = ChatRequest | EmbeddingRequest


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What one calling endpoint brings to `call_run`.

    `parse` checks a raw body (raises ApiError 400); the request it returns (a `ChatRequest`, a
    subclass, or an `EmbeddingRequest`) is what rate limits, budgets and the call row see.
    `attempt(request, context, usage_cost)` is the try of one candidate for it (router.CandidateTry).
    `error_answer` writes an ApiError in the endpoint's shape, as (HTTP status, body). `kind`: the
    kind of model that may answer (ModelEndpoint.Kind) and the call row's kind. `cacheable`: the
    response cache applies.
    """

    parse: Callable[[bytes], ApiRequest]
    attempt: Callable[[Any, CallContext, UsageCost], CandidateTry]
    error_answer: Callable[[ApiError], tuple[int, bytes]]
    kind: str = "chat"
    cacheable: bool = True


def _chat_attempt(chat: ChatRequest, context: CallContext, usage_cost: UsageCost) -> CandidateTry:
    return partial(
        chat_attempt,
        request=chat.body,
        stream=chat.stream,
        client_wants_usage=chat.client_wants_usage,
        usage_cost=usage_cost,
    )


def openai_error_answer(error: ApiError) -> tuple[int, bytes]:
    return error.status, error.body()


CHAT_COMPLETIONS = Endpoint(parse=chat_request_parse, attempt=_chat_attempt, error_answer=openai_error_answer)


async def chat_completion_run(*, runtime: Runtime, raw_body: bytes, caller: Caller) -> GatewayResponse:
    """Route one chat completion for whoever `caller(registry)` says is calling (see `call_run`)."""
    return await call_run(CHAT_COMPLETIONS, runtime=runtime, raw_body=raw_body, caller=caller)


async def call_run(endpoint: Endpoint, *, runtime: Runtime, raw_body: bytes, caller: Caller) -> GatewayResponse:
    """Route one call of `endpoint` for whoever `caller(registry)` says is calling; never raises for bad
    input or upstream trouble (answers the endpoint's error). `caller` raises ApiError to refuse (401):
    that answer writes no row.

    The request starts from the worker's registry snapshot without a round trip: the snapshot's
    version is read with the candidates' circuit state, in one round trip for both. If the registry
    changed (a key revoked a moment ago, say), the request starts over with the current one before
    anything happened: no upstream call, no reservation, no row.
    """
    registry = runtime.registry.snapshot()
    missed = False
    for _ in range(UNCHECKED_TRIES):
        if registry is None:
            break
        try:
            context = caller(registry)
        except ApiError:
            missed = True  # perhaps a key created since the snapshot: decide on the checked registry
            break
        context.runtime, context.kind = runtime, endpoint.kind
        try:
            return await _run(endpoint, raw_body, registry, context, registry_checked=False)
        except RegistryChanged as changed:
            registry = changed.registry
    try:
        registry = await registry_checked_get(runtime, after_miss=missed)
        context = caller(registry)
    except ApiError as error:
        status, body = endpoint.error_answer(error)
        return GatewayResponse(status, error_headers(error), body=body)
    context.runtime, context.kind = runtime, endpoint.kind
    return await _run(endpoint, raw_body, registry, context, registry_checked=True)


async def registry_checked_get(runtime: Runtime, *, after_miss: bool = False) -> Registry:
    """The current registry, or ApiError 503 when there is none (a new worker whose database is down).
    `after_miss`: the request named something the snapshot lacks (RegistryCache.get_after_miss)."""
    try:
        return await (runtime.registry.get_after_miss() if after_miss else runtime.registry.get())
    except RegistryUnavailable:
        message = "routerweb could not read its registry (database unavailable); try again."
        raise ApiError(503, message, code="registry_unavailable", type="server_error", retry_after_s=1) from None


async def _run(
    endpoint: Endpoint, raw_body: bytes, registry: Registry, context: CallContext, *, registry_checked: bool
) -> GatewayResponse:
    """One try with `registry`. Unchecked, it raises RegistryChanged when the registry turns out to have
    changed; an error found before the version is read is only answered once the snapshot is confirmed
    (a key, model or route created a moment ago must not be refused by an old snapshot).
    """
    runtime = context.runtime
    runtime.calls_in_flight += 1
    context.snapshot_part = registry.metering  # a call refused before it is reserved is recorded with it too
    chat: ApiRequest | None = None
    try:
        try:
            chat = endpoint.parse(raw_body)
            if context.key is not None:
                check_allowed(context.key, chat)
            candidates = candidates_for(registry, chat.model, chat.fallback_models, kind=endpoint.kind)
        except ApiError:
            if not registry_checked:  # a model created since the snapshot gets its chance
                _confirm(registry, await runtime.registry.get_after_miss())
            raise
        breaker = runtime.breaker
        if registry_checked:
            views = await call_read_and_admit(breaker.read(candidates), _nothing, registry, context, chat, candidates)
        else:
            confirm = partial(_confirm_token, registry, runtime)
            read = breaker.read_with(candidates, [VERSION_KEY])
            views, _ = await call_read_and_admit(read, confirm, registry, context, chat, candidates)
        if endpoint.cacheable:
            hit = await call_cache_lookup(registry, context, chat, candidates)
            if hit is not None:
                return call_cache_hit_answer(registry, context, chat, hit)
        candidates = await _reserve(registry, context, chat, candidates)
        usage_cost = partial(_usage_cost, runtime.meter, registry.metering, context.created_at)
        attempt = endpoint.attempt(chat, context, usage_cost)
        result = await route_request(
            candidates, breaker, context.trace, attempt=attempt, views=views, kind=endpoint.kind
        )
    except RegistryChanged:
        runtime.calls_in_flight -= 1  # nothing to record: the caller starts over
        raise
    except ApiError as error:
        _record_failure(context, chat, error)
        status, body = endpoint.error_answer(error)
        return GatewayResponse(status, context.headers() | error_headers(error), body=body)
    except asyncio.CancelledError:
        # The client left while the upstreams were being tried; the upstream request is closed by now.
        # The candidate that had the request may bill its prompt: it is recorded with an estimate.
        _record_failure(context, chat, CLIENT_GONE, client_disconnected=True, model=context.trace.in_flight)
        raise
    except Exception:
        # routerweb's own fault: still one row, and an OpenAI error (Redis down is not one: shared_state.py).
        logger.exception("call %s failed inside routerweb", context.request_id)
        _record_failure(context, chat, INTERNAL_ERROR)
        status, body = endpoint.error_answer(INTERNAL_ERROR)
        return GatewayResponse(status, context.headers() | error_headers(INTERNAL_ERROR), body=body)
    if result.stream is not None:
        headers = context.headers(result.model.name)
        return GatewayResponse(200, headers, stream=RecordedStream(context, chat, result))
    response = GatewayResponse(200, context.headers(result.model.name), body=result.body)
    call_cache_store_soon(context, result)
    # Recorded on the event loop's next turn: by then the answer is in the client's socket, so the
    # client (and the requests queued behind this one) never wait for the bookkeeping.
    asyncio.get_running_loop().call_soon(partial(_record, context, chat, result, usage=result.usage))
    return response


async def _nothing(_: object) -> None:
    pass


async def _confirm_token(snapshot: Registry, runtime: Runtime, read: tuple[object, list[str | None]]) -> None:
    """Raise RegistryChanged when the registry version read with the circuits is not `snapshot`'s."""
    _, (token,) = read
    _confirm(snapshot, await runtime.registry.for_token(token))


def _confirm(snapshot: Registry, current: Registry) -> None:
    if current is not snapshot:
        raise RegistryChanged(current)


async def _reserve(
    registry: Registry, context: CallContext, chat: ApiRequest, candidates: list[ModelSnap]
) -> list[ModelSnap]:
    """Ask the meter to reserve the call (it may refuse with ApiError); returns the candidates it covers."""
    context.snapshot_part = registry.metering
    reserved = await context.runtime.meter.reserve(
        CallPlan(
            request_id=context.request_id,
            created_at=context.created_at,
            user_id=context.user_id,
            api_key_id=context.key.id if context.key else None,
            registry_version=registry.version,
            snapshot_part=registry.metering,
            request=chat,
            candidates=candidates,
            trace=context.trace,
        )
    )
    context.metering = reserved.metering
    return reserved.candidates


def _usage_cost(meter: Meter, snapshot_part: Any, at: datetime, model: ModelSnap, usage: Usage) -> str | None:
    return meter.usage_cost(snapshot_part, model, usage, at)


def check_allowed(key: KeySnap, chat: ApiRequest) -> None:
    """Raises ApiError 403 when `key` may not use the requested model or a fallback."""
    for name, param in [(chat.model, "model"), *((n, "fallback_models") for n in chat.fallback_models)]:
        if not key.allows(name):
            raise ApiError(403, f"This API key may not use {name!r}.", code="model_not_allowed", param=param)


class RecordedStream:
    """The client's side of a stream: relays upstream bytes and records the call exactly once.

    However the stream ends (finished, upstream failure, client gone, or never iterated at all), the
    upstream response is closed and the row recorded, with `client_disconnected` unless the relay
    reached its end. Consumers should `aclose()` it; cancellation inside `__anext__` closes it too,
    and so does the synchronous `close()` that Django's full stack calls on a streaming body when
    the client leaves while a chunk is being sent (from a worker thread: it schedules `aclose()`).
    """

    def __init__(self, context: CallContext, chat: ChatRequest, result: RouteResult):
        self.context, self.chat, self.result = context, chat, result
        self.relay = result.stream
        self._chunks = aiter(self.relay)
        self._loop = asyncio.get_running_loop()
        self._completed = False
        self._closed = False

    def __aiter__(self) -> "RecordedStream":
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            self._completed = True
            await self.aclose()
            raise
        except BaseException:
            await self.aclose()
            raise

    def close(self) -> None:
        if not self._closed and not self._loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.aclose(), self._loop)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._chunks.aclose()
            await self.relay.aclose()
        finally:
            if self.relay.failure is not None:
                self.context.trace.stream_broke(
                    content_chunks=self.relay.content_chunks, reason=self.relay.failure.reason
                )
            elif self._completed:
                call_cache_store_stream_soon(self.context, self.result.model, self.relay)
            # On the loop's next turn, as for a non-streamed answer: the end of the response goes first.
            record = partial(
                _record,
                self.context,
                self.chat,
                self.result,
                usage=self.relay.usage,
                completion_chars=self.relay.text_chars,
                first_content_at=self.relay.first_content_at,
                failed=self.relay.failure is not None,
                client_disconnected=not self._completed,
            )
            asyncio.get_running_loop().call_soon(record)


def _record(
    context: CallContext,
    chat: ApiRequest,
    result: RouteResult,
    *,
    usage: Usage | UsageProblem,
    completion_chars: int = 0,
    first_content_at: float | None = None,
    failed: bool = False,
    client_disconnected: bool = False,
) -> None:
    now = time.perf_counter()
    relay = result.stream
    context.record(
        context.outcome(
            **chat.recorded(),
            model=result.model,
            status="error" if failed else "ok",
            http_status=200,
            error_code="upstream_stream_failed" if failed else "",
            answer=result.body if relay is None else None,
            answer_text_parts=relay.text_parts if relay is not None else None,
            answer_tool_calls=relay.tool_calls() if relay is not None else [],
            usage=usage,
            completion_chars=completion_chars,
            latency_ms=round((now - context.started) * 1000),
            ttft_ms=round((first_content_at - context.started) * 1000) if first_content_at else None,
            client_disconnected=client_disconnected,
        ),
    )


def _record_failure(
    context: CallContext,
    chat: ApiRequest | None,
    error: ApiError,
    *,
    client_disconnected: bool = False,
    model: ModelSnap | None = None,
) -> None:
    status = "error" if error.status >= 500 or context.trace.tries or client_disconnected else "rejected"
    context.record(
        context.outcome(
            **(chat.recorded() if chat else {"requested": "", "kind": context.kind}),
            model=model,
            status=status,
            http_status=error.status,
            error_code=error.code or "",
            latency_ms=round((time.perf_counter() - context.started) * 1000),
            client_disconnected=client_disconnected,
        ),
    )
