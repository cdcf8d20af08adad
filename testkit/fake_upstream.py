"""A fake upstream with fault injection, as a pure ASGI application: OpenAI-compatible chat
completions and embeddings and, at ``/messages``, Anthropic's Messages API (its wire format is in
``testkit/fake_anthropic.py``).

A test double, never served by the product: it serves the test suite and the benchmarks (so it
must stay cheap per request and never be the bottleneck). The product's offline demo model is the
small, bounded routing/demo_provider.py instead. It imports nothing outside the standard library
(uvicorn only inside ``main()``).

Routes, relative to ``prefix`` (``scope["root_path"]`` is stripped too when the path carries it):

- ``POST {prefix}/chat/completions`` -- the chat endpoint described below.
- ``POST {prefix}/messages``         -- the Anthropic mode: the same directives and rules in the
  Messages API's format, its stream events and error shape (see ``testkit/fake_anthropic.py``).
- ``POST {prefix}/messages/count_tokens`` -- ``{"input_tokens": N}``, N by the prompt rule below.
- ``POST {prefix}/embeddings``       -- OpenAI's embeddings endpoint, with the same directives (those of
  streams and words aside); see "Embeddings" below.
- ``GET  {prefix}/models``           -- a one-model list (``echo``).
- ``GET  {prefix}/_fake/stats``      -- counters for tests, see ``FakeUpstream.stats()``.
- ``POST {prefix}/_fake/reset``      -- zeroes the counters.

Anything else gets a 404, a known path with the wrong method a 405; every error body has OpenAI's
shape ``{"error": {"message", "type", "param", "code"}}``.

Behaviour is chosen per request by the ``model`` field: ``name+directive+directive...``. The name is
free (``echo``, ``demo-echo``, ``gpt-4o``) and echoed back as ``model``. Directives:

=================  ===============================================================================
``status=NNN``     reply with HTTP NNN (400-599) and an OpenAI error body.
``retry-after=S``  add ``Retry-After: S`` to the response (whatever the response is).
``hang``           read the request, never answer; returns once the client disconnects.
``malformed``      200, ``application/json``, a body that is not valid JSON (stream or not).
``latency=MS``     wait MS ms before the response headers (non-streaming) or before the first
                   chunk (streaming); ``ttft=MS`` is a synonym.
``chunk-delay=MS`` streaming: wait MS ms between content chunks (default 0).
``words=N``        the answer has N words (default 8), one completion token per word.
``drop=N``         streaming: role chunk + N content chunks, then the connection is aborted without
                   the terminating chunk (the app raises ``UpstreamDropped``). Non-streaming: the
                   connection is closed without any response.
``empty-stream``   streaming: only ``data: [DONE]``.
``nousage``        no ``usage`` anywhere, even when ``stream_options.include_usage`` is set.
``cached=C``       ``usage.prompt_tokens_details.cached_tokens`` = C (default 0).
``dense``          bill a prompt token per UTF-8 byte of text instead of per word (the densest
                   tokenizer a budget's bound allows for).
``flaky=P``        P percent of requests (at random) fail in one of five ways, evenly: HTTP 500,
                   HTTP 503, HTTP 429 (no Retry-After), a malformed 200, or the connection closed
                   without a response; the others behave as the rest of the directives say.
=================  ===============================================================================

Directives of the Anthropic mode (the OpenAI mode accepts the others and ignores them; it honours
``cache-write``, as below, and ``tool-use``: ``tool_calls`` and ``finish_reason`` ``tool_calls``,
streamed as two argument pieces after the text):

=================  ===============================================================================
``cache-write=W``  ``usage.cache_creation_input_tokens`` = W (default 0); in the OpenAI mode,
                   ``usage.prompt_tokens_details.cache_write_tokens`` = W when W > 0 (OpenRouter's
                   field, part of ``prompt_tokens`` there).
``tool-use``       the answer calls the request's first tool (``stop_reason`` ``tool_use``).
``bad-usage=K``    every usage count is a hostile value of kind K: ``negative``, ``huge`` (2**40),
                   ``string``, ``float``, ``null`` or ``bool``.
``stream-error=N`` streaming: N text deltas, then an ``error`` event (``overloaded_error``) and the
                   end of the stream, as Anthropic does when it is overloaded mid-stream.
``odd-events``     streaming: events of unknown types (and a block of an unknown type) before the
                   last block's stop.
=================  ===============================================================================

Unknown or ill-formed directives get a 400 (``param: "model"``) so that typos in tests show up.
Precedence: ``hang``, then ``latency``, then ``status``, then ``malformed``, then ``drop``.

The answer is deterministic: ``Echo:`` followed by the words of the last user message, padded with
a fixed filler word list, cut to exactly N words, joined by single spaces. Usage rule:
``prompt_tokens`` = sum over messages of (whitespace-separated words of the message's text + 3),
or of (UTF-8 bytes of the text + 3) with ``dense``, where the text of a message is its string
``content`` or the ``text`` of its content parts;
``completion_tokens`` = N; ``total_tokens`` = their sum. ``id`` comes from a per-instance counter and
``created`` is a constant, so only ``id`` differs between two identical requests.

Embeddings: ``input`` is a string, a list of strings, a list of token ids or a list of token id
lists. Each input gets a deterministic vector of ``dimensions`` (default 8) floats in [-1, 1] derived
from the SHA-256 of its JSON text (``fake_embedding``); ``encoding_format: "base64"`` sends them as
little-endian float32, base64-encoded, as OpenAI does. Usage: ``prompt_tokens`` = the words of the
string inputs (UTF-8 bytes with ``dense``) plus the count of token ids, ``total_tokens`` the same;
``usage`` comes last in the body, as in OpenAI's answers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import random
import struct
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

from testkit import fake_anthropic

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CREATED = 1_700_000_000
MODEL_ID = "echo"
DEFAULT_WORDS = 8
FILLER_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
MALFORMED_BODY = b'{"id": "chatcmpl-broken", "choices": ['
_MAX_CACHED_PLANS = 4096

_JSON_HEADER = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE_EVENT = b"data: [DONE]\n\n"
_ROLE_CHOICES = '[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}'
_STOP_CHOICES = '[{"index":0,"delta":{},"finish_reason":"stop"}]}'
_CONTENT_OPEN = '[{"index":0,"delta":{"content":'
_CONTENT_CLOSE = '},"finish_reason":null}]}'

_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
_ERROR_CODES = {
    401: "invalid_api_key",
    403: "permission_denied",
    404: "model_not_found",
    429: "rate_limit_exceeded",
}


# One shared encoder: json.dumps(..., separators=...) would build a new JSONEncoder on every call.
_dumps = json.JSONEncoder(separators=(",", ":")).encode


class UpstreamDropped(Exception):
    """Raised inside the app on purpose (``drop=N``) so the server aborts the connection."""


class _BadDirective(ValueError):
    """A directive in the model string is unknown or has an invalid value."""


def error_body(message: str, type_: str, *, code: str | None = None, param: str | None = None) -> bytes:
    """Return an OpenAI-shaped error body as compact JSON bytes."""
    return _dumps({"error": {"message": message, "type": type_, "param": param, "code": code}}).encode()


def _injected_error(status: int) -> bytes:
    type_ = "server_error" if status >= 500 else _ERROR_TYPES.get(status, "invalid_request_error")
    code = "server_error" if status >= 500 else _ERROR_CODES.get(status)
    return error_body(f"Fake upstream: injected HTTP {status} error.", type_, code=code)


class _Plan:
    """What to do for one model string; parsed once and cached per instance."""

    __slots__ = (
        "status",
        "error",
        "headers",
        "hang",
        "malformed",
        "latency",
        "chunk_delay",
        "words",
        "drop",
        "empty_stream",
        "usage",
        "cached",
        "dense",
        "flaky",
        "cache_write",
        "tool_use",
        "bad_usage",
        "stream_error",
        "odd_events",
    )

    def __init__(self) -> None:
        self.status = 0
        self.error = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.hang = False
        self.malformed = False
        self.latency = 0.0  # seconds
        self.chunk_delay = 0.0  # seconds
        self.words = DEFAULT_WORDS
        self.drop = -1  # -1: no drop
        self.empty_stream = False
        self.usage = True
        self.cached = 0
        self.dense = False
        self.flaky = 0.0  # share of requests that fail at random
        self.cache_write = 0
        self.tool_use = False
        self.bad_usage = ""
        self.stream_error = -1  # -1: no error event
        self.odd_events = False


def _flaky_failure(rng: random.Random) -> _Plan:
    """One of `flaky`'s failures, chosen at random."""
    failure = _Plan()
    kind = rng.randrange(5)
    if kind < 3:
        failure.status = (500, 503, 429)[kind]
        failure.error = _injected_error(failure.status)
    elif kind == 3:
        failure.malformed = True
    else:
        failure.drop = 0
    return failure


def _non_negative_int(name: str, value: str) -> int:
    if not value.isdigit():
        raise _BadDirective(f"Directive {name!r} needs a non-negative integer, got {value!r}.")
    return int(value)


def _millis(name: str, value: str) -> float:
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms >= 0:  # also rejects NaN
        raise _BadDirective(f"Directive {name!r} needs a non-negative number of milliseconds, got {value!r}.")
    return ms / 1000.0


def _apply_flag(plan: _Plan, name: str) -> None:
    if name == "hang":
        plan.hang = True
    elif name == "malformed":
        plan.malformed = True
    elif name == "empty-stream":
        plan.empty_stream = True
    elif name == "nousage":
        plan.usage = False
    elif name == "dense":
        plan.dense = True
    elif name == "tool-use":
        plan.tool_use = True
    elif name == "odd-events":
        plan.odd_events = True
    else:
        raise _BadDirective(f"Unknown fake-upstream directive {name!r}.")


def _apply_setting(plan: _Plan, name: str, value: str) -> None:
    if name == "status":
        status = _non_negative_int(name, value)
        if not 400 <= status <= 599:
            raise _BadDirective(f"Directive 'status' must be between 400 and 599, got {value!r}.")
        plan.status, plan.error = status, _injected_error(status)
    elif name == "retry-after":
        _millis(name, value)  # validates: a non-negative number (of seconds here)
        plan.headers.append((b"retry-after", value.encode("ascii")))
    elif name in ("latency", "ttft"):
        plan.latency = _millis(name, value)
    elif name == "chunk-delay":
        plan.chunk_delay = _millis(name, value)
    elif name == "words":
        plan.words = _non_negative_int(name, value)
    elif name == "drop":
        plan.drop = _non_negative_int(name, value)
    elif name == "cached":
        plan.cached = _non_negative_int(name, value)
    elif name == "cache-write":
        plan.cache_write = _non_negative_int(name, value)
    elif name == "stream-error":
        plan.stream_error = _non_negative_int(name, value)
    elif name == "bad-usage":
        if value not in fake_anthropic.BAD_USAGE_VALUES:
            raise _BadDirective(
                f"Directive 'bad-usage' is one of {sorted(fake_anthropic.BAD_USAGE_VALUES)}, got {value!r}."
            )
        plan.bad_usage = value
    elif name == "flaky":
        percent = _non_negative_int(name, value)
        if percent > 100:
            raise _BadDirective(f"Directive 'flaky' is a percentage (0-100), got {value!r}.")
        plan.flaky = percent / 100
    else:
        raise _BadDirective(f"Unknown fake-upstream directive {name!r}.")


def parse_model(model: str) -> _Plan:
    """Parse ``name+directive+...`` into a plan; raise ``ValueError`` on a bad directive."""
    plan = _Plan()
    for part in model.split("+")[1:]:
        name, sep, value = part.partition("=")
        if sep:
            _apply_setting(plan, name.strip().lower(), value.strip())
        else:
            _apply_flag(plan, name.strip().lower())
    return plan


def _message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: list[Any], *, dense: bool = False) -> int:
    """Deterministic prompt size: per message, its whitespace-separated words (UTF-8 bytes if `dense`) + 3."""
    if dense:
        return sum(len(_message_text(message).encode("utf-8", "surrogatepass")) + 3 for message in messages)
    return sum(len(_message_text(message).split()) + 3 for message in messages)


def answer_words(messages: list[Any], n: int) -> list[str]:
    """Exactly ``n`` words: ``Echo:``, the last user message's words, then filler words."""
    if n <= 0:
        return []
    source: list[str] = []
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            source = _message_text(message).split()
            break
    words = ["Echo:", *source[: n - 1]]
    if len(words) < n:
        words.extend(itertools.islice(itertools.cycle(FILLER_WORDS), n - len(words)))
    return words


def _usage(messages: list[Any], plan: _Plan) -> dict[str, Any]:
    prompt = prompt_tokens(messages, dense=plan.dense) + plan.cache_write
    details = {"cached_tokens": plan.cached}
    if plan.cache_write:
        details["cache_write_tokens"] = plan.cache_write
    return {
        "prompt_tokens": prompt,
        "completion_tokens": plan.words,
        "total_tokens": prompt + plan.words,
        "prompt_tokens_details": details,
    }


def _headers_dict(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


async def _read_body(receive: Receive) -> bytes | None:
    """Return the whole request body, or None if the client disconnected first."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    parts = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        parts.append(message.get("body", b""))
    return b"".join(parts)


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    await _wait_disconnect(receive)
    gone.set()


async def _pause(seconds: float, gone: asyncio.Event) -> bool:
    """Wait ``seconds`` unless the client leaves first; return False if it has left."""
    if gone.is_set():
        return False
    if seconds <= 0:
        return True
    try:
        await asyncio.wait_for(gone.wait(), seconds)
    except TimeoutError:
        return True
    return False


async def send_json(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Send a complete JSON response with a Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [_JSON_HEADER, (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _abort_without_response(send: Send, receive: Receive) -> None:
    """Close the connection before any response byte is written.

    Under uvicorn, ``send`` is a bound method of the request cycle, which owns the transport; closing
    it and waiting for the disconnect makes uvicorn drop the request silently. Elsewhere (e.g. behind
    a wrapping ``send``) the best portable approximation is headers promising a body, then an abort.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "close"):
        transport.close()
        await _wait_disconnect(receive)
        return
    await send({"type": "http.response.start", "status": 200, "headers": [_JSON_HEADER, (b"content-length", b"1")]})
    raise UpstreamDropped("drop: connection aborted before the response")


class _Stats:
    __slots__ = (
        "requests",
        "active_streams",
        "completed_streams",
        "cancelled_streams",
        "dropped_streams",
        "hanging",
        "flaky_failures",
        "last_request",
        "last_headers",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.active_streams = 0
        self.completed_streams = 0
        self.cancelled_streams = 0
        self.dropped_streams = 0
        self.hanging = 0
        self.flaky_failures = 0
        self.last_request: Any = None
        self.last_headers: dict[str, str] | None = None

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class FakeUpstream:
    """ASGI app faking an OpenAI-compatible provider; see the module docstring for the contract.

    Statistics are per instance. ``active_streams``/``hanging`` are gauges; a request counts in
    ``cancelled_streams`` when its client disconnects mid-stream (including before the first chunk)
    or during ``hang``; ``dropped_streams`` counts ``drop=N`` aborts of streams.
    """

    def __init__(self, *, prefix: str = "") -> None:
        self.prefix = prefix.rstrip("/")
        self._stats = _Stats()
        self._ids = itertools.count(1)
        self._plans: dict[str, _Plan] = {}
        self._rng = random.Random()
        self._routes: dict[str, tuple[str, Callable[[Scope, Receive, Send], Awaitable[None]]]] = {
            f"{self.prefix}/chat/completions": ("POST", self._chat),
            f"{self.prefix}/messages": ("POST", self._messages),
            f"{self.prefix}/messages/count_tokens": ("POST", self._count_tokens),
            f"{self.prefix}/embeddings": ("POST", self._embeddings),
            f"{self.prefix}/models": ("GET", self._models),
            f"{self.prefix}/_fake/stats": ("GET", self._stats_endpoint),
            f"{self.prefix}/_fake/reset": ("POST", self._reset_endpoint),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    def stats(self) -> dict[str, Any]:
        """Current counters (the JSON served at ``/_fake/stats``)."""
        return self._stats.snapshot()

    def reset(self) -> None:
        """Zero the counters and forget the last request."""
        self._stats = _Stats()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        route = self._routes.get(path)
        root_path = scope.get("root_path", "")
        if route is None and root_path and path.startswith(root_path):
            path = path[len(root_path) :]
            route = self._routes.get(path)
        method = scope["method"]
        if route is None:
            body = error_body(f"Invalid URL ({method} {path})", "invalid_request_error", code="unknown_url")
            await send_json(send, 404, body)
        elif route[0] != method:
            body = error_body(f"Method {method} not allowed on {path}", "invalid_request_error")
            await send_json(send, 405, body)
        else:
            await route[1](scope, receive, send)

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, _MODELS_BODY)

    async def _stats_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, _dumps(self.stats()).encode())

    async def _reset_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.reset()
        await send_json(send, 200, b'{"ok":true}')

    def _plan(self, model: str) -> _Plan:
        plan = self._plans.get(model)
        if plan is None:
            plan = parse_model(model)
            if len(self._plans) >= _MAX_CACHED_PLANS:
                self._plans.clear()
            self._plans[model] = plan
        return plan

    async def _accept(
        self, scope: Scope, receive: Receive, send: Send, check: Callable[[bytes, dict], tuple[Any, tuple | None]],
        bad_directive: Callable[[str], bytes], *, flaky: bool = True,
    ) -> tuple[dict[str, Any], _Plan] | None:  # fmt: skip
        """What every endpoint does first: count the request, read and `check` its body (a problem is
        answered as (status, body)), parse its directives (`bad_directive` words the 400), and pick a
        flaky failure. None when the request was answered already (or the client left)."""
        stats = self._stats
        stats.requests += 1
        stats.last_headers = _headers_dict(scope)
        raw = await _read_body(receive)
        if raw is None:
            return None
        request, problem = check(raw, stats.last_headers)
        if problem:
            await send_json(send, *problem)
            return None
        stats.last_request = request
        try:
            plan = self._plan(request["model"])
        except _BadDirective as exc:
            await send_json(send, 400, bad_directive(str(exc)))
            return None
        if flaky and plan.flaky and self._rng.random() < plan.flaky:
            stats.flaky_failures += 1
            plan = _flaky_failure(self._rng)
        return request, plan

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted = await self._accept(scope, receive, send, _openai_check(_parse_request), _openai_bad_directive)
        if accepted is None:
            return
        request, plan = accepted
        if plan.hang:
            await self._hang(receive)
        elif request.get("stream") is True and not (plan.status or plan.malformed):
            await self._stream(request, plan, receive, send, self._send_stream)
        else:
            await self._complete(plan, receive, send, plan.error, lambda: self._completion_body(request, plan))

    async def _messages(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The Anthropic mode: ``POST {prefix}/messages``."""
        accepted = await self._accept(scope, receive, send, _anthropic_check, _anthropic_bad_directive)
        if accepted is None:
            return
        request, plan = accepted
        if plan.hang:
            await self._hang(receive)
        elif request.get("stream") is True and not (plan.status or plan.malformed):
            await self._stream(request, plan, receive, send, self._send_anthropic_stream)
        else:
            error = fake_anthropic.error_body(plan.status, f"Fake upstream: injected HTTP {plan.status} error.")
            await self._complete(plan, receive, send, error, lambda: self._message_body(request, plan))

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The Anthropic mode's token counter: ``{"input_tokens": N}`` by the prompt rule (``dense`` and
        ``status`` honoured; the body needs no ``max_tokens``)."""
        check = partial(_anthropic_check, max_tokens_default=1)
        accepted = await self._accept(scope, receive, send, check, _anthropic_bad_directive, flaky=False)
        if accepted is None:
            return
        request, plan = accepted
        if plan.status:
            await send_json(send, plan.status, fake_anthropic.error_body(plan.status, "Fake upstream: injected error."))
            return
        tokens = prompt_tokens(fake_anthropic.text_messages(request), dense=plan.dense)
        await send_json(send, 200, _dumps({"input_tokens": tokens}).encode())

    def _anthropic_answer(
        self, request: dict[str, Any], plan: _Plan
    ) -> tuple[list[str], dict | None, str, dict | None]:
        """The answer's words, tool call, stop reason and usage (None with ``nousage``)."""
        texts = fake_anthropic.text_messages(request)
        words = answer_words(texts, min(plan.words, request["max_tokens"]))
        tool = (
            fake_anthropic.tool_call(request, f"toolu_fake_{next(self._ids)}", " ".join(words))
            if plan.tool_use
            else None
        )
        reason = fake_anthropic.stop_reason(cut=plan.words > request["max_tokens"], tool=tool)
        usage = None
        if plan.usage:
            usage = fake_anthropic.usage(
                prompt_tokens(texts, dense=plan.dense),
                len(words),
                cache_write=plan.cache_write,
                cache_read=plan.cached,
                bad=plan.bad_usage,
            )
        return words, tool, reason, usage

    def _message_body(self, request: dict[str, Any], plan: _Plan) -> bytes:
        words, tool, reason, usage = self._anthropic_answer(request, plan)
        return fake_anthropic.message_body(
            message_id=f"msg_fake_{next(self._ids)}",
            model=request["model"],
            text=" ".join(words),
            tool=tool,
            reason=reason,
            usage=usage,
        )

    async def _send_anthropic_stream(
        self, request: dict[str, Any], plan: _Plan, gone: asyncio.Event, send: Send
    ) -> bool:
        """Send the Messages API event stream; True if it ended normally (an ``error`` event included)."""
        if not await _pause(plan.latency, gone):
            return False
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *plan.headers]})
        if plan.empty_stream:
            await send({"type": "http.response.body", "body": b""})
            return True
        words, tool, reason, usage = self._anthropic_answer(request, plan)
        start_usage = {**usage, "output_tokens": 1} if usage is not None and not plan.bad_usage else usage
        head = fake_anthropic.stream_head(
            message_id=f"msg_fake_{next(self._ids)}", model=request["model"], usage=start_usage
        )
        await send({"type": "http.response.body", "body": head, "more_body": True})
        overloaded = fake_anthropic.error_event(529, "Overloaded")
        for index, word in enumerate(words):
            if index == plan.drop:
                raise UpstreamDropped(f"drop={plan.drop}: aborting the stream")
            if index == plan.stream_error:
                await send({"type": "http.response.body", "body": overloaded})
                return True
            if index and plan.chunk_delay and not await _pause(plan.chunk_delay, gone):
                return False
            piece = " " + word if index else word
            await send({"type": "http.response.body", "body": fake_anthropic.text_delta(piece), "more_body": True})
        if plan.drop >= 0:
            raise UpstreamDropped(f"drop={plan.drop}: aborting the stream")
        if plan.stream_error >= 0:
            await send({"type": "http.response.body", "body": overloaded})
            return True
        if gone.is_set():
            return False
        tail = fake_anthropic.stream_tail(tool=tool, reason=reason, usage=usage, odd=plan.odd_events)
        await send({"type": "http.response.body", "body": tail})
        return True

    async def _embeddings(self, scope: Scope, receive: Receive, send: Send) -> None:
        check = _openai_check(_parse_embeddings_request)
        accepted = await self._accept(scope, receive, send, check, _openai_bad_directive)
        if accepted is None:
            return
        request, plan = accepted
        if plan.hang:
            await self._hang(receive)
        else:
            await self._complete(plan, receive, send, plan.error, lambda: _embeddings_body(request, plan))

    async def _hang(self, receive: Receive) -> None:
        stats = self._stats
        stats.hanging += 1
        try:
            await _wait_disconnect(receive)
        finally:
            stats.hanging -= 1
        stats.cancelled_streams += 1

    async def _complete(
        self, plan: _Plan, receive: Receive, send: Send, error: bytes, answer: Callable[[], bytes]
    ) -> None:
        if plan.latency:
            await asyncio.sleep(plan.latency)
        if plan.status:
            await send_json(send, plan.status, error, plan.headers)
        elif plan.malformed:
            await send_json(send, 200, MALFORMED_BODY, plan.headers)
        elif plan.drop >= 0:
            await _abort_without_response(send, receive)
        else:
            await send_json(send, 200, answer(), plan.headers)

    def _completion_body(self, request: dict[str, Any], plan: _Plan) -> bytes:
        messages = request["messages"]
        completion: dict[str, Any] = {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": CREATED,
            "model": request["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(answer_words(messages, plan.words))},
                    "finish_reason": "stop",
                }
            ],
        }
        tool = self._openai_tool_call(request, plan, completion["choices"][0]["message"]["content"])
        if tool:
            completion["choices"][0]["message"]["tool_calls"] = [tool]
            completion["choices"][0]["finish_reason"] = "tool_calls"
        if plan.usage:
            completion["usage"] = _usage(messages, plan)
        return _dumps(completion).encode()

    def _openai_tool_call(self, request: dict[str, Any], plan: _Plan, text: str) -> dict[str, Any] | None:
        """With ``tool-use``: a call of the request's first tool (OpenAI's shape), or None."""
        tools = request.get("tools")
        if not plan.tool_use or not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
            return None
        function = tools[0].get("function") or {}
        name = function.get("name") if isinstance(function.get("name"), str) else "tool"
        arguments = _dumps({"echo": text})
        return {
            "id": f"call_fake_{next(self._ids)}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }

    async def _stream(
        self,
        request: dict[str, Any],
        plan: _Plan,
        receive: Receive,
        send: Send,
        sender: Callable[[dict[str, Any], _Plan, asyncio.Event, Send], Awaitable[bool]],
    ) -> None:
        stats = self._stats
        stats.active_streams += 1
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        finished = False
        try:
            finished = await sender(request, plan, gone, send)
        finally:
            watcher.cancel()
            stats.active_streams -= 1
            if finished:
                stats.completed_streams += 1
            elif gone.is_set():
                stats.cancelled_streams += 1
            else:
                stats.dropped_streams += 1

    async def _send_stream(self, request: dict[str, Any], plan: _Plan, gone: asyncio.Event, send: Send) -> bool:
        """Send the SSE stream; return True if it ended normally, False if the client left.

        Raises ``UpstreamDropped`` for ``drop=N`` once the body has started.
        """
        if not await _pause(plan.latency, gone):
            return False
        await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *plan.headers]})
        if plan.empty_stream:
            await send({"type": "http.response.body", "body": _DONE_EVENT})
            return True
        head = (
            f'data: {{"id":"chatcmpl-fake-{next(self._ids)}","object":"chat.completion.chunk",'
            f'"created":{CREATED},"model":{_dumps(request["model"])},"choices":'
        )
        await _send_event(send, head + _ROLE_CHOICES)
        content_head, delay = head + _CONTENT_OPEN, plan.chunk_delay
        for index, word in enumerate(answer_words(request["messages"], plan.words)):
            if index == plan.drop:
                raise UpstreamDropped(f"drop={plan.drop}: aborting the stream")
            # Without a delay nothing here yields to the loop, so disconnects are checked after the loop.
            if index and delay and not await _pause(delay, gone):
                return False
            piece = " " + word if index else word
            await _send_event(send, content_head + _dumps(piece) + _CONTENT_CLOSE)
        if plan.drop >= 0:
            raise UpstreamDropped(f"drop={plan.drop}: aborting the stream")
        if gone.is_set():
            return False
        tail = [head + _STOP_CHOICES]
        tool = self._openai_tool_call(request, plan, " ".join(answer_words(request["messages"], plan.words)))
        if tool:
            arguments, function = tool["function"]["arguments"], tool["function"]
            half = len(arguments) // 2
            first = {
                "index": 0,
                "id": tool["id"],
                "type": "function",
                "function": {**function, "arguments": arguments[:half]},
            }
            rest = {"index": 0, "function": {"arguments": arguments[half:]}}
            tail = [
                head + _dumps([{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]) + "}"
                for call in (first, rest)
            ]
            tail.append(head + '[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}')
        options = request.get("stream_options")
        if plan.usage and isinstance(options, dict) and options.get("include_usage") is True:
            tail.append(head + '[],"usage":' + _dumps(_usage(request["messages"], plan)) + "}")
        body = "".join(f"{event}\n\n" for event in tail).encode() + _DONE_EVENT
        await send({"type": "http.response.body", "body": body})
        return True


async def _send_event(send: Send, event: str) -> None:
    await send({"type": "http.response.body", "body": (event + "\n\n").encode(), "more_body": True})


def _openai_check(parse: Callable[[bytes], tuple[dict[str, Any], bytes]]) -> Callable:
    """An OpenAI-mode body check for `_accept`: `parse` gives (request, b"") or ({}, a 400's body)."""

    def check(raw: bytes, headers: dict) -> tuple[dict[str, Any], tuple | None]:
        request, problem = parse(raw)
        return request, ((400, problem) if problem else None)

    return check


def _openai_bad_directive(message: str) -> bytes:
    return error_body(message, "invalid_request_error", param="model")


def _anthropic_check(raw: bytes, headers: dict, *, max_tokens_default: int | None = None) -> tuple[Any, tuple | None]:
    try:
        request = json.loads(raw)
    except ValueError:
        request = None
    if max_tokens_default is not None and isinstance(request, dict):
        request.setdefault("max_tokens", max_tokens_default)
    return request, fake_anthropic.request_problem(request, headers)


def _anthropic_bad_directive(message: str) -> bytes:
    return fake_anthropic.error_body(400, message)


def _parse_request(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """Return (request, b"") or ({}, error body) for a chat request body."""
    try:
        request = json.loads(raw)
    except ValueError:
        return {}, error_body(
            "We could not parse the JSON body of your request. (Fake upstream expects valid JSON.)",
            "invalid_request_error",
        )
    if not isinstance(request, dict):
        return {}, error_body("The request body must be a JSON object.", "invalid_request_error")
    if not isinstance(request.get("messages"), list):
        return {}, error_body(
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            code="missing_required_parameter",
            param="messages",
        )
    if not isinstance(request.get("model"), str) or not request["model"]:
        return {}, error_body(
            "Missing required parameter: 'model'.",
            "invalid_request_error",
            code="missing_required_parameter",
            param="model",
        )
    return request, b""


def _parse_embeddings_request(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """Return (request, b"") or ({}, error body) for an embeddings request body."""
    try:
        request = json.loads(raw)
    except ValueError:
        return {}, error_body("We could not parse the JSON body of your request.", "invalid_request_error")
    if not isinstance(request, dict) or not isinstance(request.get("model"), str) or not request["model"]:
        return {}, error_body("Missing required parameter: 'model'.", "invalid_request_error", param="model")
    inputs = request.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        return {}, error_body("Invalid 'input'.", "invalid_request_error", param="input")
    dimensions = request.get("dimensions", 8)
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 4096:
        return {}, error_body("Invalid 'dimensions'.", "invalid_request_error", param="dimensions")
    request["_inputs"], request["_dimensions"] = inputs, dimensions
    return request, b""


# The vector of an input repeats a block of this many values (from its digest), so that a batch of large
# vectors costs the fake upstream little: the benchmarks and the tests of large answers need it cheap.
_BLOCK = 256
_VALUE_TEXT = [repr(round(byte / 127.5 - 1, 6)) for byte in range(256)]


def _block(item: Any) -> list[int]:
    digest = hashlib.sha256(_dumps(item).encode()).digest()
    return [digest[i % 32] ^ (i * 37 & 0xFF) for i in range(_BLOCK)]


def fake_embedding(item: Any, dimensions: int) -> list[float]:
    """The deterministic vector of one input (a string or a token id list): floats in [-1, 1]."""
    block = [float(_VALUE_TEXT[byte]) for byte in _block(item)]
    return (block * (dimensions // _BLOCK + 1))[:dimensions]


def embedding_tokens(item: Any, *, dense: bool = False) -> int:
    """Tokens of one input: its words (UTF-8 bytes if `dense`), or its token ids."""
    if isinstance(item, str):
        return len(item.encode("utf-8", "surrogatepass")) if dense else len(item.split())
    return len(item) if isinstance(item, list) else 0


def _embeddings_body(request: dict[str, Any], plan: _Plan) -> bytes:
    """The answer, written as text directly (a batch of vectors through the JSON encoder takes seconds)."""
    as_base64 = request.get("encoding_format") == "base64"
    dimensions = request["_dimensions"]
    items = []
    for index, item in enumerate(request["_inputs"]):
        if as_base64:
            vector = fake_embedding(item, dimensions)
            text = '"' + base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() + '"'
        else:
            values = [_VALUE_TEXT[byte] for byte in _block(item)]
            text = "[" + ",".join((values * (dimensions // _BLOCK + 1))[:dimensions]) + "]"
        items.append(f'{{"object":"embedding","index":{index},"embedding":{text}}}')
    answer = f'{{"object":"list","data":[{",".join(items)}],"model":{_dumps(request["model"])}'
    if plan.usage:
        tokens = sum(embedding_tokens(item, dense=plan.dense) for item in request["_inputs"])
        answer += f',"usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}'
    return (answer + "}").encode()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


_MODELS_BODY = _dumps(
    {
        "object": "list",
        "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "routerweb-fake"}],
    }
).encode()

app = FakeUpstream()


def main(argv: list[str] | None = None) -> None:
    """Serve ``FakeUpstream`` with uvicorn: ``python -m testkit.fake_upstream --host H --port P``."""
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible upstream with fault injection.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--prefix", default="", help="path prefix, e.g. /v1")
    args = parser.parse_args(argv)

    import uvicorn  # only needed to serve standalone; keeps the module stdlib-only on import

    uvicorn.run(
        FakeUpstream(prefix=args.prefix) if args.prefix else app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
