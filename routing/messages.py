"""/v1/messages: Anthropic's Messages API for clients, on the gateway's shared call path.

`messages_run` is `gateway.call_run` with the `MESSAGES` endpoint: the same candidates, circuit
breakers, rate limits, budgets, fallback and call rows as /v1/chat/completions (the rate limits and
budgets see the request's chat completions translation, `MessagesRequest`). What differs is the try
of each candidate:

- a candidate whose provider speaks the Messages API (`api_format` "anthropic") gets the client's
  body as it was sent, with the model name replaced, and its answer or events go back as they are;
- any other candidate gets the chat completions translation through its own adapter, and its
  answer (or chunks) is translated back into a message (or Anthropic's events).

Fallback crosses kinds: one request may try an Anthropic candidate, then an OpenAI-compatible one.
The response cache does not apply to /v1/messages. Errors are written in Anthropic's shape.
"""

import logging
import re
import secrets
from functools import partial

import orjson

from .call_context import CallContext, GatewayResponse
from .errors import ApiError, anthropic_error_answer, error_headers
from .gateway import Caller, Endpoint, call_run, check_allowed, registry_checked_get
from .messages_format import input_tokens_estimate, message_from_completion
from .messages_schema import MessagesRequest, messages_request_parse
from .messages_stream import ChunkTranslator, NativeMessagesRelay, TranslatedStream
from .providers.base import answer_object
from .providers.registry import adapter_for
from .router import CandidateTry, RouteResult, UsageCost, candidates_for, chat_attempt, skip_reason
from .runtime import Runtime
from .secrets import provider_api_key
from .snapshot import ModelSnap
from .upstream import UpstreamFailure, upstream_read, upstream_send
from .usage import TOKENS_MAX, anthropic_usage_parse

logger = logging.getLogger("routerweb.gateway")

ANTHROPIC_FORMAT = "anthropic"  # the `Provider.api_format` of upstreams that speak the Messages API
# `anthropic-beta`: comma-separated feature names (Claude Code sends several); passed to Anthropic upstreams.
BETA_HEADER = re.compile(r"[A-Za-z0-9_.-]+(?:\s*,\s*[A-Za-z0-9_.-]+)*")
BETA_HEADER_MAX = 1000


def messages_native_headers(anthropic_beta: str) -> list[tuple[bytes, bytes]]:
    """The client's `anthropic-beta` header for Anthropic candidates (a beta field in the body needs
    it there), or ApiError 400 when it is not a list of feature names."""
    if not anthropic_beta:
        return []
    if len(anthropic_beta) > BETA_HEADER_MAX or not BETA_HEADER.fullmatch(anthropic_beta.strip()):
        raise ApiError(
            400, "Invalid 'anthropic-beta' header: a comma-separated list of beta names.", code="invalid_header"
        )
    return [(b"anthropic-beta", anthropic_beta.strip().encode())]


def _messages_attempt(chat: MessagesRequest, context: CallContext, usage_cost: UsageCost) -> CandidateTry:
    message_id = "msg_" + context.request_id.removeprefix("req_")
    return partial(_messages_try, request=chat, message_id=message_id, native_headers=context.native_headers)


MESSAGES = Endpoint(
    parse=messages_request_parse, attempt=_messages_attempt, error_answer=anthropic_error_answer, cacheable=False
)


async def messages_run(*, runtime: Runtime, raw_body: bytes, caller: Caller) -> GatewayResponse:
    """Answer one Messages API request for whoever `caller(registry)` says is calling (see `call_run`)."""
    result = await call_run(MESSAGES, runtime=runtime, raw_body=raw_body, caller=caller)
    if "X-Request-Id" in result.headers:  # Anthropic's clients read the request's id from `request-id`
        result.headers["request-id"] = result.headers["X-Request-Id"]
    return result


async def _messages_try(
    model: ModelSnap, *, request: MessagesRequest, message_id: str, native_headers: list[tuple[bytes, bytes]]
) -> RouteResult:
    if model.provider.api_format == ANTHROPIC_FORMAT:
        return await _native_try(model, request, native_headers)
    result = await chat_attempt(model, request=request.body, stream=request.stream, client_wants_usage=True)
    if result.stream is not None:
        translator = ChunkTranslator(message_id=message_id, model=request.model)
        return RouteResult(model, usage=result.usage, stream=TranslatedStream(result.stream, translator))
    completion = orjson.loads(result.body)  # the adapter checked it is a JSON object
    message = message_from_completion(
        completion,
        message_id=message_id,
        model=completion["model"] if isinstance(completion.get("model"), str) else request.model,
        usage=result.usage,
    )
    return RouteResult(model, body=orjson.dumps(message), usage=result.usage)


def native_body(request: MessagesRequest, model: ModelSnap) -> bytes:
    """The client's Messages body for an Anthropic candidate: as sent, for the candidate's model."""
    return orjson.dumps({**request.native, "model": model.upstream_model})


async def _native_try(
    model: ModelSnap, request: MessagesRequest, native_headers: list[tuple[bytes, bytes]]
) -> RouteResult:
    provider = model.provider
    adapter = adapter_for(provider.api_format)
    api_key = provider_api_key(provider.api_key_env)
    body = native_body(request, model)
    response = await upstream_send(
        provider, adapter, body=body, api_key=api_key, stream=request.stream, extra_headers=native_headers
    )
    if request.stream:
        relay = NativeMessagesRelay(response, provider, client_wants_usage=True)
        try:
            await relay.prime()
        except BaseException:
            await relay.aclose()
            raise
        return RouteResult(model, stream=relay)
    raw = await upstream_read(response, provider)
    message = answer_object(raw, list_field="content", what="a message")
    if message.get("type") != "message":
        raise UpstreamFailure("upstream answer is not a message", retryable=True)
    return RouteResult(model, body=raw, usage=anthropic_usage_parse(message.get("usage")))


# What Anthropic's count_tokens endpoint accepts of a Messages body.
COUNT_FIELDS = ("messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


async def messages_count_tokens(*, runtime: Runtime, raw_body: bytes, caller: Caller) -> GatewayResponse:
    """POST /v1/messages/count_tokens: `{"input_tokens": N}` for a Messages body (no `max_tokens`
    needed). The first candidate of the model or route that speaks the Messages API counts it (its own
    count_tokens endpoint); without one, or when it fails, N is routerweb's estimate
    (`input_tokens_estimate`). Free: no rate limit, budget or call row."""
    request_id = "req_" + secrets.token_hex(16)
    try:
        registry = await registry_checked_get(runtime)
        try:
            context = caller(registry)
        except ApiError:  # perhaps a key created a moment ago by another process
            registry = await registry_checked_get(runtime, after_miss=True)
            context = caller(registry)
        request = messages_request_parse(raw_body, max_tokens_required=False)
        if context.key is not None:
            check_allowed(context.key, request)
        candidates = candidates_for(registry, request.model, [])
    except ApiError as error:
        status, body = anthropic_error_answer(error)
        return GatewayResponse(status, {"request-id": request_id} | error_headers(error), body=body)
    tokens = await _upstream_count(candidates, request, context.native_headers)
    if tokens is None:
        tokens = input_tokens_estimate(request.body)
    return GatewayResponse(200, {"request-id": request_id}, body=orjson.dumps({"input_tokens": tokens}))


async def _upstream_count(
    candidates: list[ModelSnap], request: MessagesRequest, native_headers: list[tuple[bytes, bytes]]
) -> int | None:
    """The count of the first usable Anthropic candidate that gives one, or None."""
    for model in candidates:
        if model.provider.api_format != ANTHROPIC_FORMAT or skip_reason(model) is not None:
            continue
        provider = model.provider
        body = {name: request.native[name] for name in COUNT_FIELDS if name in request.native}
        try:
            response = await upstream_send(
                provider,
                adapter_for(provider.api_format),
                body=orjson.dumps({"model": model.upstream_model, **body}),
                api_key=provider_api_key(provider.api_key_env),
                stream=False,
                url_suffix="/count_tokens",
                extra_headers=native_headers,
            )
            answer = orjson.loads(await upstream_read(response, provider))
        except (UpstreamFailure, orjson.JSONDecodeError) as failure:
            logger.info("count_tokens: %s failed (%s); trying the next candidate", model.name, failure)
            continue
        tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
        if type(tokens) is int and 0 <= tokens <= TOKENS_MAX:
            return tokens
    return None
